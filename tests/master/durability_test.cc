// The master's durability contract, with the power cut: a change is acknowledged once it
// is in LevelDB's log; what a sync (fsync, fsyncdir, a finished command) covered survives
// the loss of everything not synced, across LevelDB's moves from one log file to the next;
// an unsynced change reaches the disk by itself; a standby acknowledges a sync entry only
// once it has synced it.

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/vector.h>
#include <leveldb/helpers/memenv.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <random>

#include "cluster.h"
#include "log_tail.h"
#include "namespace.h"
#include "namespace_store.h"
#include "replication.h"

namespace cairn {
namespace {

// An Env that can lose power: from powerOff() on, nothing more reaches its files; restore()
// then cuts every file written through it to what was synced, as a disk keeps after a power
// cut. Table files can be held back (their writer waits), so that LevelDB cannot move a
// memtable into a synced table before the cut.
class PowerLossEnv : public leveldb::EnvWrapper {
 public:
  explicit PowerLossEnv(leveldb::Env* base) : EnvWrapper(base) {}

  leveldb::Status NewWritableFile(const std::string& name, leveldb::WritableFile** out) override {
    return open(name, out, false);
  }
  leveldb::Status NewAppendableFile(const std::string& name, leveldb::WritableFile** out) override {
    return open(name, out, true);
  }
  leveldb::Status RemoveFile(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (off) return leveldb::Status::OK();
    files.erase(name);
    return target()->RemoveFile(name);
  }
  leveldb::Status RenameFile(const std::string& from, const std::string& to) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (off) return leveldb::Status::OK();
    auto it = files.find(from);
    if (it != files.end()) {
      files[to] = it->second;
      files.erase(it);
    }
    return target()->RenameFile(from, to);
  }

  void holdTables(bool hold) {
    std::lock_guard<std::mutex> lock(mutex);
    tablesHeld = hold;
    changed.notify_all();
  }
  void powerOff() {
    std::lock_guard<std::mutex> lock(mutex);
    off = true;
    tablesHeld = false;
    changed.notify_all();
  }
  // After the store is gone: each file holds what was synced, and the power is back.
  // With `garbage`, a file written past its last sync holds that many random bytes after
  // what was synced (a disk may write blocks in any order, and not all of them).
  void restore(size_t garbage = 0) {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& [name, f] : files) {
      std::string kept;
      leveldb::SequentialFile* in = nullptr;
      if (f.synced > 0 && target()->NewSequentialFile(name, &in).ok()) {
        kept.resize(f.synced);
        leveldb::Slice got;
        in->Read(f.synced, &got, kept.data());
        kept.assign(got.data(), got.size());
        delete in;
      }
      leveldb::WritableFile* out = nullptr;
      ASSERT_TRUE(target()->NewWritableFile(name, &out).ok());
      if (f.size > f.synced) {
        std::mt19937 random(7);
        for (size_t i = 0; i < garbage; ++i) kept.push_back(static_cast<char>(random()));
      }
      out->Append(kept);
      out->Close();
      delete out;
      f.size = f.synced = kept.size();
    }
    off = false;
  }
  uint64_t unsyncedBytes() {
    std::lock_guard<std::mutex> lock(mutex);
    uint64_t n = 0;
    for (auto& [name, f] : files) n += f.size - f.synced;
    return n;
  }

 private:
  struct Track {
    uint64_t size = 0, synced = 0;
  };
  class File final : public leveldb::WritableFile {
   public:
    File(PowerLossEnv& env, std::string name, leveldb::WritableFile* base)
        : env(env), name(std::move(name)), base(base) {}
    leveldb::Status Append(const leveldb::Slice& data) override {
      std::lock_guard<std::mutex> lock(env.mutex);
      if (env.off) return leveldb::Status::OK();
      env.files[name].size += data.size();
      return base->Append(data);
    }
    leveldb::Status Close() override { return base->Close(); }
    leveldb::Status Flush() override { return base->Flush(); }
    leveldb::Status Sync() override {
      std::lock_guard<std::mutex> lock(env.mutex);
      if (env.off) return leveldb::Status::OK();
      auto& f = env.files[name];
      f.synced = f.size;
      return base->Sync();
    }

   private:
    PowerLossEnv& env;
    std::string name;
    std::unique_ptr<leveldb::WritableFile> base;
  };

  leveldb::Status open(const std::string& name, leveldb::WritableFile** out, bool append) {
    std::unique_lock<std::mutex> lock(mutex);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".ldb") == 0) {
      changed.wait(lock, [this]() { return !tablesHeld; });
    }
    leveldb::WritableFile* base = nullptr;
    leveldb::Status s =
        append ? target()->NewAppendableFile(name, &base) : target()->NewWritableFile(name, &base);
    if (!s.ok()) return s;
    uint64_t existing = 0;
    if (append) target()->GetFileSize(name, &existing);
    files[name] = Track{existing, existing};  // what was there before is on disk
    *out = new File(*this, name, base);
    return s;
  }

  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, Track> files;
  bool off = false;
  bool tablesHeld = false;
};

class DurabilityTest : public ::testing::Test {
 protected:
  ~DurabilityTest() noexcept override {}
  DurabilityTest()
      : io(kj::setupAsyncIo()), mem(leveldb::NewMemEnv(leveldb::Env::Default())), env(mem.get()) {}

  // Unsynced changes wait an hour for the committer's own sync: only sync() syncs.
  std::unique_ptr<NamespaceStore> open(const std::string& dir,
                                       std::chrono::milliseconds delay = std::chrono::hours(1)) {
    return std::make_unique<NamespaceStore>(dir, &env, delay);
  }
  static Mutation put(int i) {
    Mutation m;
    m.put("k" + std::to_string(i), std::string(64 << 10, static_cast<char>('a' + i % 26)));
    return m;
  }
  // The keys k<from>.. that the store holds, counted until the first missing one; none of
  // those after it may be there (the log is a prefix).
  static int prefix(NamespaceStore& store, int from, int to) {
    int n = from;
    while (n < to && store.get("k" + std::to_string(n))) ++n;
    for (int i = n; i < to; ++i) EXPECT_FALSE(store.get("k" + std::to_string(i))) << i;
    return n;
  }

  // LevelDB's log files in `dir`, oldest first.
  std::vector<std::string> logFiles(const std::string& dir) {
    std::vector<std::string> files, logs;
    EXPECT_TRUE(env.GetChildren(dir, &files).ok());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      if (f.size() > 4 && f.compare(f.size() - 4, 4, ".log") == 0) logs.push_back(dir + "/" + f);
    }
    return logs;
  }
  // Flips one bit at `offset` of `log` (the newest log of `dir` if empty); returns its size.
  size_t flipLogByte(const std::string& dir, size_t offset, std::string log = "") {
    if (log.empty()) log = logFiles(dir).back();
    leveldb::SequentialFile* in = nullptr;
    EXPECT_TRUE(env.NewSequentialFile(log, &in).ok());
    std::string bytes(16 << 20, '\0');
    leveldb::Slice got;
    EXPECT_TRUE(in->Read(bytes.size(), &got, bytes.data()).ok());
    delete in;
    std::string damaged(got.data(), got.size());
    EXPECT_LT(offset, damaged.size());
    damaged[offset] ^= 1;
    leveldb::WritableFile* out = nullptr;
    EXPECT_TRUE(env.NewWritableFile(log, &out).ok());
    out->Append(damaged);
    out->Close();
    delete out;
    return damaged.size();
  }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> mem;
  PowerLossEnv env;
};

TEST_F(DurabilityTest, WhatASyncCoveredSurvivesAPowerCutAcrossLogFiles) {
  auto store = open("/m");
  // LevelDB's memtable (4 MiB) fills up once: the changes span two log files, and none
  // reaches a synced table while tables are held back.
  env.holdTables(true);
  for (int i = 0; i < 100; ++i) store->commit(put(i)).wait(io.waitScope);
  EXPECT_GT(env.unsyncedBytes(), 0u);  // acknowledged before any sync
  store->sync().wait(io.waitScope);
  EXPECT_EQ(env.unsyncedBytes(), 0u);
  for (int i = 100; i < 110; ++i) store->commit(put(i)).wait(io.waitScope);
  EXPECT_GT(env.unsyncedBytes(), 0u);

  env.powerOff();
  store.reset();
  env.restore();
  store = open("/m");
  EXPECT_EQ(prefix(*store, 0, 110), 100);  // what the sync covered; nothing after it
  EXPECT_EQ(store->lastLsn(), 100u);
  // The store goes on from there.
  store->commit(put(500)).wait(io.waitScope);
  EXPECT_EQ(store->lastLsn(), 101u);
}

TEST_F(DurabilityTest, GarbageWhereUnsyncedWritesWereIsCutOffAtStart) {
  auto store = open("/m");
  for (int i = 0; i < 10; ++i) store->commit(put(i)).wait(io.waitScope);
  store->sync().wait(io.waitScope);
  for (int i = 10; i < 15; ++i) store->commit(put(i)).wait(io.waitScope);
  env.powerOff();
  store.reset();
  env.restore(100000);
  // LevelDB alone (paranoid, as the master opens it) refuses such a log.
  leveldb::Options options;
  options.paranoid_checks = true;
  options.env = &env;
  leveldb::DB* raw = nullptr;
  leveldb::Status refused = leveldb::DB::Open(options, "/m", &raw);
  EXPECT_TRUE(refused.IsCorruption()) << refused.ToString();
  delete raw;

  store = open("/m");
  EXPECT_EQ(prefix(*store, 0, 15), 10);
  std::vector<std::string> files;
  ASSERT_TRUE(env.GetChildren("/m", &files).ok());
  EXPECT_EQ(
      std::count_if(files.begin(), files.end(),
                    [](const std::string& f) { return f.find(".torn") != std::string::npos; }),
      1);
}

TEST_F(DurabilityTest, ADamagedRecordBeforeGoodOnesStopsTheStart) {
  auto store = open("/m");
  for (int i = 0; i < 10; ++i) store->commit(put(i)).wait(io.waitScope);
  store->sync().wait(io.waitScope);
  store.reset();
  ASSERT_GT(flipLogByte("/m", 100), 200000u);  // in the first record: nine intact after it
  std::vector<TornTail> cut;
  EXPECT_EQ(cutTornLogTails(env, "/m", cut).code(), ErrorCode::IO_ERROR);
  EXPECT_TRUE(cut.empty());
  EXPECT_ANY_THROW(open("/m"));
}

TEST_F(DurabilityTest, DamageWithIntactRecordsAfterItInTheSameBlockStopsTheStart) {
  auto store = open("/m");
  for (int i = 0; i < 10; ++i) {
    Mutation m;
    m.put("k" + std::to_string(i), "small");
    store->commit(std::move(m)).wait(io.waitScope);
  }
  store->sync().wait(io.waitScope);
  store.reset();
  ASSERT_LT(flipLogByte("/m", 10), 32768u);  // all in one block
  std::vector<TornTail> cut;
  EXPECT_EQ(cutTornLogTails(env, "/m", cut).code(), ErrorCode::IO_ERROR);
  EXPECT_ANY_THROW(open("/m"));
}

TEST_F(DurabilityTest, DamageInALogThatANewerOneFollowsStopsTheStart) {
  auto store = open("/m");
  env.holdTables(true);  // the changes span two logs
  for (int i = 0; i < 100; ++i) store->commit(put(i)).wait(io.waitScope);
  store->sync().wait(io.waitScope);
  env.powerOff();
  store.reset();
  env.restore();
  auto logs = logFiles("/m");
  ASSERT_GE(logs.size(), 2u);
  uint64_t size = 0;
  ASSERT_TRUE(env.GetFileSize(logs[0], &size).ok());
  flipLogByte("/m", size - 100, logs[0]);  // near the end of the older one
  std::vector<TornTail> cut;
  EXPECT_EQ(cutTornLogTails(env, "/m", cut).code(), ErrorCode::IO_ERROR);
}

TEST_F(DurabilityTest, AnAcknowledgedChangeReachesTheDiskByItself) {
  auto store = open("/m", std::chrono::milliseconds(10));
  for (int i = 0; i < 10; ++i) store->commit(put(i)).wait(io.waitScope);
  // No sync asked for: the committer syncs within its delay.
  for (int tries = 0; tries < 500 && env.unsyncedBytes() > 0; ++tries) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  EXPECT_EQ(env.unsyncedBytes(), 0u);
  env.powerOff();
  store.reset();
  env.restore();
  store = open("/m");
  EXPECT_EQ(prefix(*store, 0, 10), 10);
}

// A deposed master stops its store's writes and then closes every file it has open, before
// it starts again as a standby: stopping writes and syncs what is queued, answers it, and
// refuses later commits; LevelDB stays open for a snapshot still being read.
TEST_F(DurabilityTest, StoppingTheStoresWritesSyncsWhatIsQueuedAndRefusesMore) {
  auto store = open("/m");
  auto snapshot = store->snapshot();
  kj::Vector<kj::Promise<void>> commits;
  for (int i = 0; i < 50; ++i) commits.add(store->commit(put(i)));
  store->stopWrites();
  EXPECT_EQ(env.unsyncedBytes(), 0u);
  for (auto& c : commits) c.wait(io.waitScope);  // answered, not dropped
  EXPECT_ANY_THROW(store->commit(put(50)).wait(io.waitScope));
  std::vector<std::pair<std::string, std::string>> pairs;
  while (snapshot->next(1 << 20, pairs)) {
  }
  snapshot.reset();
  env.powerOff();
  store.reset();
  env.restore();
  store = open("/m");
  EXPECT_EQ(prefix(*store, 0, 51), 50);
}

TEST_F(DurabilityTest, EveryChangeIsSyncedBeforeItsAnswerWhenAskedTo) {
  auto store = open("/m");
  store->setSyncEveryMutation(true);
  for (int i = 0; i < 5; ++i) {
    store->commit(put(i)).wait(io.waitScope);
    EXPECT_EQ(env.unsyncedBytes(), 0u) << i;
  }
  uint64_t syncs = store->syncs();
  store->sync().wait(io.waitScope);  // nothing left to sync
  EXPECT_EQ(store->syncs(), syncs);
}

TEST_F(DurabilityTest, AStandbyAnswersASyncEntryOnlyOnceSynced) {
  auto active = open("/a");
  auto standby = open("/b");
  standby->setWritable(false);
  LogShipper shipper(*active, io.provider->getTimer(), ReplicationOptions{},
                     [](std::vector<std::string>) { return kj::Promise<void>(kj::READY_NOW); });
  active->setShipper(
      NamespaceStore::Shipper([&shipper](const LogEntry& e) { return shipper.ship(e); }));
  wire::LogSink::Client sink = kj::heap<LogSinkImpl>(*standby, true, [](bool) {});
  auto following = shipper.follow("b", 0, 0, sink);
  for (int tries = 0; tries < 100 && shipper.followers().empty(); ++tries) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  for (int tries = 0; tries < 100 && !shipper.followers().at(0).inSync; ++tries) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  ASSERT_TRUE(shipper.followers().at(0).inSync);
  // Acknowledged once in both logs: neither synced it.
  for (int i = 0; i < 20; ++i) active->commit(put(i)).wait(io.waitScope);
  EXPECT_EQ(standby->lastLsn(), active->lastLsn());
  EXPECT_GT(env.unsyncedBytes(), 0u);
  active->sync().wait(io.waitScope);
  EXPECT_EQ(env.unsyncedBytes(), 0u);  // on both disks
  EXPECT_EQ(standby->lastLsn(), active->lastLsn());

  // Power lost on the standby's host after the sync: it holds all of it.
  for (int i = 20; i < 25; ++i) active->commit(put(i)).wait(io.waitScope);
  env.powerOff();
  shipper.stop("test over");
  active->setShipper(nullptr);
  following = nullptr;
  sink = nullptr;
  standby.reset();
  active.reset();
  env.restore();
  standby = open("/b");
  EXPECT_EQ(prefix(*standby, 0, 25), 20);
}

TEST_F(DurabilityTest, ASizeThatEndsWithinAChunkIsSyncedBeforeTheChunkIsCut) {
  // The master cuts the chunk's replicas right after the answer: a power cut must not bring
  // back the old size over bytes already cut away.
  testing::FakeClock clock;
  auto store = open("/m");
  Namespace ns(*store, clock, 1 << 20);
  auto f = ns.create(ROOT_INODE, "f", 0644, 0, 0, 0, true).wait(io.waitScope);
  ASSERT_TRUE(f.status.ok());
  SetAttrArgs grow;
  grow.size = 3 << 20;
  ASSERT_TRUE(ns.setattr(f.inode.inode, grow).wait(io.waitScope).status.ok());
  EXPECT_GT(env.unsyncedBytes(), 0u);
  SetAttrArgs toBoundary;  // no chunk to cut: an ordinary change
  toBoundary.size = 2 << 20;
  ASSERT_TRUE(ns.setattr(f.inode.inode, toBoundary).wait(io.waitScope).status.ok());
  EXPECT_GT(env.unsyncedBytes(), 0u);
  SetAttrArgs within;
  within.size = (1 << 20) + 1000;
  ASSERT_TRUE(ns.setattr(f.inode.inode, within).wait(io.waitScope).status.ok());
  EXPECT_EQ(env.unsyncedBytes(), 0u);
}

TEST_F(DurabilityTest, NumbersHandedOutBeforeAPowerCutAreNeverHandedOutAgain) {
  // A mount may still hold an inode, and a chunkserver a chunk, that the master handed
  // out in the last moments before the power went: numbers are reserved on disk ahead.
  testing::FakeClock clock;
  auto store = open("/m");
  auto ns = std::make_unique<Namespace>(*store, clock, 1 << 20);
  uint64_t highestInode = 0, highestHandle = 0;
  for (int i = 0; i < 20; ++i) {
    auto r =
        ns->create(ROOT_INODE, "f" + std::to_string(i), 0644, 0, 0, 0, true).wait(io.waitScope);
    ASSERT_TRUE(r.status.ok()) << r.status.toString();
    highestInode = std::max(highestInode, r.inode.inode);
    auto chunk = ns->allocateChunk(r.inode.inode, 0).wait(io.waitScope);
    ASSERT_TRUE(chunk.ok());
    highestHandle = std::max(highestHandle, chunk.value.handle);
  }
  EXPECT_GT(env.unsyncedBytes(), 0u);  // the creates themselves were not synced
  env.powerOff();
  ns.reset();
  store.reset();
  env.restore();
  store = open("/m");
  ns = std::make_unique<Namespace>(*store, clock, 1 << 20);
  EXPECT_FALSE(ns->resolve("/f19").status.ok());  // lost with the power, as allowed
  auto r = ns->create(ROOT_INODE, "after", 0644, 0, 0, 0, true).wait(io.waitScope);
  ASSERT_TRUE(r.status.ok()) << r.status.toString();
  EXPECT_GT(r.inode.inode, highestInode);
  auto chunk = ns->allocateChunk(r.inode.inode, 0).wait(io.waitScope);
  ASSERT_TRUE(chunk.ok());
  EXPECT_GT(chunk.value.handle, highestHandle);
}

}  // namespace
}  // namespace cairn
