#pragma once
// Group commit: every mutation of the master's metadata is one synced LevelDB write
// before its reply, but callers that arrive while a write is syncing share the next one.
// The paper's "flush the log before replying", at one fsync per batch rather than per call.

#include <kj/async.h>
#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "metrics.h"

namespace cairn {

class GroupCommitter {
 public:
  // `db` must outlive this object. The writer thread starts at once.
  explicit GroupCommitter(leveldb::DB& db);
  ~GroupCommitter();  // writes what is queued, then joins

  // Queues `batch`; the promise (on the caller's event loop) resolves once the batch is
  // durable. After a failed write every later submit fails too: the store latches the
  // error, as LevelDB itself does, because what the master believes is no longer on disk.
  kj::Promise<void> submit(leveldb::WriteBatch batch);

  // Synced LevelDB writes made so far (each may carry many submitted batches).
  uint64_t writes() const { return writeCount.load(); }
  // Records each write's batch size and sync time into `metrics` from now on.
  void setMetrics(Metrics* metrics);

 private:
  struct Pending {
    leveldb::WriteBatch batch;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;
  };
  void run();

  leveldb::DB& db;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Pending> queue;
  bool stopping = false;
  std::string latchedError;
  std::atomic<uint64_t> writeCount{0};
  std::atomic<Metrics*> metrics{nullptr};
  std::thread writer;
};

}  // namespace cairn
