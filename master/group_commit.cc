#include "group_commit.h"

#include <kj/debug.h>

#include <memory>
#include <vector>

#include "log.h"

namespace cairn {

GroupCommitter::GroupCommitter(leveldb::DB& db, std::chrono::milliseconds syncDelay)
    : db(db), syncDelay(syncDelay), writer([this]() { run(); }) {}

GroupCommitter::~GroupCommitter() { stop(); }

void GroupCommitter::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  if (writer.joinable()) writer.join();
}

void GroupCommitter::setMetrics(Metrics* m) {
  m->describe("cairn_master_commit_batch_size", Metrics::Type::HISTOGRAM,
              "mutations per metadata write", {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  m->describe("cairn_master_commit_sync_seconds", Metrics::Type::HISTOGRAM,
              "time of one synced metadata write", LATENCY_BUCKETS);
  metrics.store(m);
}

void GroupCommitter::setFailureHandler(std::function<void(const std::string&)> handler) {
  std::lock_guard<std::mutex> lock(mutex);
  onFailure = std::move(handler);
}

kj::Promise<void> GroupCommitter::submit(leveldb::WriteBatch batch, Durability durability) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!latchedError.empty()) {
      return KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError);
    }
    if (stopping) return KJ_EXCEPTION(FAILED, "metadata store stopped");
    queue.push_back(Pending{kj::mv(batch), durability, ++submitted, kj::mv(paf.fulfiller)});
  }
  wake.notify_one();
  return kj::mv(paf.promise);
}

kj::Promise<void> GroupCommitter::barrier() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (latchedError.empty() && synced == submitted) return kj::READY_NOW;
  }
  return submit(leveldb::WriteBatch(), Durability::SYNCED);
}

kj::Promise<void> GroupCommitter::whenSynced() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!latchedError.empty()) {
      return KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError);
    }
    if (synced == submitted) return kj::READY_NOW;
    if (stopping) return KJ_EXCEPTION(FAILED, "metadata store stopped");
    waiters.push_back(Waiter{submitted, kj::mv(paf.fulfiller)});
  }
  return kj::mv(paf.promise);
}

void GroupCommitter::run() {
  for (;;) {
    std::vector<Pending> group;
    bool sync = false;
    uint64_t last = 0;
    {
      std::unique_lock<std::mutex> lock(mutex);
      // Work, or the moment the oldest unsynced write must be synced.
      while (queue.empty() && !stopping) {
        if (written == synced) {
          wake.wait(lock);
        } else if (wake.wait_until(lock, dirtySince + syncDelay) == std::cv_status::timeout) {
          break;
        }
      }
      bool dirty = written > synced;
      if (queue.empty() && !dirty) return;  // stopping, and nothing left
      while (!queue.empty()) {
        sync = sync || queue.front().durability == Durability::SYNCED;
        group.push_back(kj::mv(queue.front()));
        queue.pop_front();
      }
      sync =
          sync || stopping || (dirty && std::chrono::steady_clock::now() >= dirtySince + syncDelay);
      last = group.empty() ? written : group.back().seq;
      if (!latchedError.empty()) {
        for (auto& p : group) {
          p.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError));
        }
        for (auto& w : waiters) {
          w.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError));
        }
        waiters.clear();
        if (stopping) return;
        written = synced = last;  // nothing more will be written
        continue;
      }
    }
    leveldb::WriteBatch combined;
    for (auto& p : group) combined.Append(p.batch);
    leveldb::WriteOptions options;
    options.sync = sync;
    auto started = std::chrono::steady_clock::now();
    leveldb::Status s = db.Write(options, &combined);
    writeCount.fetch_add(1);
    if (sync) syncCount.fetch_add(1);
    if (Metrics* m = metrics.load()) {
      if (!group.empty()) {
        m->observe("cairn_master_commit_batch_size", {}, static_cast<double>(group.size()));
      }
      if (sync) {
        m->observe(
            "cairn_master_commit_sync_seconds", {},
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      }
    }
    std::vector<Waiter> reached;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (s.ok()) {
        if (written == synced) dirtySince = started;
        written = last;
        if (sync) synced = last;
      } else {
        latchedError = s.ToString();
        written = synced = last;
      }
      while (!waiters.empty() && waiters.front().seq <= synced) {
        reached.push_back(kj::mv(waiters.front()));
        waiters.pop_front();
      }
    }
    if (!s.ok()) {
      logError("metadata write failed: {}", s.ToString());
      std::function<void(const std::string&)> handler;
      {
        std::lock_guard<std::mutex> lock(mutex);
        handler = std::move(onFailure);
        onFailure = nullptr;
      }
      if (handler) handler(s.ToString());
    }
    for (auto& w : reached) {
      if (s.ok()) {
        w.fulfiller->fulfill();
      } else {
        w.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata write failed", s.ToString()));
      }
    }
    if (s.ok()) {
      for (auto& p : group) p.fulfiller->fulfill();
      continue;
    }
    for (auto& p : group) {
      p.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata write failed", s.ToString()));
    }
  }
}

namespace {

class SyncOnCloseFile final : public leveldb::WritableFile {
 public:
  explicit SyncOnCloseFile(leveldb::WritableFile* base) : base(base) {}
  // LevelDB deletes a log file it moves on from without closing it first.
  ~SyncOnCloseFile() override {
    if (dirty) Sync();
  }
  leveldb::Status Append(const leveldb::Slice& data) override {
    dirty = dirty || !data.empty();
    return base->Append(data);
  }
  leveldb::Status Close() override {
    if (dirty) {
      leveldb::Status s = Sync();
      if (!s.ok()) {
        base->Close();
        return s;
      }
    }
    return base->Close();
  }
  leveldb::Status Flush() override { return base->Flush(); }
  leveldb::Status Sync() override {
    leveldb::Status s = base->Sync();
    if (s.ok()) dirty = false;
    return s;
  }

 private:
  std::unique_ptr<leveldb::WritableFile> base;
  bool dirty = false;
};

}  // namespace

leveldb::Status SyncOnCloseEnv::NewWritableFile(const std::string& name,
                                                leveldb::WritableFile** out) {
  return wrap(target()->NewWritableFile(name, out), out);
}

leveldb::Status SyncOnCloseEnv::NewAppendableFile(const std::string& name,
                                                  leveldb::WritableFile** out) {
  return wrap(target()->NewAppendableFile(name, out), out);
}

leveldb::Status SyncOnCloseEnv::wrap(leveldb::Status opened, leveldb::WritableFile** out) {
  if (opened.ok()) *out = new SyncOnCloseFile(*out);
  return opened;
}

}  // namespace cairn
