#include "group_commit.h"

#include <kj/debug.h>
#include <leveldb/cache.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "log.h"

namespace cairn {

GroupCommitter::GroupCommitter(leveldb::DB& db, std::chrono::milliseconds syncDelay,
                               const leveldb::Options* options)
    : db(db), syncDelay(syncDelay), options(options), writer([this]() { run(); }) {}

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
  std::unique_lock<std::mutex> lock(mutex);
  if (!latchedError.empty()) {
    return KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError);
  }
  if (stopping) return KJ_EXCEPTION(FAILED, "metadata store stopped");
  // Only with nothing ahead of it: LevelDB must see the writes in the order submitted, and
  // the callers their answers (a queued write answered by the writer thread reaches the
  // caller's loop later, and an answer made here at once would overtake it).
  if (durability == Durability::WRITTEN && options != nullptr && *unanswered == 0 &&
      queue.empty() && !writerBusy && !writingInline) {
    // The writer thread starts nothing from here on, so the room seen is the room there
    // is when the write is made. (Asked without our lock: LevelDB's mutex is its writers'.)
    writingInline = true;
    lock.unlock();
    bool room = roomToWriteNow();
    lock.lock();
    if (room) return writeInline(lock, batch);
    writingInline = false;  // the writer thread, perhaps waiting for it, is woken below
  }
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  queue.push_back(Pending{kj::mv(batch), durability, ++submitted, kj::mv(paf.fulfiller)});
  lock.unlock();
  wake.notify_one();
  ++*unanswered;
  return paf.promise.attach(kj::defer([unanswered = unanswered]() { --*unanswered; }));
}

bool GroupCommitter::roomToWriteNow() {
  // LevelDB 1.23 (db_impl.cc, MakeRoomForWrite) makes a writer sleep a millisecond from 8
  // files in level 0 (kL0_SlowdownWritesTrigger); and one that finds its memtable full
  // either waits for the previous memtable's compaction or, with none under way, starts a
  // new log (and our Env syncs the old one on close). Both memtables count against three
  // quarters of the buffer here, so that neither happens on the caller's thread. Memory
  // usage counts the memtables and the block cache.
  const int kL0SlowdownTrigger = 8;
  std::string level0, usage;
  if (!db.GetProperty("leveldb.num-files-at-level0", &level0) ||
      !db.GetProperty("leveldb.approximate-memory-usage", &usage)) {
    return false;
  }
  size_t cached = options->block_cache != nullptr ? options->block_cache->TotalCharge() : 0;
  size_t tables = std::stoull(usage) - std::min<size_t>(cached, std::stoull(usage));
  return std::stoi(level0) < kL0SlowdownTrigger && tables < options->write_buffer_size / 4 * 3;
}

kj::Promise<void> GroupCommitter::writeInline(std::unique_lock<std::mutex>& lock,
                                              leveldb::WriteBatch& batch) {
  uint64_t seq = ++submitted;
  lock.unlock();
  auto started = std::chrono::steady_clock::now();
  leveldb::Status s = db.Write(leveldb::WriteOptions(), &batch);
  writeCount.fetch_add(1);
  inlineCount.fetch_add(1);
  if (Metrics* m = metrics.load()) m->observe("cairn_master_commit_batch_size", {}, 1);
  lock.lock();
  bool wasClean = written == synced;
  writingInline = false;
  auto reached = recordWrite(seq, false, s, started);
  // The writer thread hears of a first unsynced write (it syncs it within syncDelay) and
  // of the end of a write it waits for; otherwise it sleeps on.
  bool tell = (wasClean && s.ok()) || writerWaitsForInline || !s.ok();
  lock.unlock();
  if (tell) wake.notify_one();
  if (s.ok()) return kj::READY_NOW;
  reportFailure(s);
  for (auto& w : reached) {
    w.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata write failed", s.ToString()));
  }
  return KJ_EXCEPTION(FAILED, "metadata write failed", s.ToString());
}

std::vector<GroupCommitter::Waiter> GroupCommitter::recordWrite(
    uint64_t last, bool sync, const leveldb::Status& s,
    std::chrono::steady_clock::time_point started) {
  if (s.ok()) {
    if (written == synced) dirtySince = started;
    written = std::max(written, last);
    if (sync) synced = std::max(synced, last);
  } else {
    latchedError = s.ToString();
    written = synced = std::max(written, last);
  }
  std::vector<Waiter> reached;
  while (!waiters.empty() && waiters.front().seq <= synced) {
    reached.push_back(kj::mv(waiters.front()));
    waiters.pop_front();
  }
  return reached;
}

void GroupCommitter::reportFailure(const leveldb::Status& s) {
  logError("metadata write failed: {}", s.ToString());
  std::function<void(const std::string&)> handler;
  {
    std::lock_guard<std::mutex> lock(mutex);
    handler = std::move(onFailure);
    onFailure = nullptr;
  }
  if (handler) handler(s.ToString());
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
      // Work, or the moment the oldest unsynced write must be synced; never while a write
      // on the caller's thread is under way (its write would wait behind this one's sync).
      for (;;) {
        if (writingInline) {
          writerWaitsForInline = true;
          wake.wait(lock);
          writerWaitsForInline = false;
          continue;
        }
        if (!queue.empty() || stopping) break;
        if (written == synced) {
          wake.wait(lock);
        } else if (wake.wait_until(lock, dirtySince + syncDelay) == std::cv_status::timeout &&
                   !writingInline) {
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
      writerBusy = true;
      if (!latchedError.empty()) {
        for (auto& p : group) {
          p.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError));
        }
        for (auto& w : waiters) {
          w.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError));
        }
        waiters.clear();
        writerBusy = false;
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
      writerBusy = false;
      reached = recordWrite(last, sync, s, started);
    }
    if (!s.ok()) reportFailure(s);
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
