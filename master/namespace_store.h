#pragma once
// The master's metadata store: LevelDB behind a write-ahead overlay. A mutation is
// visible to every later read on the event loop at once (the loop serializes mutations,
// so each is computed against all earlier ones), and its promise resolves once the group
// committer has written it to LevelDB's log (synced within 10 ms), or synced it when every
// mutation must be (HDFS's rule). sync() is the barrier behind fsync. Only this module
// touches LevelDB.

#include <kj/async.h>
#include <kj/function.h>
#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "group_commit.h"
#include "status.h"

namespace cairn {

// A set of puts and deletes applied atomically.
struct Mutation {
  std::vector<std::pair<std::string, std::optional<std::string>>> ops;
  void put(std::string key, std::string value) {
    ops.emplace_back(std::move(key), std::move(value));
  }
  void del(std::string key) { ops.emplace_back(std::move(key), std::nullopt); }
  bool empty() const { return ops.empty(); }
  // Acknowledged only once synced (with every entry before it), here and on the standbys.
  bool sync = false;
};

// One entry of the metadata log: a mutation, its place in the log and the epoch of the
// active master that made it.
struct LogEntry {
  uint64_t epoch = 0;
  uint64_t lsn = 0;
  Mutation mutation;
  bool sync = false;  // acknowledged once synced (with every entry before it)
};

// The log position and epoch are kept in the store itself, in the batch of each entry.
extern const std::string LOG_LSN_KEY;
extern const std::string LOG_EPOCH_KEY;
extern const std::string LOG_INSTALLING_KEY;

class NamespaceStore {
 public:
  // Opens (creating if missing) the store in `dir`. `env` may be null for the real disk.
  // Unsynced writes are synced within `syncDelay`. Throws if LevelDB cannot open it.
  NamespaceStore(const std::string& dir, leveldb::Env* env,
                 std::chrono::milliseconds syncDelay = std::chrono::milliseconds(10));
  ~NamespaceStore();
  // Writes and syncs what is queued and stops the writer thread: from its return no write
  // of the store's is under way, and later commits fail. LevelDB stays open (a standby's
  // snapshot may still be read from it). For a master about to close its files and replace
  // its process (master_main.cc): a write to a closed file would stop it instead.
  void stopWrites() { committer->stop(); }

  std::optional<std::string> get(const std::string& key);

  // Up to `limit` pairs whose keys start with `prefix` and sort after `after` (which,
  // when not empty, is a full key).
  std::vector<std::pair<std::string, std::string>> scan(const std::string& prefix,
                                                        const std::string& after, size_t limit);

  // Applies `m` to what reads see now, as the next entry of the metadata log; the promise
  // resolves once it is in the log (synced with syncEveryMutation) and the shipper (if
  // any) has it. Must be called on the event loop that owns this store. Fails while the
  // store is read only.
  kj::Promise<void> commit(Mutation m);
  // Every entry is synced before it is acknowledged, here and on the standbys (HDFS's
  // rule); else entries are acknowledged once written, and synced within syncDelay.
  void setSyncEveryMutation(bool value) { syncEvery = value; }
  // Resolves once every entry committed so far is synced here and held synced by the
  // shipper's standbys in sync: an entry of its own (`sync` set) when the shipper is set.
  // What fsync and a finished command wait for. Fails while the store is read only.
  kj::Promise<void> sync();
  // Resolves once every entry committed or applied so far is synced on this master's disk,
  // by the next sync (no entry of its own, no sync forced). What chunk deletions wait for:
  // the entry that removed the chunks' last owner must not come back after a power loss.
  kj::Promise<void> syncedHere() { return committer->whenSynced(); }

  // The log: the last entry applied, and the epoch it carried.
  uint64_t lastLsn() const { return lsn; }
  uint64_t lastEpoch() const { return entryEpoch; }
  // Later commits carry `epoch` (the active master's).
  void setEpoch(uint64_t value) { epoch = value; }
  uint64_t currentEpoch() const { return epoch; }
  // Each committed entry goes to `shipper` too (the active sends it to its standbys); the
  // commit resolves when both the disk and the shipper's promise have it.
  using Shipper = kj::Function<kj::Promise<void>(const LogEntry&)>;
  void setShipper(kj::Maybe<Shipper> value) { shipper = kj::mv(value); }
  // Called with every mutation commit() takes, before it is written (the master tells the
  // sessions that watch what it changes).
  void setObserver(std::function<void(const Mutation&)> value) { observer = std::move(value); }
  // A standby's store changes only through apply() and install(); commit() fails.
  void setWritable(bool value) { writable = value; }
  bool isWritable() const { return writable; }
  // A snapshot was being installed when the master stopped: the store holds part of one.
  bool installing() { return get(LOG_INSTALLING_KEY).has_value(); }

  // The retry cache: while a client's mutation that carries a request id is dispatched,
  // `key` names its outcome. The mutation's first entry records the outcome under it,
  // atomically with the change (Namespace takes the key when it commits).
  void beginRequest(std::string key) { requestKey = std::move(key); }
  void endRequest() { requestKey.reset(); }
  std::optional<std::string> takeRequestKey() {
    auto key = std::move(requestKey);
    requestKey.reset();
    return key;
  }

  // A standby applies an entry the active shipped; it must be the next one. Resolves once
  // in the log (synced, for an entry marked sync or under syncEveryMutation).
  kj::Promise<void> apply(LogEntry entry);

  // A consistent copy of what is in LevelDB now, read piece by piece (the active sends it
  // to a standby that is too far behind for the log).
  class Snapshot {
   public:
    virtual ~Snapshot() = default;
    virtual uint64_t lsn() const = 0;
    virtual uint64_t epoch() const = 0;
    // The next pairs, about `maxBytes` of them; false once there are none left.
    virtual bool next(size_t maxBytes, std::vector<std::pair<std::string, std::string>>& out) = 0;
  };
  std::unique_ptr<Snapshot> snapshot();
  // Installing a snapshot on a standby: the first piece replaces everything (the log
  // position is gone until the last piece, so a crash in between starts over), the last
  // sets the position.
  kj::Promise<void> install(bool first, std::vector<std::pair<std::string, std::string>> pairs,
                            std::optional<std::pair<uint64_t, uint64_t>> lastEpochLsn);

  // LevelDB writes made so far, and how many were synced.
  uint64_t writes() const { return committer->writes(); }
  uint64_t syncs() const { return committer->syncs(); }
  // Batch sizes and sync times of the group committer go to `metrics` from now on.
  void setMetrics(Metrics* metrics) { committer->setMetrics(metrics); }
  // See GroupCommitter::setFailureHandler.
  void setFailureHandler(std::function<void(const std::string&)> handler) {
    committer->setFailureHandler(std::move(handler));
  }

 private:
  struct Pending {
    std::optional<std::string> value;
    uint64_t seq;
  };

  // The next entry of the log, shipped; `synced`: acknowledged once synced everywhere.
  kj::Promise<void> commitEntry(Mutation m, bool synced);
  // Writes `m` (already stamped) to the overlay and the committer.
  kj::Promise<void> write(const Mutation& m, Durability durability);

  SyncOnCloseEnv env;
  std::unique_ptr<leveldb::Cache> blockCache;  // LevelDB's default size, but ours to measure
  leveldb::Options options;
  std::unique_ptr<leveldb::DB> db;
  std::unique_ptr<GroupCommitter> committer;
  std::map<std::string, Pending> overlay;
  uint64_t nextSeq = 1;
  uint64_t lsn = 0, entryEpoch = 0, epoch = 0;
  kj::Maybe<Shipper> shipper;
  bool writable = true;
  bool syncEvery = false;
  // Entries up to syncedLsn are synced here and on the standbys in sync; a sync entry for
  // those up to syncingLsn is on its way.
  uint64_t syncedLsn = 0, syncingLsn = 0;
  kj::Maybe<kj::ForkedPromise<void>> syncing;
  std::optional<std::string> requestKey;
  std::function<void(const Mutation&)> observer;
};

}  // namespace cairn
