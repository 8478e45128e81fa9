// The metadata log from an active master's store to a standby's, in one process: entries
// in order, acknowledgements that wait for the standby, snapshots for a standby too far
// behind or with a history of its own, and entries from a deposed master refused.

#include "replication.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <leveldb/helpers/memenv.h>

#include <functional>
#include <memory>

namespace cairn {
namespace {

class ReplicationTest : public ::testing::Test {
 protected:
  ~ReplicationTest() noexcept override {}
  ReplicationTest()
      : io(kj::setupAsyncIo()),
        env(leveldb::NewMemEnv(leveldb::Env::Default())),
        active(std::make_unique<NamespaceStore>("/a", env.get())),
        standby(std::make_unique<NamespaceStore>("/b", env.get())) {
    standby->setWritable(false);
  }

  std::unique_ptr<LogShipper> ship(ReplicationOptions options = {}) {
    auto s = std::make_unique<LogShipper>(*active, io.provider->getTimer(), options,
                                          [this](std::vector<std::string> ids) {
                                            recorded = ids;
                                            return kj::Promise<void>(kj::READY_NOW);
                                          });
    active->setShipper(
        NamespaceStore::Shipper([raw = s.get()](const LogEntry& e) { return raw->ship(e); }));
    return s;
  }
  wire::LogSink::Client sink(LogSinkImpl** raw = nullptr, bool ackWritten = true) {
    auto own = kj::heap<LogSinkImpl>(*standby, ackWritten,
                                     [this](bool installing) { installs += installing; });
    if (raw) *raw = own.get();
    return kj::mv(own);
  }
  void commit(const std::string& key, const std::string& value) {
    Mutation m;
    m.put(key, value);
    active->commit(std::move(m)).wait(io.waitScope);
  }
  // Runs the loop until `done` holds (5 s at most).
  bool until(const std::function<bool()>& done) {
    for (int i = 0; i < 5000 && !done(); ++i) {
      io.provider->getTimer().afterDelay(kj::MILLISECONDS).wait(io.waitScope);
    }
    return done();
  }
  bool inSync(LogShipper& s) {
    auto f = s.followers();
    return f.size() == 1 && f[0].inSync;
  }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> env;
  std::unique_ptr<NamespaceStore> active, standby;
  std::vector<std::string> recorded;
  int installs = 0;
};

TEST_F(ReplicationTest, EntriesReachTheStandbyInOrderBeforeTheyAreAcknowledged) {
  auto shipper = ship();
  commit("k0", "before any standby");  // acknowledged by the active alone
  auto following = shipper->follow("b", 0, 0, sink());
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  EXPECT_EQ(recorded, std::vector<std::string>{"b"});
  for (int i = 1; i <= 50; ++i) commit("k" + std::to_string(i), "v" + std::to_string(i));
  // Each commit above returned only once the standby held it.
  EXPECT_EQ(standby->lastLsn(), active->lastLsn());
  for (int i = 1; i <= 50; ++i)
    EXPECT_EQ(standby->get("k" + std::to_string(i)), "v" + std::to_string(i));
  EXPECT_EQ(standby->get("k0"), "before any standby");
  EXPECT_EQ(installs, 0);  // it followed from the start of the log: no snapshot
}

TEST_F(ReplicationTest, AStandbyThatAnswersOnApplyingAnswersEveryEntryMadeDuringASync) {
  // --standby-ack applied. An entry that arrives while an earlier one is being synced is
  // not claimed held before that sync is done; its answer must still come, for a client
  // waits for it and may send nothing more (one create at a time). It used to claim only
  // the entry before the sync, and nothing told the active of it later: the commit waited
  // until the active gave the standby up (standbyTimeout), every few seconds under load.
  ReplicationOptions options;
  options.standbyTimeout = 600 * kj::SECONDS;  // the test's own bound (5 s) fails it first
  auto shipper = ship(options);
  auto following = shipper->follow("b", 0, 0, sink(nullptr, /*ackWritten=*/false));
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  for (int i = 0; i < 20; ++i) {
    Mutation synced;
    synced.put("fsynced", std::to_string(i));
    synced.sync = true;
    auto first = active->commit(std::move(synced));
    Mutation plain;
    plain.put("k" + std::to_string(i), "v");
    bool done = false;
    auto second =
        active->commit(std::move(plain)).then([&]() { done = true; }).eagerlyEvaluate(nullptr);
    ASSERT_TRUE(until([&]() { return done; })) << "entry " << i << " never acknowledged";
    first.wait(io.waitScope);
    EXPECT_EQ(standby->get("k" + std::to_string(i)), "v");
  }
}

TEST_F(ReplicationTest, AStandbyFarBehindGetsASnapshotThenTheLog) {
  ReplicationOptions options;
  options.keepEntries = 10;
  options.snapshotPieceBytes = 100;  // many pieces
  auto shipper = ship(options);
  for (int i = 0; i < 200; ++i) commit("k" + std::to_string(i), std::string(20, 'a' + i % 26));
  auto following = shipper->follow("b", 0, 0, sink());
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  EXPECT_EQ(installs, 1);
  for (int i = 200; i < 210; ++i) commit("k" + std::to_string(i), "after");
  EXPECT_EQ(standby->lastLsn(), active->lastLsn());
  auto a = active->scan("", "", 100000);
  auto b = standby->scan("", "", 100000);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(standby->installing());
}

TEST_F(ReplicationTest, TheEntriesKeptAreBoundedInBytesToo) {
  // Many entries allowed, but only a few KiB of them: a standby that starts from nothing
  // after 200 entries of ~1 KiB each is sent a snapshot, not the log.
  ReplicationOptions options;
  options.keepEntries = 100000;
  options.keepBytes = 4096;
  auto shipper = ship(options);
  for (int i = 0; i < 200; ++i) commit("k" + std::to_string(i), std::string(1000, 'a' + i % 26));
  auto following = shipper->follow("b", 0, 0, sink());
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  EXPECT_EQ(installs, 1);
  EXPECT_EQ(active->scan("", "", 100000), standby->scan("", "", 100000));
}

TEST_F(ReplicationTest, AStandbyWithEntriesOfItsOwnIsReplacedBySnapshot) {
  // The standby was active once and wrote entry 1 at epoch 1 that nobody else has.
  standby->setWritable(true);
  standby->setEpoch(1);
  {
    Mutation m;
    m.put("mine", "unacknowledged");
    standby->commit(std::move(m)).wait(io.waitScope);
  }
  standby->setWritable(false);
  active->setEpoch(2);
  auto shipper = ship();
  commit("theirs", "acknowledged");
  auto following = shipper->follow("b", standby->lastEpoch(), standby->lastLsn(), sink());
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  commit("more", "x");
  EXPECT_EQ(installs, 1);
  EXPECT_EQ(standby->get("mine"), std::nullopt);
  EXPECT_EQ(standby->get("theirs"), "acknowledged");
  EXPECT_EQ(standby->get("more"), "x");
}

TEST_F(ReplicationTest, EntriesFromAnOlderEpochAreRefused) {
  LogSinkImpl* raw = nullptr;
  auto cap = sink(&raw);
  auto req = cap.appendRequest();
  auto e = req.initEntries(1)[0];
  e.setEpoch(3);
  e.setLsn(1);
  e.initOps(0);
  auto r = req.send().wait(io.waitScope);
  ASSERT_TRUE(fromWire(r.getStatus()).ok()) << fromWire(r.getStatus()).toString();
  // A master deposed at epoch 2 that still believes it leads.
  auto stale = cap.appendRequest();
  auto s = stale.initEntries(1)[0];
  s.setEpoch(2);
  s.setLsn(2);
  s.initOps(1)[0].setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("k"), 1));
  auto refused = stale.send().wait(io.waitScope);
  EXPECT_FALSE(fromWire(refused.getStatus()).ok());
  EXPECT_EQ(standby->lastLsn(), 1u);
  EXPECT_EQ(standby->get("k"), std::nullopt);
}

TEST_F(ReplicationTest, ASilentStandbyLeavesTheInSyncSetAndAcknowledgementsGoOn) {
  ReplicationOptions options;
  options.standbyTimeout = 300 * kj::MILLISECONDS;
  auto shipper = ship(options);
  // A standby that never answers an append.
  class Silent final : public wire::LogSink::Server {
   protected:
    kj::Promise<void> append(AppendContext) override { return kj::NEVER_DONE; }
  };
  shipper->follow("mute", 0, 0, kj::heap<Silent>()).detach([](kj::Exception&&) {});
  ASSERT_TRUE(until([&]() { return recorded == std::vector<std::string>{"mute"}; }));
  bool done = false;
  Mutation m;
  m.put("k", "v");
  auto committed =
      active->commit(std::move(m)).then([&]() { done = true; }).eagerlyEvaluate(nullptr);
  io.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_FALSE(done);            // waits for the standby in sync
  committed.wait(io.waitScope);  // until it is dropped from the set, which is recorded first
  EXPECT_TRUE(recorded.empty());
}

TEST_F(ReplicationTest, StopFailsWhatWaitsAndRefusesMore) {
  auto shipper = ship();
  class Silent final : public wire::LogSink::Server {
   protected:
    kj::Promise<void> append(AppendContext) override { return kj::NEVER_DONE; }
  };
  shipper->follow("mute", 0, 0, kj::heap<Silent>()).detach([](kj::Exception&&) {});
  ASSERT_TRUE(until([&]() { return inSync(*shipper); }));
  Mutation m;
  m.put("k", "v");
  auto pending = active->commit(std::move(m));
  shipper->stop("deposed");
  EXPECT_ANY_THROW(pending.wait(io.waitScope));
}

}  // namespace
}  // namespace cairn
