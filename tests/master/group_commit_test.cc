#include "group_commit.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/vector.h>
#include <leveldb/cache.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

namespace cairn {
namespace {

// An Env whose log syncs can be held at a gate or made to fail, to see what the
// committer does while a sync is in progress or after one failed.
class GatedEnv : public leveldb::EnvWrapper {
 public:
  explicit GatedEnv(leveldb::Env* base) : EnvWrapper(base) {}

  class File : public leveldb::WritableFile {
   public:
    File(GatedEnv& env, leveldb::WritableFile* base) : env(env), base(base) {}
    ~File() override { delete base; }
    leveldb::Status Append(const leveldb::Slice& data) override {
      if (env.failAppends) return leveldb::Status::IOError("injected append failure");
      return base->Append(data);
    }
    leveldb::Status Close() override { return base->Close(); }
    leveldb::Status Flush() override { return base->Flush(); }
    leveldb::Status Sync() override {
      std::unique_lock<std::mutex> lock(env.mutex);
      env.syncsStarted++;
      env.changed.notify_all();
      env.changed.wait(lock, [this]() { return env.open; });
      if (env.failSyncs) return leveldb::Status::IOError("injected sync failure");
      return base->Sync();
    }

   private:
    GatedEnv& env;
    leveldb::WritableFile* base;
  };

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::WritableFile* base;
    auto s = target()->NewWritableFile(f, &base);
    if (s.ok()) *r = new File(*this, base);
    return s;
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::WritableFile* base;
    auto s = target()->NewAppendableFile(f, &base);
    if (s.ok()) *r = new File(*this, base);
    return s;
  }

  void close() {
    std::lock_guard<std::mutex> lock(mutex);
    open = false;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex);
    open = true;
    changed.notify_all();
  }
  void waitForSyncs(int n) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&]() { return syncsStarted >= n; });
  }

  std::mutex mutex;
  std::condition_variable changed;
  bool open = true;
  bool failSyncs = false;
  std::atomic<bool> failAppends{false};
  int syncsStarted = 0;
};

class GroupCommitTest : public ::testing::Test {
 protected:
  // kj's owners may throw from destructors; a test fixture must not.
  ~GroupCommitTest() noexcept override {}
  GroupCommitTest()
      : io(kj::setupAsyncIo()), mem(leveldb::NewMemEnv(leveldb::Env::Default())), env(mem.get()) {
    options.create_if_missing = true;
    options.env = &env;
    options.block_cache = cache.get();
    leveldb::DB* raw;
    EXPECT_TRUE(leveldb::DB::Open(options, "/db", &raw).ok());
    db.reset(raw);
  }
  leveldb::WriteBatch batch(int i) {
    leveldb::WriteBatch b;
    b.Put("k" + std::to_string(i), "v");
    return b;
  }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> mem;
  GatedEnv env;
  std::unique_ptr<leveldb::Cache> cache{leveldb::NewLRUCache(1 << 20)};
  leveldb::Options options;
  std::unique_ptr<leveldb::DB> db;
};

TEST_F(GroupCommitTest, CallersDuringASyncShareTheNext) {
  GroupCommitter committer(*db);
  env.close();
  int before = env.syncsStarted;
  auto first = committer.submit(batch(0), Durability::SYNCED);
  env.waitForSyncs(before + 1);  // the writer is now inside the first sync
  kj::Vector<kj::Promise<void>> rest;
  for (int i = 1; i <= 99; ++i) rest.add(committer.submit(batch(i), Durability::SYNCED));
  EXPECT_FALSE(first.poll(io.waitScope));  // not durable, so not acknowledged
  env.release();
  first.wait(io.waitScope);
  kj::joinPromises(rest.releaseAsArray()).wait(io.waitScope);
  EXPECT_EQ(committer.writes(), 2u);  // 100 callers, two synced writes
  std::string value;
  EXPECT_TRUE(db->Get(leveldb::ReadOptions(), "k99", &value).ok());
}

TEST_F(GroupCommitTest, AFailedSyncFailsThatBatchAndEveryLaterOne) {
  GroupCommitter committer(*db);
  std::atomic<int> failures{0};
  committer.setFailureHandler([&](const std::string& error) {
    EXPECT_NE(error.find("injected sync failure"), std::string::npos) << error;
    failures++;
  });
  committer.submit(batch(0), Durability::SYNCED).wait(io.waitScope);
  EXPECT_EQ(failures.load(), 0);
  env.failSyncs = true;
  EXPECT_ANY_THROW(committer.submit(batch(1), Durability::SYNCED).wait(io.waitScope));
  env.failSyncs = false;
  EXPECT_ANY_THROW(committer.submit(batch(2), Durability::SYNCED).wait(io.waitScope));
  EXPECT_EQ(failures.load(), 1);  // told once, when it failed
}

TEST_F(GroupCommitTest, AWrittenBatchIsAnsweredAtOnceAndSyncedWithinTheDelay) {
  GroupCommitter committer(*db, std::chrono::milliseconds(10));
  env.close();  // every sync waits at the gate
  int before = env.syncsStarted;
  committer.submit(batch(0), Durability::WRITTEN).wait(io.waitScope);  // no sync needed
  auto synced = committer.whenSynced();
  env.waitForSyncs(before + 1);  // the committer's own, unasked
  EXPECT_FALSE(synced.poll(io.waitScope));
  env.release();
  synced.wait(io.waitScope);
  EXPECT_EQ(committer.syncs(), 1u);
  EXPECT_EQ(committer.writes(), 2u);  // the batch, then an empty synced write
}

TEST_F(GroupCommitTest, WaitingForASyncForcesNoneAndABarrierDoes) {
  GroupCommitter committer(*db, std::chrono::hours(1));
  committer.submit(batch(0), Durability::WRITTEN).wait(io.waitScope);
  auto synced = committer.whenSynced();
  io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_FALSE(synced.poll(io.waitScope));
  EXPECT_EQ(committer.syncs(), 0u);
  committer.barrier().wait(io.waitScope);
  synced.wait(io.waitScope);
  EXPECT_EQ(committer.syncs(), 1u);
  committer.barrier().wait(io.waitScope);  // nothing new: no write at all
  EXPECT_EQ(committer.writes(), 2u);
}

TEST_F(GroupCommitTest, AnUnsyncedWriteWithNothingAheadIsMadeOnTheCallersThread) {
  GroupCommitter committer(*db, std::chrono::milliseconds(10), &options);
  env.close();  // every sync waits at the gate
  int before = env.syncsStarted;
  auto first = committer.submit(batch(0), Durability::WRITTEN);
  // Already in LevelDB when submit returns: the writer thread took no part.
  EXPECT_TRUE(first.poll(io.waitScope));
  std::string value;
  EXPECT_TRUE(db->Get(leveldb::ReadOptions(), "k0", &value).ok());
  EXPECT_EQ(committer.inlineWrites(), 1u);
  // Synced within the delay all the same, by the writer thread.
  auto synced = committer.whenSynced();
  env.waitForSyncs(before + 1);
  // A write submitted while that sync is under way waits for it, behind it, on the writer
  // thread: LevelDB would make the caller's thread wait there too.
  auto second = committer.submit(batch(1), Durability::WRITTEN);
  EXPECT_FALSE(second.poll(io.waitScope));
  EXPECT_FALSE(synced.poll(io.waitScope));
  env.release();
  synced.wait(io.waitScope);
  second.wait(io.waitScope);
  EXPECT_TRUE(db->Get(leveldb::ReadOptions(), "k1", &value).ok());
  EXPECT_EQ(committer.inlineWrites(), 1u);
}

TEST_F(GroupCommitTest, WritesGoToTheWriterThreadWhenLevelDbWouldMakeThemWait) {
  // A memtable of 64 KiB: once three quarters are used, the next write could find it full
  // while the previous one is still being compacted.
  options.write_buffer_size = 64 << 10;
  db.reset();
  leveldb::DB* raw;
  ASSERT_TRUE(leveldb::DB::Open(options, "/db2", &raw).ok());
  db.reset(raw);
  GroupCommitter committer(*db, std::chrono::milliseconds(10), &options);
  committer.submit(batch(0), Durability::WRITTEN).wait(io.waitScope);
  EXPECT_EQ(committer.inlineWrites(), 1u);
  leveldb::WriteBatch big;
  big.Put("big", std::string(56 << 10, 'x'));
  committer.submit(kj::mv(big), Durability::WRITTEN).wait(io.waitScope);
  uint64_t inlined = committer.inlineWrites();
  committer.submit(batch(1), Durability::WRITTEN).wait(io.waitScope);
  EXPECT_EQ(committer.inlineWrites(), inlined);  // the writer thread's
  std::string value;
  EXPECT_TRUE(db->Get(leveldb::ReadOptions(), "k1", &value).ok());
}

TEST_F(GroupCommitTest, WithoutTheDatabasesOptionsEveryWriteIsTheWriterThreads) {
  GroupCommitter committer(*db, std::chrono::hours(1));
  committer.submit(batch(0), Durability::WRITTEN).wait(io.waitScope);
  committer.submit(batch(1), Durability::SYNCED).wait(io.waitScope);
  EXPECT_EQ(committer.inlineWrites(), 0u);
  EXPECT_EQ(committer.writes(), 2u);
}

TEST_F(GroupCommitTest, AFailedWriteOnTheCallersThreadFailsItAndEveryLaterOne) {
  GroupCommitter committer(*db, std::chrono::hours(1), &options);
  std::atomic<int> failures{0};
  committer.setFailureHandler([&](const std::string& error) {
    EXPECT_NE(error.find("injected append failure"), std::string::npos) << error;
    failures++;
  });
  committer.submit(batch(0), Durability::WRITTEN).wait(io.waitScope);
  auto synced = committer.whenSynced();  // waits for a sync an hour away
  env.failAppends = true;
  auto failed = committer.submit(batch(1), Durability::WRITTEN);
  EXPECT_EQ(committer.inlineWrites(), 2u);
  EXPECT_ANY_THROW(failed.wait(io.waitScope));
  EXPECT_EQ(failures.load(), 1);
  // What waited for a sync is told it will not come; what follows fails, the writer
  // thread's writes too, and the handler is not called again.
  EXPECT_ANY_THROW(synced.wait(io.waitScope));
  env.failAppends = false;
  EXPECT_ANY_THROW(committer.submit(batch(2), Durability::WRITTEN).wait(io.waitScope));
  EXPECT_ANY_THROW(committer.submit(batch(3), Durability::SYNCED).wait(io.waitScope));
  EXPECT_ANY_THROW(committer.barrier().wait(io.waitScope));
  EXPECT_EQ(failures.load(), 1);
}

}  // namespace
}  // namespace cairn
