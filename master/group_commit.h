#pragma once
// Group commit: every mutation of the master's metadata is one LevelDB write, and callers
// that arrive while a write is under way share the next one. A write is acknowledged as
// soon as it is in LevelDB's log (in the kernel: it survives the master's process dying),
// or once synced, as each caller asks; the log of an unsynced write is synced within
// `syncDelay` (10 ms), as ext4's journal commits unsynced operations. A barrier waits for
// everything submitted before it to be synced. The paper's "flush the log before
// replying", at one fsync per batch or per 10 ms rather than per call.
//
// An unsynced write that nothing is ahead of, and that LevelDB can take without waiting,
// is made at once on the caller's thread: handing a single small write to the writer
// thread and back costs two thread wake-ups, more than the write itself (an eighth of the
// CPU of a create and an unlink through a mount, on a two-core host).

#include <kj/async.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/write_batch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "metrics.h"

namespace cairn {

// When a submitted write is acknowledged.
enum class Durability {
  WRITTEN,  // in LevelDB's log, synced within syncDelay
  SYNCED,   // on disk
};

class GroupCommitter {
 public:
  // `db` must outlive this object. The writer thread starts at once. `options`, those `db`
  // was opened with, and with a block cache of their own, let unsynced writes be made on the
  // caller's thread when LevelDB has room for them; without them every write is the
  // writer thread's.
  explicit GroupCommitter(leveldb::DB& db,
                          std::chrono::milliseconds syncDelay = std::chrono::milliseconds(10),
                          const leveldb::Options* options = nullptr);
  ~GroupCommitter();  // stop()

  // Writes and syncs what is queued, then ends the writer thread: no write to LevelDB is
  // under way from its return, and later submits fail. Idempotent.
  void stop();

  // Queues `batch`, or writes it at once (see above); the promise (on the caller's event
  // loop) resolves once the batch is written or synced, as `durability` asks, and after
  // every earlier submit's: a write is made at once only when no earlier answer is still
  // on its way from the writer thread or untaken (a caller may act on an earlier one's,
  // e.g. a reserve of numbers known to be on disk). Call it from one thread. After
  // a failed write every later submit fails too: the store latches the error, as LevelDB
  // itself does, because what the master believes is no longer on disk.
  kj::Promise<void> submit(leveldb::WriteBatch batch, Durability durability);
  // Syncs now: resolves once everything submitted before it is synced (at once if it is
  // already).
  kj::Promise<void> barrier();
  // Resolves once everything submitted before it is synced, by whatever sync comes next
  // (within syncDelay): forces none.
  kj::Promise<void> whenSynced();

  // LevelDB writes made so far (each may carry many submitted batches), and how many of
  // them were synced.
  uint64_t writes() const { return writeCount.load(); }
  // How many of them were made on the caller's thread.
  uint64_t inlineWrites() const { return inlineCount.load(); }
  uint64_t syncs() const { return syncCount.load(); }
  // Records each write's batch size and each sync's time into `metrics` from now on.
  void setMetrics(Metrics* metrics);
  // Called once, when a write or sync first fails, before its callers are answered: on the
  // writer thread, or within submit() on the caller's for a write made there. The master
  // stops there (master_main.cc), so that no client is told of a failure by a master about
  // to go (they retry, on a standby that took over).
  void setFailureHandler(std::function<void(const std::string&)> handler);

 private:
  struct Pending {
    leveldb::WriteBatch batch;
    Durability durability;
    uint64_t seq;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;
  };
  struct Waiter {
    uint64_t seq;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;
  };
  void run();
  // Whether LevelDB would take a write now without a sleep, a wait for a compaction or a
  // new log: level 0 below its slowdown trigger, the memtables under 3/4 of the buffer.
  bool roomToWriteNow();
  // Writes `batch` on this thread; called with `lock` held (released during the write)
  // and writingInline set, when nothing is queued or being written.
  kj::Promise<void> writeInline(std::unique_lock<std::mutex>& lock, leveldb::WriteBatch& batch);
  // After a write of everything up to `last` (and a sync of it, if `sync`) ended with `s`:
  // moves the counters and hands back the whenSynced() callers it answers. A failure
  // latches. Called with the lock held.
  std::vector<Waiter> recordWrite(uint64_t last, bool sync, const leveldb::Status& s,
                                  std::chrono::steady_clock::time_point started);
  // Logs a failed write and tells the failure handler, once.
  void reportFailure(const leveldb::Status& s);

  leveldb::DB& db;
  const std::chrono::milliseconds syncDelay;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Pending> queue;
  std::deque<Waiter> waiters;  // whenSynced(), in order of seq
  bool stopping = false;
  // The writer thread has a write or sync under way; a write is under way on the
  // caller's thread, and the writer thread waits for its end.
  bool writerBusy = false, writingInline = false, writerWaitsForInline = false;
  const leveldb::Options* options;
  std::string latchedError;
  std::function<void(const std::string&)> onFailure;
  // Submissions are numbered; everything up to `written` is in the log, up to `synced` on
  // disk. `dirtySince`: when the oldest unsynced write was made.
  uint64_t submitted = 0, written = 0, synced = 0;
  std::chrono::steady_clock::time_point dirtySince;
  std::atomic<uint64_t> writeCount{0}, syncCount{0}, inlineCount{0};
  std::atomic<Metrics*> metrics{nullptr};
  // Queued writes whose answers the caller has not taken yet (its thread's alone; shared
  // with those answers, which may outlive this object).
  std::shared_ptr<uint64_t> unanswered = std::make_shared<uint64_t>(0);
  std::thread writer;
};

// An Env whose writable files sync on close what was written to them since their last
// sync. LevelDB closes a log file without syncing it when it moves to a new one; a sync of
// the new log would then leave unsynced writes behind in the old one. With this, a synced
// write means that every earlier write is synced too.
class SyncOnCloseEnv : public leveldb::EnvWrapper {
 public:
  explicit SyncOnCloseEnv(leveldb::Env* base) : EnvWrapper(base) {}
  leveldb::Status NewWritableFile(const std::string& name, leveldb::WritableFile** out) override;
  leveldb::Status NewAppendableFile(const std::string& name, leveldb::WritableFile** out) override;

 private:
  // The file just opened into `*out`, wrapped.
  static leveldb::Status wrap(leveldb::Status opened, leveldb::WritableFile** out);
};

}  // namespace cairn
