#include "chunk_manager.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <leveldb/helpers/memenv.h>

#include <functional>
#include <set>

#include "cluster.h"

namespace cairn {
namespace {

// Answers the master's calls as the chunkservers would, and records them.
class FakeControl final : public ReplicaControl {
 public:
  kj::Promise<Status> setVersion(uint64_t server, uint64_t handle, uint64_t version, bool create,
                                 uint32_t leaseMs) override {
    calls.push_back("setVersion " + std::to_string(server) + " v" + std::to_string(version) +
                    (create ? " create" : "") + (leaseMs > 0 ? " lease" : ""));
    if (create && onCreate) onCreate(handle);
    if (down.count(server)) return Status::unavailable("down");
    if (leaseMs > 0) leases++;
    versions[{server, handle}] = version;
    if (late.count(server)) return Status::unavailable("the answer was lost");
    if (hold.count(server)) {
      auto paf = kj::newPromiseAndFulfiller<Status>();
      held.push_back(kj::mv(paf.fulfiller));
      return kj::mv(paf.promise);
    }
    return Status::OK();
  }
  kj::Promise<Status> grantLease(uint64_t server, uint64_t, uint64_t, uint32_t) override {
    leases++;
    if (down.count(server)) return Status::unavailable("down");
    if (holdLeases) {
      auto paf = kj::newPromiseAndFulfiller<Status>();
      held.push_back(kj::mv(paf.fulfiller));
      return kj::mv(paf.promise);
    }
    return Status::OK();
  }
  kj::Promise<Status> truncate(uint64_t server, uint64_t handle, uint64_t version,
                               uint32_t length) override {
    if (down.count(server) || cutsFail) return Status::unavailable("down");
    versions[{server, handle}] = version;
    cutsAt.push_back(length);
    return Status::OK();
  }

  kj::Promise<Status> replicate(uint64_t server, uint64_t handle, uint64_t version,
                                const std::string&) override {
    copies++;
    if (down.count(server)) return Status::unavailable("down");
    versions[{server, handle}] = version;
    return Status::OK();
  }
  kj::Promise<Status> copyChunk(uint64_t server, uint64_t handle, uint64_t version,
                                uint64_t newHandle, uint64_t newVersion) override {
    calls.push_back("copyChunk " + std::to_string(server) + " " + std::to_string(handle) + " v" +
                    std::to_string(version) + " -> " + std::to_string(newHandle));
    if (down.count(server)) return Status::unavailable("down");
    if (versions[{server, handle}] != version) return Status::staleVersion("not at that version");
    versions[{server, newHandle}] = newVersion;
    return Status::OK();
  }

  std::vector<std::string> calls;
  int copies = 0;
  std::vector<uint32_t> cutsAt;  // the length of every cut a replica made
  bool cutsFail = false;         // every cut fails (other calls go through)
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> versions;
  std::set<uint64_t> down;
  std::set<uint64_t> late;  // these take a setVersion but their answer is lost
  std::set<uint64_t> hold;  // these answer a setVersion only when the test says so
  bool holdLeases = false;  // every grantLease is answered only when the test says so
  std::vector<kj::Own<kj::PromiseFulfiller<Status>>> held;
  int leases = 0;  // taken, with a chunk's creation or by a call of their own
  std::function<void(uint64_t handle)> onCreate;  // told of every replica about to be made
};

class ChunkManagerTest : public ::testing::Test {
 protected:
  // kj's owners may throw from destructors; a test fixture must not.
  ~ChunkManagerTest() noexcept override {}
  ChunkManagerTest()
      : io(kj::setupAsyncIo()),
        env(leveldb::NewMemEnv(leveldb::Env::Default())),
        store("/ns", env.get()),
        ns(store, clock, 1 << 20),
        timer(kj::origin<kj::TimePoint>()),
        manager(ns, control, timer, noAudit()) {
    for (int i = 0; i < 4; ++i) {
      ids.push_back(
          manager.registerServer("127.0.0." + std::to_string(i + 2) + ":1", "r", 1 << 30, 0, {}));
    }
    file = ns.create(ROOT_INODE, "f", 0644, 0, 0, 3, true).wait(io.waitScope).inode.inode;
  }
  // The audit would put a forgotten chunk in line itself: the tests see whether every
  // change does.
  static ChunkManagerOptions noAudit() {
    ChunkManagerOptions o;
    o.auditPerTick = 0;
    return o;
  }
  // Whatever a test did, every chunk off its goal is in line for repair: a tick's work
  // follows the changes, and none may be forgotten.
  void TearDown() override { EXPECT_EQ(manager.offGoalUnattended(), 0u); }
  Result<ChunkView> prepare(uint32_t index) {
    return manager.prepareWrite(file, index).wait(io.waitScope);
  }
  // Lets the loop finish what is under way, including synced metadata writes.
  void settle() { io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope); }
  // Every server but `silent` heartbeats.
  void heartbeatAll(uint64_t silent = 0) {
    for (auto id : ids) {
      std::vector<uint64_t> deletes;
      if (id != silent) manager.heartbeat(id, 1 << 30, 0, deletes);
    }
  }
  uint64_t idOf(const std::string& address) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (address == "127.0.0." + std::to_string(i + 2) + ":1") return ids[i];
    }
    return 0;
  }
  std::vector<ReplicaFailure> failing(const ChunkView& v, std::vector<ErrorCode> codes) {
    std::vector<ReplicaFailure> out;
    for (size_t i = 0; i < codes.size(); ++i) {
      if (codes[i] != ErrorCode::OK) out.push_back({v.replicas[i].address, Status(codes[i], "x")});
    }
    return out;
  }
  // The replicas of chunk 0 the master lists now (a copy: a range-for over a member of
  // locate()'s temporary would outlive it).
  std::vector<ReplicaAddress> replicasNow() { return manager.locate(file, 0, 1).at(0).replicas; }
  std::vector<uint64_t> deletesFor(uint64_t id, std::optional<uint64_t> available = std::nullopt) {
    std::vector<uint64_t> d;
    manager.heartbeat(id, 1 << 30, 0, d, available);
    return d;
  }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> env;
  testing::FakeClock clock;
  NamespaceStore store;
  Namespace ns;
  kj::TimerImpl timer;
  FakeControl control;
  ChunkManager manager;
  std::vector<uint64_t> ids;
  uint64_t file;
};

TEST_F(ChunkManagerTest, AllocatesOnDistinctServersWithALease) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  ASSERT_EQ(r.value.replicas.size(), 3u);
  std::set<std::string> addresses;
  for (auto& rep : r.value.replicas) addresses.insert(rep.address);
  EXPECT_EQ(addresses.size(), 3u);
  EXPECT_FALSE(r.value.primary.empty());
  EXPECT_EQ(r.value.record.version, 1u);  // a new chunk's first lease needs no bump
  EXPECT_EQ(ns.getChunk(file, 0)->version, 1u);
}

TEST_F(ChunkManagerTest, ANewChunkIsMadeUnderAHandleReservedOnDiskAndTakesItsLeaseWithIt) {
  // A fresh namespace: the first handle's reserve is on its way to the log when the first
  // chunk is allocated, so that chunk's replicas wait for it; no replica is ever made of a
  // handle whose reserve is not on disk.
  std::vector<bool> reserved;
  control.onCreate = [&](uint64_t handle) { reserved.push_back(ns.handleOnDisk(handle)); };
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(prepare(i).ok());
  control.onCreate = nullptr;
  EXPECT_EQ(reserved, std::vector<bool>(9, true));
  // The first server of each takes the lease with the chunk: no call of its own.
  EXPECT_EQ(control.leases, 3);

  // Once the reserve is on disk, the replicas are made while the chunk's record is on its
  // way to the log (held here), and the writer's primary is the server that took the lease.
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> shipped;
  store.setShipper(NamespaceStore::Shipper([&](const LogEntry&) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    shipped.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }));
  size_t before = control.calls.size();
  auto pending = manager.prepareWrite(file, 3);
  settle();
  ASSERT_EQ(shipped.size(), 1u);  // the record, still on its way
  std::vector<std::string> creates(control.calls.begin() + static_cast<long>(before),
                                   control.calls.end());
  ASSERT_EQ(creates.size(), 3u);
  store.setShipper(nullptr);
  for (auto& f : shipped) f->fulfill();
  auto r = pending.wait(io.waitScope);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_EQ(creates[0], "setVersion " + std::to_string(idOf(r.value.primary)) + " v1 create lease");
  EXPECT_EQ(control.leases, 4);
}

// A rolling upgrade: chunkservers of an older release register without feature bits.
// Writes to a chunk any of them holds are pushed (the master's location says so), and the
// first lease of a chunk such a server is first to create is granted in a call of its own.
TEST_F(ChunkManagerTest, ChunkserversOfAnOlderReleaseGetOnlyWhatTheyTake) {
  auto address = [](size_t i) { return "127.0.0." + std::to_string(i + 2) + ":1"; };
  for (size_t i = 0; i < ids.size(); ++i) {
    manager.registerServer(address(i), "r", 1 << 30, 0, {}, std::nullopt, 0);
  }
  size_t before = control.calls.size();
  auto old = prepare(0);
  ASSERT_TRUE(old.ok()) << old.status.toString();
  EXPECT_FALSE(old.value.inlineWrites);
  EXPECT_FALSE(old.value.primary.empty());
  EXPECT_EQ(old.value.record.version, 1u);  // no bump: the lease came by itself
  EXPECT_EQ(control.leases, 1);
  for (size_t i = before; i < control.calls.size(); ++i) {
    EXPECT_EQ(control.calls[i].find("lease"), std::string::npos) << control.calls[i];
  }

  // Upgraded: the next chunk's writes carry their bytes, and its lease comes with it.
  for (size_t i = 0; i < ids.size(); ++i) {
    manager.registerServer(address(i), "r", 1 << 30, 0, {}, std::nullopt, wire::FEATURES_ALL);
  }
  auto fresh = prepare(1);
  ASSERT_TRUE(fresh.ok()) << fresh.status.toString();
  EXPECT_TRUE(fresh.value.inlineWrites);
  EXPECT_EQ(control.leases, 2);
  EXPECT_TRUE(manager.locate(file, 1, 1).at(0).inlineWrites);
  // One of its replicas back on the older release (a downgrade, or a restart before the
  // upgrade reached it): its writes are pushed again.
  auto holder = fresh.value.replicas.back().address;
  manager.registerServer(holder, "r", 1 << 30, 0,
                         {{fresh.value.record.handle, fresh.value.record.version, 0}}, std::nullopt,
                         0);
  auto listed = manager.locate(file, 1, 1).at(0);
  EXPECT_EQ(listed.replicas.size(), 3u);
  EXPECT_FALSE(listed.inlineWrites);
}

// A chunk's step runs to its end even when its caller stops waiting (a later step waits
// for it): what it makes is its own, not the caller's. (Under AddressSanitizer, a step
// that wrote into its caller's state after the caller was gone fails here.)
TEST_F(ChunkManagerTest, AStepWhoseCallerStoppedWaitingRunsToItsEnd) {
  control.hold = {ids.begin(), ids.end()};
  {
    auto dropped = manager.prepareWrite(file, 0).eagerlyEvaluate(nullptr);
    settle();
  }
  ASSERT_EQ(control.held.size(), 3u);  // the creates, held
  control.hold.clear();
  for (auto& f : control.held) f->fulfill(Status::OK());
  control.held.clear();
  settle();
  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_EQ(r.value.record.version, 1u);  // made and leased by the step alone
  EXPECT_EQ(control.leases, 1);

  // A truncate dropped while its chunk's replicas are held: its commit still runs, then
  // the cut; until it ends, the write counts as under way, so a snapshot's freeze waits.
  bool committed = false;
  control.hold = {ids.begin(), ids.end()};
  {
    auto dropped = manager
                       .truncateChunk(file, 1000,
                                      [&committed]() {
                                        committed = true;
                                        return kj::Promise<Status>(Status::OK());
                                      })
                       .eagerlyEvaluate(nullptr);
    settle();
  }
  EXPECT_FALSE(committed);
  auto frozen = manager.freeze({file});
  settle();
  EXPECT_FALSE(frozen.poll(io.waitScope)) << "frozen while a truncate was under way";
  control.hold.clear();
  for (auto& f : control.held) f->fulfill(Status::OK());
  control.held.clear();
  settle();
  EXPECT_TRUE(committed);
  EXPECT_EQ(control.cutsAt, std::vector<uint32_t>(3, 1000));
  EXPECT_TRUE(frozen.wait(io.waitScope).ok());
  manager.thaw({file});
}

TEST_F(ChunkManagerTest, AValidLeaseIsReusedAndAnExpiredOneBumpsTheVersion) {
  auto first = prepare(0);
  auto again = prepare(0);
  EXPECT_EQ(again.value.record.version, first.value.record.version);
  EXPECT_EQ(again.value.primary, first.value.primary);
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  auto later = prepare(0);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later.value.record.version, first.value.record.version + 1);
}

TEST_F(ChunkManagerTest, ConcurrentCallersForOneChunkGetOneAllocation) {
  auto a = manager.prepareWrite(file, 5);
  auto b = manager.prepareWrite(file, 5);
  auto ra = a.wait(io.waitScope);
  auto rb = b.wait(io.waitScope);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(ra.value.record.handle, rb.value.record.handle);
  EXPECT_EQ(ra.value.record.version, rb.value.record.version);
}

TEST_F(ChunkManagerTest, AReplicaThatMissesTheBumpIsDropped) {
  auto first = prepare(0);
  uint64_t handle = first.value.record.handle;
  std::vector<uint64_t> holders;
  for (auto& rep : first.value.replicas) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (rep.address == "127.0.0." + std::to_string(i + 2) + ":1") holders.push_back(ids[i]);
    }
  }
  control.down.insert(holders[1]);
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  auto second = prepare(0);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second.value.replicas.size(), 2u);
  // It comes back with the old version: stale, never listed, queued for deletion.
  control.down.clear();
  manager.registerServer("127.0.0." + std::to_string(holders[1] + 1) + ":1", "r", 1 << 30, 0,
                         {{handle, first.value.record.version, 10}});
  auto view = manager.locate(file, 0, 1);
  EXPECT_EQ(view[0].replicas.size(), 2u);
  std::vector<uint64_t> deletes;
  ASSERT_TRUE(manager.heartbeat(holders[1], 1 << 30, 0, deletes));
  EXPECT_EQ(deletes, std::vector<uint64_t>{handle});
}

TEST_F(ChunkManagerTest, AReplicaLostUnderALeaseForcesANewVersion) {
  // Writes made after a replica is declared dead must not share its version: otherwise it
  // could come back "current" without them.
  auto first = prepare(0);
  ASSERT_TRUE(first.ok());
  std::string gone = first.value.replicas[1].address;
  uint64_t goneId = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (gone == "127.0.0." + std::to_string(i + 2) + ":1") goneId = ids[i];
  }
  timer.advanceTo(timer.now() + 20 * kj::SECONDS);
  for (auto id : ids) {
    std::vector<uint64_t> d;
    if (id != goneId) manager.heartbeat(id, 1 << 30, 0, d);
  }
  timer.advanceTo(timer.now() + 15 * kj::SECONDS);  // the lease (60 s) is still valid
  EXPECT_EQ(manager.sweepDeadServers(), 1u);
  auto second = prepare(0);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second.value.record.version, first.value.record.version);
  // It returns with the old version: stale, not a replica.
  manager.registerServer(gone, "r", 1 << 30, 0,
                         {{first.value.record.handle, first.value.record.version, 10}});
  auto views = manager.locate(file, 0, 1);
  for (auto& r : views[0].replicas) EXPECT_NE(r.address, gone);
}

TEST_F(ChunkManagerTest, SilentServersAreDeclaredDead) {
  auto r = prepare(0);
  timer.advanceTo(timer.now() + 20 * kj::SECONDS);
  heartbeatAll();
  EXPECT_EQ(manager.sweepDeadServers(), 0u);
  // Only the first server keeps sending heartbeats.
  timer.advanceTo(timer.now() + 20 * kj::SECONDS);
  std::vector<uint64_t> deletes;
  manager.heartbeat(ids[0], 1 << 30, 0, deletes);
  timer.advanceTo(timer.now() + 15 * kj::SECONDS);
  EXPECT_EQ(manager.sweepDeadServers(), 3u);
  auto view = manager.locate(file, 0, 1);
  for (auto& rep : view[0].replicas) EXPECT_EQ(rep.address, "127.0.0.2:1");
  // A dead server's heartbeat is refused: it must register again with a full report.
  EXPECT_FALSE(manager.heartbeat(ids[1], 1 << 30, 0, deletes));
}

TEST_F(ChunkManagerTest, OrphansAndReleasedChunksAreDeleted) {
  auto r = prepare(0);
  uint64_t handle = r.value.record.handle;
  uint64_t id = manager.registerServer("127.0.0.2:1", "r", 1 << 30, 0, {{999, 1, 0}});
  std::vector<uint64_t> deletes;
  manager.heartbeat(id, 1 << 30, 0, deletes);
  EXPECT_EQ(deletes, std::vector<uint64_t>{999});
  auto unlinked = ns.unlink(ROOT_INODE, "f").wait(io.waitScope);
  manager.release(unlinked.releasedHandles);
  size_t queued = 0;
  for (auto sid : ids) {
    std::vector<uint64_t> d;
    manager.heartbeat(sid, 1 << 30, 0, d);
    queued += std::count(d.begin(), d.end(), handle);
  }
  // The first server re-registered without the chunk; every other holder deletes it.
  size_t others = 0;
  for (auto& rep : r.value.replicas) others += rep.address != "127.0.0.2:1";
  EXPECT_EQ(queued, others);
}

TEST_F(ChunkManagerTest, NoLiveServersIsAClearError) {
  control.down = {ids[0], ids[1], ids[2], ids[3]};
  auto r = prepare(0);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), ErrorCode::UNAVAILABLE);
}

TEST_F(ChunkManagerTest, ADeadServersChunksAreCopiedMostUrgentFirstWithinLimits) {
  ChunkManagerOptions options;
  options.copiesPerServer = 1;
  ChunkManager limited(ns, control, timer, options);
  std::vector<uint64_t> sids;
  for (int i = 0; i < 4; ++i) {
    sids.push_back(
        limited.registerServer("10.0.0." + std::to_string(i) + ":1", "r", 1 << 30, 0, {}));
  }
  for (uint32_t i = 0; i < 6; ++i)
    ASSERT_TRUE(limited.prepareWrite(file, i).wait(io.waitScope).ok());
  // Let the leases lapse, then lose server 0.
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  for (size_t k = 1; k < 4; ++k) {
    std::vector<uint64_t> d;
    limited.heartbeat(sids[k], 1 << 30, 0, d);
  }
  timer.advanceTo(timer.now() + 10 * kj::SECONDS);
  for (size_t k = 1; k < 4; ++k) {
    std::vector<uint64_t> d;
    limited.heartbeat(sids[k], 1 << 30, 0, d);
  }
  limited.sweepDeadServers();
  auto before = limited.health();
  EXPECT_GT(before.underReplicated, 0u);
  limited.tick();
  // Three live servers, one copy each at a time: at most one copy (a source and a target)
  // per pair, so no more than one copy per server is in flight.
  EXPECT_LE(control.copies, 2);
  EXPECT_GT(control.copies, 0);
  for (int round = 0; round < 20; ++round) {
    settle();
    for (size_t k = 1; k < 4; ++k) {
      std::vector<uint64_t> d;
      limited.heartbeat(sids[k], 1 << 30, 0, d);
    }
    limited.tick();
  }
  settle();
  auto after = limited.health();
  EXPECT_EQ(after.underReplicated, 0u) << "copies " << control.copies;
  EXPECT_EQ(after.missing, 0u);
  for (auto& v : limited.locate(file, 0, 6)) EXPECT_EQ(v.replicas.size(), 3u);
}

TEST_F(ChunkManagerTest, ARepairCopyGoesToTheRackThatLostItsReplica) {
  // Three racks of two servers: each chunk has a replica on each rack. When a server dies,
  // its chunks' new copies go to the other server of its rack (which has free copy slots),
  // never next to a replica that stays.
  ChunkManagerOptions options = noAudit();
  options.copiesPerServer = 20;
  ChunkManager racked(ns, control, timer, options);
  std::map<uint64_t, std::string> rackOf;
  std::map<std::string, std::string> rackOfAddress;
  for (int i = 0; i < 6; ++i) {
    std::string rack = std::string(1, static_cast<char>('a' + i / 2));
    std::string address = "10.0.1." + std::to_string(i) + ":1";
    rackOf[racked.registerServer(address, rack, 1 << 30, 0, {})] = rack;
    rackOfAddress[address] = rack;
  }
  auto racksOf = [&](const ChunkView& v) {
    std::multiset<std::string> racks;
    for (auto& r : v.replicas) racks.insert(rackOfAddress[r.address]);
    return racks;
  };
  const std::multiset<std::string> spread{"a", "b", "c"};
  for (uint32_t i = 0; i < 20; ++i) {
    auto r = racked.prepareWrite(file, i).wait(io.waitScope);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(racksOf(r.value), spread);
  }
  uint64_t victim = rackOf.begin()->first;
  auto beat = [&]() {
    for (auto& [id, rack] : rackOf) {
      std::vector<uint64_t> d;
      if (id != victim) racked.heartbeat(id, 1 << 30, 0, d);
    }
  };
  for (int second = 0; second < 61; ++second) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    beat();
  }
  racked.tick();
  for (int round = 0; round < 10; ++round) {
    settle();
    beat();
    racked.tick();
  }
  EXPECT_EQ(racked.health().underReplicated, 0u);
  for (auto& v : racked.locate(file, 0, 20)) EXPECT_EQ(racksOf(v), spread) << v.record.handle;
}

TEST_F(ChunkManagerTest, ARepairCopyWaitsForARackRatherThanLeaveItsChunkOnOne) {
  // Goal 3 over racks a (three servers) and b (two): each chunk has a replica on each
  // rack, the third on either. b1 dies, and b2 takes one copy at a time: a chunk left with
  // two copies on rack a waits for it rather than take a third there.
  ChunkManagerOptions options = noAudit();
  options.copiesPerServer = 1;
  ChunkManager racked(ns, control, timer, options);
  std::map<std::string, std::string> rackOfAddress;
  std::map<uint64_t, std::string> address;
  for (auto [name, rack] : std::vector<std::pair<std::string, std::string>>{
           {"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"b1", "b"}, {"b2", "b"}}) {
    std::string a = "10.0.3." + std::to_string(address.size() + 1) + ":1";
    rackOfAddress[a] = rack;
    address[racked.registerServer(a, rack, 1 << 30, 0, {})] = name;
  }
  auto racksOf = [&](const ChunkView& v) {
    std::set<std::string> racks;
    for (auto& r : v.replicas) racks.insert(rackOfAddress[r.address]);
    return racks;
  };
  uint64_t victim = 0;
  for (auto& [id, name] : address) {
    if (name == "b1") victim = id;
  }
  size_t leftOnA = 0;  // chunks that b1's death leaves on rack a only
  for (uint32_t i = 0; i < 16; ++i) {
    auto r = racked.prepareWrite(file, i).wait(io.waitScope);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(racksOf(r.value), (std::set<std::string>{"a", "b"}));
    size_t onB = 0;
    bool onVictim = false;
    for (auto& rep : r.value.replicas) {
      onB += rackOfAddress[rep.address] == "b";
      onVictim |= rep.address == "10.0.3.4:1";
    }
    leftOnA += onVictim && onB == 1;
  }
  ASSERT_GT(leftOnA, 1u);  // more than b2's one slot can take at once
  auto beat = [&]() {
    for (auto& [id, name] : address) {
      std::vector<uint64_t> d;
      if (id != victim) racked.heartbeat(id, 1 << 30, 0, d);
    }
  };
  for (int second = 0; second < 61; ++second) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    beat();
  }
  for (int round = 0; round < 40; ++round) {
    racked.tick();
    for (auto& v : racked.locate(file, 0, 16)) {
      ASSERT_TRUE(v.replicas.size() < 3 || racksOf(v).count("b"))
          << "a third replica on rack a, round " << round;
    }
    settle();
    beat();
  }
  EXPECT_EQ(racked.health().underReplicated, 0u);
  for (auto& v : racked.locate(file, 0, 16)) {
    EXPECT_EQ(v.replicas.size(), 3u);
    EXPECT_EQ(racksOf(v), (std::set<std::string>{"a", "b"})) << v.record.handle;
  }
}

TEST_F(ChunkManagerTest, ALowerGoalKeepsTheChunkOnAsManyRacks) {
  // Five replicas on racks a, a, b, b, c; at goal 3 they stay on a, b and c.
  ASSERT_TRUE(ns.setReplication(file, 5).wait(io.waitScope).status.ok());
  ChunkManager racked(ns, control, timer, noAudit());
  std::map<std::string, std::string> rackOfAddress;
  std::vector<uint64_t> sids;
  for (std::string rack : {"a", "a", "b", "b", "c"}) {
    std::string a = "10.0.4." + std::to_string(sids.size() + 1) + ":1";
    rackOfAddress[a] = rack;
    sids.push_back(racked.registerServer(a, rack, 1 << 30, 0, {}));
  }
  for (uint32_t i = 0; i < 12; ++i) {
    auto r = racked.prepareWrite(file, i).wait(io.waitScope);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.value.replicas.size(), 5u);
  }
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);  // the leases lapse
  for (auto id : sids) {
    std::vector<uint64_t> d;
    racked.heartbeat(id, 1 << 30, 0, d);
  }
  ASSERT_TRUE(ns.setReplication(file, 3).wait(io.waitScope).status.ok());
  racked.goalChanged(file, 3);
  racked.tick();
  for (auto& v : racked.locate(file, 0, 12)) {
    std::set<std::string> racks;
    for (auto& r : v.replicas) racks.insert(rackOfAddress[r.address]);
    EXPECT_EQ(v.replicas.size(), 3u);
    EXPECT_EQ(racks, (std::set<std::string>{"a", "b", "c"})) << v.record.handle;
  }
}

TEST_F(ChunkManagerTest, BalancingNeverLeavesAChunkOnFewerRacks) {
  // Each chunk on racks a, b and c; then an empty server joins rack a. Only a move from
  // the other server of rack a keeps the spread. With a budget of looks a tick as large as
  // every chunk, and as small as one or three: the balancer goes on where it stopped.
  for (size_t budget : {size_t{20000}, size_t{3}, size_t{1}}) {
    SCOPED_TRACE(budget);
    ChunkManagerOptions options = noAudit();
    options.balanceLooksPerTick = budget;
    ChunkManager racked(ns, control, timer, options);
    std::map<std::string, std::string> rackOfAddress;
    auto join = [&](int host, const std::string& rack) {
      std::string address = fmt::format("10.0.{}.{}:1", budget % 250, host);
      rackOfAddress[address] = rack;
      return racked.registerServer(address, rack, 1 << 30, 0, {});
    };
    std::vector<uint64_t> sids{join(1, "a"), join(2, "b"), join(3, "c")};
    uint64_t f = ns.create(ROOT_INODE, fmt::format("balanced{}", budget), 0644, 0, 0, 3, true)
                     .wait(io.waitScope)
                     .inode.inode;
    for (uint32_t i = 0; i < 12; ++i)
      ASSERT_TRUE(racked.prepareWrite(f, i).wait(io.waitScope).ok());
    timer.advanceTo(timer.now() + 61 * kj::SECONDS);  // the leases lapse
    sids.push_back(join(4, "a"));
    racked.balance(0.1);
    size_t ticks = 0;
    uint64_t looks = 0;
    while (racked.balancing() && ticks < 200) {
      for (auto id : sids) {
        std::vector<uint64_t> d;
        racked.heartbeat(id, 1 << 30, 0, d);
      }
      racked.tick();
      ++ticks;
      uint64_t now = racked.repairs().balancerLooks;
      // Each source its share of the budget, one chunk at least (three sources here).
      EXPECT_LE(now - looks, std::max<size_t>(budget, 3)) << "tick " << ticks;
      looks = now;
      if (racked.health().copiesInFlight > 0) settle();
    }
    // It moved chunks from the other server of rack a until the two hold as many, then
    // stopped once it had looked at every chunk of b and c: a move from either would leave
    // a rack.
    EXPECT_FALSE(racked.balancing());
    EXPECT_GE(looks, 6u + 24u);
    std::map<std::string, size_t> held;
    for (auto& s : racked.servers()) held[s.address] = s.chunkCount;
    EXPECT_EQ(held[fmt::format("10.0.{}.1:1", budget % 250)], 6u);
    EXPECT_EQ(held[fmt::format("10.0.{}.4:1", budget % 250)], 6u);
    for (auto& v : racked.locate(f, 0, 12)) {
      std::set<std::string> racks;
      for (auto& r : v.replicas) racks.insert(rackOfAddress[r.address]);
      EXPECT_EQ(racks, (std::set<std::string>{"a", "b", "c"})) << v.record.handle;
    }
  }
}

TEST_F(ChunkManagerTest, ChunksOnOneRackMoveToAnotherOnceItHasRoom) {
  // Two servers on rack a hold every chunk (goal 2); a server of rack b joins full, then
  // has room: the audit finds the chunks, each gets a copy on b and then loses one of its
  // copies on a, and none ever has fewer than two. A copy that fails waits to be tried again.
  ChunkManagerOptions options = noAudit();
  options.auditPerTick = 100;
  options.minFreeBytes = 1 << 20;
  ChunkManager m(ns, control, timer, options);
  std::map<std::string, std::string> rackOf;
  std::vector<uint64_t> sids;
  auto join = [&](const std::string& address, const std::string& rack, uint64_t used) {
    rackOf[address] = rack;
    sids.push_back(m.registerServer(address, rack, 1 << 30, used, {}));
  };
  join("10.3.0.1:1", "a", 0);
  join("10.3.0.2:1", "a", 0);
  uint64_t f =
      ns.create(ROOT_INODE, "one-rack", 0644, 0, 0, 2, true).wait(io.waitScope).inode.inode;
  for (uint32_t i = 0; i < 8; ++i) ASSERT_TRUE(m.prepareWrite(f, i).wait(io.waitScope).ok());
  join("10.3.0.3:1", "b", 1 << 30);
  uint64_t bUsed = 1 << 30;
  auto second = [&]() {
    timer.advanceTo(timer.now() + kj::SECONDS);
    for (size_t i = 0; i < sids.size(); ++i) {
      std::vector<uint64_t> d;
      m.heartbeat(sids[i], 1 << 30, i == 2 ? bUsed : 0, d);
    }
    m.tick();
    if (m.health().copiesInFlight > 0) settle();
    for (auto& v : m.locate(f, 0, 8)) ASSERT_GE(v.replicas.size(), 2u) << v.record.handle;
  };
  auto racksOf = [&](const ChunkView& v) {
    std::multiset<std::string> racks;
    for (auto& r : v.replicas) racks.insert(rackOf[r.address]);
    return racks;
  };
  for (int i = 0; i < 70; ++i) second();  // the leases lapse; b has no room
  for (auto& v : m.locate(f, 0, 8)) EXPECT_EQ(racksOf(v), (std::multiset<std::string>{"a", "a"}));
  EXPECT_EQ(control.copies, 0);
  EXPECT_EQ(m.health().onOneRack, 0u);  // no other rack has room
  // b has room but its copies fail: each chunk is tried once, then again after ten minutes.
  control.down.insert(sids[2]);
  bUsed = 0;
  second();
  EXPECT_GT(m.health().onOneRack, 0u);  // found, and waiting for a slot on b
  for (int i = 0; i < 60; ++i) second();
  EXPECT_EQ(control.copies, 8);
  control.down.clear();
  for (int i = 0; i < 600; ++i) second();
  EXPECT_EQ(m.health().onOneRack, 0u);
  for (auto& v : m.locate(f, 0, 8)) {
    EXPECT_EQ(racksOf(v), (std::multiset<std::string>{"a", "b"})) << v.record.handle;
  }
  EXPECT_EQ(control.copies, 16);
  auto h = m.health();
  EXPECT_EQ(h.overReplicated + h.underReplicated + h.copiesInFlight, 0u);
  EXPECT_EQ(m.offGoalUnattended(), 0u);
}

TEST_F(ChunkManagerTest, TheBalancerGoesOnPastChunksItCannotMove) {
  // Six chunks on all four servers, then six more on the first three while the fourth is
  // away: back, the fourth is the emptiest, and each fuller server's first six chunks are
  // ones it holds already. A balancer that looks at one chunk a tick must go past them.
  ChunkManagerOptions options = noAudit();
  options.balanceLooksPerTick = 1;
  ChunkManager m(ns, control, timer, options);
  std::vector<uint64_t> sids;
  for (int i = 1; i <= 4; ++i)
    sids.push_back(m.registerServer(fmt::format("10.2.0.{}:1", i), "r", 1 << 30, 0, {}));
  auto heartbeats = [&](size_t servers) {
    for (size_t i = 0; i < servers; ++i) {
      std::vector<uint64_t> d;
      m.heartbeat(sids[i], 1 << 30, 0, d);
    }
  };
  auto passSeconds = [&](int seconds, size_t servers) {
    for (int i = 0; i < seconds; ++i) {
      timer.advanceTo(timer.now() + kj::SECONDS);
      heartbeats(servers);
    }
  };
  auto fileOf = [&](const char* name, uint8_t goal) {
    uint64_t f = ns.create(ROOT_INODE, name, 0644, 0, 0, goal, true).wait(io.waitScope).inode.inode;
    for (uint32_t i = 0; i < 6; ++i) EXPECT_TRUE(m.prepareWrite(f, i).wait(io.waitScope).ok());
    return f;
  };
  uint64_t everywhere = fileOf("everywhere", 4);
  passSeconds(61, 4);  // the leases lapse
  passSeconds(31, 3);
  ASSERT_EQ(m.sweepDeadServers(), 1u);
  uint64_t onThree = fileOf("on-three", 3);
  passSeconds(61, 3);
  std::vector<ChunkReportEntry> report;
  for (auto& v : m.locate(everywhere, 0, 6))
    report.push_back({v.record.handle, v.record.version, 10});
  m.registerServer("10.2.0.4:1", "r", 1 << 30, 0, report);
  auto countOn = [&](const std::string& address) {
    for (auto& s : m.servers())
      if (s.address == address) return s.chunkCount;
    return size_t{0};
  };
  ASSERT_EQ(countOn("10.2.0.4:1"), 6u);
  ASSERT_EQ(countOn("10.2.0.1:1"), 12u);
  m.balance(0.1);
  for (int tick = 0; tick < 200 && m.balancing(); ++tick) {
    heartbeats(4);
    m.tick();
    if (m.health().copiesInFlight > 0) settle();
  }
  EXPECT_FALSE(m.balancing());
  // 42 replicas on four servers: 10 or 11 each.
  for (int i = 1; i <= 4; ++i) {
    size_t n = countOn(fmt::format("10.2.0.{}:1", i));
    EXPECT_GE(n, 10u) << i;
    EXPECT_LE(n, 11u) << i;
  }
  for (auto& v : m.locate(onThree, 0, 6)) EXPECT_EQ(v.replicas.size(), 3u);
  for (auto& v : m.locate(everywhere, 0, 6)) EXPECT_EQ(v.replicas.size(), 4u);
}

TEST_F(ChunkManagerTest, ATickLooksOnlyAtChunksSomethingMovedOffTheirGoal) {
  for (uint32_t i = 0; i < 20; ++i) ASSERT_TRUE(prepare(i).ok());
  manager.tick();
  EXPECT_EQ(manager.awaitingAttention(), 0u);  // all at their goal: nothing to look at
  // One server dies: its chunks, and only they, are in line.
  uint64_t victim = ids[0];
  size_t onVictim = 0;
  for (auto& v : manager.locate(file, 0, 20)) {
    for (auto& r : v.replicas) onVictim += idOf(r.address) == victim;
  }
  ASSERT_GT(onVictim, 0u);
  for (int second = 0; second < 31; ++second) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    heartbeatAll(victim);
  }
  manager.tick();
  settle();
  EXPECT_EQ(manager.awaitingAttention(), onVictim);
  EXPECT_EQ(manager.health().underReplicated, onVictim);
  // Repaired (once the idle leases are revoked), they leave the line.
  for (int second = 0; second < 10 && manager.awaitingAttention() > 0; ++second) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    heartbeatAll(victim);
    manager.tick();
    settle();
  }
  EXPECT_EQ(manager.awaitingAttention(), 0u);
  EXPECT_EQ(manager.health().underReplicated, 0u);
  EXPECT_EQ(control.copies, static_cast<int>(onVictim));
  // A goal raised: the file's chunks are in line at once.
  ASSERT_TRUE(ns.setReplication(file, 4).wait(io.waitScope).status.ok());
  manager.goalChanged(file, 4);
  EXPECT_EQ(manager.awaitingAttention(), 20u);
}

TEST_F(ChunkManagerTest, SafeModeHoldsDeletionsUntilTheReportsCoverTheNamespace) {
  auto r = prepare(0);
  uint64_t handle = r.value.record.handle;
  ChunkManager restarted(ns, control, timer, ChunkManagerOptions{});
  restarted.loadFromNamespace();
  EXPECT_TRUE(restarted.inSafeMode());
  EXPECT_EQ(restarted.prepareWrite(file, 0).wait(io.waitScope).status.code(), ErrorCode::SAFE_MODE);
  uint64_t id = restarted.registerServer("10.1.0.1:1", "r", 1 << 30, 0,
                                         {{handle, r.value.record.version, 5}, {777, 1, 0}});
  EXPECT_FALSE(restarted.inSafeMode());  // its one chunk is reported
  std::vector<uint64_t> deletes;
  restarted.heartbeat(id, 1 << 30, 0, deletes);
  EXPECT_EQ(deletes, std::vector<uint64_t>{777});  // the orphan goes only now
}

TEST_F(ChunkManagerTest, ALeaseIsKeptInMemoryOnlyUntilItExpires) {
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(prepare(i).ok());
  EXPECT_EQ(manager.activeChunks(), 3u);
  EXPECT_EQ(manager.leasesHeld(), 3u);
  manager.tick();  // the leases still run
  EXPECT_EQ(manager.activeChunks(), 3u);
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  manager.tick();
  EXPECT_EQ(manager.activeChunks(), 0u);
  EXPECT_EQ(manager.leasesHeld(), 0u);
  // The next write takes a new lease under a new version, as after any expiry.
  uint64_t before = ns.getChunk(file, 0)->version;
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value.record.version, before + 1);
  EXPECT_FALSE(r.value.primary.empty());
}

TEST_F(ChunkManagerTest, AfterAStartEveryChunkIsLookedAtOnceInBatches) {
  // Ten chunks, of which the restarted master will hear of none from the fourth server's
  // report: 0..4 on three servers, 5..9 on two only.
  std::vector<ChunkReportEntry> full, partial;
  for (uint32_t i = 0; i < 10; ++i) {
    auto r = prepare(i);
    ASSERT_TRUE(r.ok());
    ChunkReportEntry e{r.value.record.handle, r.value.record.version, 0};
    full.push_back(e);
    if (i < 5) partial.push_back(e);
  }
  ChunkManagerOptions o = noAudit();
  o.startupCheckPerTick = 4;
  ChunkManager restarted(ns, control, timer, o);
  restarted.loadFromNamespace();
  EXPECT_EQ(restarted.uncheckedSinceStart(), 10u);
  std::vector<uint64_t> restartedIds;
  for (int i = 0; i < 4; ++i) {
    restartedIds.push_back(restarted.registerServer("127.0.0." + std::to_string(i + 2) + ":1", "r",
                                                    1 << 30, 0,
                                                    i < 2    ? full
                                                    : i == 2 ? partial
                                                             : std::vector<ChunkReportEntry>{}));
  }
  ASSERT_FALSE(restarted.inSafeMode());
  // Registrations put the reported chunks in line; the check after the start finds the
  // others, four a tick.
  size_t ticks = 0;
  while (restarted.uncheckedSinceStart() > 0) {
    size_t before = restarted.uncheckedSinceStart();
    restarted.tick();
    EXPECT_EQ(restarted.uncheckedSinceStart(), before - std::min<size_t>(before, 4));
    EXPECT_EQ(restarted.offGoalUnattended(), 0u);
    ++ticks;
    settle();
  }
  EXPECT_EQ(ticks, 3u);
  // Every chunk with two replicas gets its third.
  for (int round = 0; round < 10 && restarted.health().underReplicated > 0; ++round) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    for (auto id : restartedIds) {
      std::vector<uint64_t> deletes;
      restarted.heartbeat(id, 1 << 30, 0, deletes);
    }
    restarted.tick();
    settle();
  }
  EXPECT_EQ(restarted.health().underReplicated, 0u);
  EXPECT_EQ(restarted.offGoalUnattended(), 0u);
}

TEST_F(ChunkManagerTest, AFilesGoalIsKnownFromTheStart) {
  // A file at goal 2 whose chunk has two replicas is at its goal after a restart: nothing
  // is copied, nothing removed.
  ASSERT_TRUE(ns.setReplication(file, 2).wait(io.waitScope).status.ok());
  manager.goalChanged(file, 2);
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  ChunkReportEntry e{r.value.record.handle, r.value.record.version, 0};
  ChunkManager restarted(ns, control, timer, noAudit());
  restarted.loadFromNamespace();
  for (int i = 0; i < 4; ++i) {
    restarted.registerServer(
        "127.0.0." + std::to_string(i + 2) + ":1", "r", 1 << 30, 0,
        i < 2 ? std::vector<ChunkReportEntry>{e} : std::vector<ChunkReportEntry>{});
  }
  int copiesBefore = control.copies;
  restarted.tick();
  settle();
  EXPECT_EQ(control.copies, copiesBefore);
  EXPECT_EQ(restarted.health().underReplicated, 0u);
  EXPECT_EQ(restarted.health().overReplicated, 0u);
  EXPECT_EQ(restarted.awaitingAttention(), 0u);
  EXPECT_EQ(restarted.offGoalUnattended(), 0u);
}

TEST_F(ChunkManagerTest, AnIdleLeaseIsRevokedUnderANewVersionBeforeACopy) {
  auto r = prepare(0);
  uint64_t version = r.value.record.version;
  ASSERT_TRUE(ns.setReplication(file, 4).wait(io.waitScope).status.ok());
  manager.goalChanged(file, 4);
  manager.tick();  // the lease is fresh: the chunk waits
  EXPECT_EQ(control.copies, 0);
  timer.advanceTo(timer.now() + 5 * kj::SECONDS);
  heartbeatAll();
  manager.tick();  // idle: revoked, the version moves on
  settle();
  EXPECT_EQ(ns.getChunk(file, 0)->version, version + 1);
  manager.tick();  // now the copy
  settle();
  EXPECT_EQ(control.copies, 1);
  EXPECT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 4u);
}

TEST_F(ChunkManagerTest, AWriteThatFailsOnEveryReplicaDropsNone) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  auto after =
      manager
          .prepareWrite(
              file, 0,
              failing(r.value, {ErrorCode::NO_SPACE, ErrorCode::NO_SPACE, ErrorCode::NO_SPACE}),
              r.value.record.version)
          .wait(io.waitScope);
  EXPECT_EQ(after.status.code(), ErrorCode::NO_SPACE);
  auto view = manager.locate(file, 0, 1)[0];
  EXPECT_EQ(view.replicas.size(), 3u);
  EXPECT_EQ(view.record.version, r.value.record.version);
  for (auto id : ids) EXPECT_TRUE(deletesFor(id).empty());
  // The same with I/O errors: nothing leaves, the writer hears of it.
  after =
      manager
          .prepareWrite(
              file, 0,
              failing(r.value, {ErrorCode::IO_ERROR, ErrorCode::UNAVAILABLE, ErrorCode::IO_ERROR}),
              r.value.record.version)
          .wait(io.waitScope);
  EXPECT_FALSE(after.ok());
  EXPECT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 3u);
}

TEST_F(ChunkManagerTest, AFailedReplicaLeavesUnderANewVersion) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  std::string bad = r.value.replicas[1].address;
  auto after = manager
                   .prepareWrite(file, 0, failing(r.value, {ErrorCode::OK, ErrorCode::IO_ERROR}),
                                 r.value.record.version)
                   .wait(io.waitScope);
  ASSERT_TRUE(after.ok()) << after.status.toString();
  EXPECT_EQ(after.value.replicas.size(), 2u);
  EXPECT_GT(after.value.record.version, r.value.record.version);
  for (auto& rep : after.value.replicas) EXPECT_NE(rep.address, bad);
  EXPECT_EQ(deletesFor(idOf(bad)), std::vector<uint64_t>{r.value.record.handle});
  // A report about the old version, arriving late, changes nothing more.
  auto late = manager
                  .prepareWrite(file, 0, failing(after.value, {ErrorCode::IO_ERROR}),
                                r.value.record.version)
                  .wait(io.waitScope);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late.value.replicas.size(), 2u);
}

TEST_F(ChunkManagerTest, AFullReplicaStaysWhileNoOtherServerHasRoom) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  std::string full = r.value.replicas[0].address;
  // The one server without a replica is full too.
  for (auto id : ids) deletesFor(id, 0);
  auto after =
      manager.prepareWrite(file, 0, failing(r.value, {ErrorCode::NO_SPACE}), r.value.record.version)
          .wait(io.waitScope);
  EXPECT_EQ(after.status.code(), ErrorCode::NO_SPACE);
  EXPECT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 3u);
  // With room elsewhere, the full replica leaves and re-replication can put it there.
  for (auto id : ids) deletesFor(id, 1 << 30);
  after =
      manager.prepareWrite(file, 0, failing(r.value, {ErrorCode::NO_SPACE}), r.value.record.version)
          .wait(io.waitScope);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after.value.replicas.size(), 2u);
  for (auto& rep : after.value.replicas) EXPECT_NE(rep.address, full);
}

TEST_F(ChunkManagerTest, AStaleCopyIsKeptWhileNoCurrentReplicaIsLive) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle;
  uint64_t a = idOf(r.value.replicas[0].address), b = idOf(r.value.replicas[1].address),
           c = idOf(r.value.replicas[2].address);
  // A write fails through `a`: it leaves, and b and c move to a new version.
  auto after =
      manager.prepareWrite(file, 0, failing(r.value, {ErrorCode::IO_ERROR}), r.value.record.version)
          .wait(io.waitScope);
  ASSERT_TRUE(after.ok());
  // All three go silent; a comes back first, with its stale copy, which is now all there is.
  timer.advanceTo(timer.now() + 31 * kj::SECONDS);
  for (auto id : ids) {
    if (id != a && id != b && id != c) deletesFor(id);
  }
  manager.sweepDeadServers();
  manager.registerServer(r.value.replicas[0].address, "r", 1 << 30, 0,
                         {{handle, r.value.record.version, 10}});
  EXPECT_TRUE(deletesFor(a).empty()) << "the last copy of a chunk was deleted";
  // b comes back current: now the stale copy may go.
  manager.registerServer(r.value.replicas[1].address, "r", 1 << 30, 0,
                         {{handle, after.value.record.version, 10}});
  EXPECT_EQ(deletesFor(a), std::vector<uint64_t>{handle});
}

TEST_F(ChunkManagerTest, TheLastCorruptReplicaIsKept) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  auto& v = r.value;
  manager.reportBadReplica(v.record.handle, v.record.version, v.replicas[0].address);
  manager.reportBadReplica(v.record.handle, v.record.version, v.replicas[1].address);
  EXPECT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 1u);
  manager.reportCorrupt(idOf(v.replicas[2].address), v.record.handle);
  auto view = manager.locate(file, 0, 1)[0];
  ASSERT_EQ(view.replicas.size(), 1u) << "the last replica must stay, however bad";
  EXPECT_EQ(manager.health().corrupt, 1u);
  EXPECT_TRUE(deletesFor(idOf(v.replicas[2].address)).empty());
}

TEST_F(ChunkManagerTest, ATruncateThatFailsEverywhereKeepsTheVersion) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  control.down = {ids[0], ids[1], ids[2], ids[3]};
  Status s = manager.truncateChunk(file, 1000, []() { return kj::Promise<Status>(Status::OK()); })
                 .wait(io.waitScope);
  EXPECT_FALSE(s.ok());
  control.down.clear();
  auto view = manager.locate(file, 0, 1)[0];
  EXPECT_EQ(view.replicas.size(), 3u);
  EXPECT_EQ(view.record.version, r.value.record.version);
  EXPECT_EQ(ns.getChunk(file, 0)->version, r.value.record.version);
}

TEST_F(ChunkManagerTest, ATruncateCommitsTheNewSizeBeforeAnyReplicaIsCut) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle;
  auto cutAnywhere = [&]() { return !control.cutsAt.empty(); };
  // The size cannot be recorded: nothing is cut.
  Status refused =
      manager
          .truncateChunk(file, 1000,
                         []() { return kj::Promise<Status>(Status::noSpace("log full")); })
          .wait(io.waitScope);
  EXPECT_EQ(refused.code(), ErrorCode::NO_SPACE);
  EXPECT_FALSE(cutAnywhere());  // the leases ended (a new version), nothing else
  EXPECT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 3u);
  // Recorded first, then cut.
  bool committed = false;
  Status s = manager
                 .truncateChunk(file, 1000,
                                [&]() {
                                  EXPECT_FALSE(cutAnywhere());
                                  // Every replica moved to a new version first: a write
                                  // under the old lease cannot land after the new size.
                                  for (auto& rep : r.value.replicas) {
                                    EXPECT_GT((control.versions[{idOf(rep.address), handle}]),
                                              r.value.record.version);
                                  }
                                  committed = true;
                                  return kj::Promise<Status>(Status::OK());
                                })
                 .wait(io.waitScope);
  ASSERT_TRUE(s.ok()) << s.toString();
  EXPECT_TRUE(committed);
  EXPECT_TRUE(cutAnywhere());
}

TEST_F(ChunkManagerTest, ATruncateOfAChunkWithNoLiveReplicaChangesNothing) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  manager.tick();  // no heartbeats: every server is dead
  bool committed = false;
  Status s = manager
                 .truncateChunk(file, 1000,
                                [&]() {
                                  committed = true;
                                  return kj::Promise<Status>(Status::OK());
                                })
                 .wait(io.waitScope);
  EXPECT_EQ(s.code(), ErrorCode::UNAVAILABLE);
  EXPECT_FALSE(committed);
}

// A truncate whose size is recorded but whose cut no replica made: the cut is owed.
class OwedCutTest : public ChunkManagerTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(prepare(0).ok());
    SetAttrArgs full;
    full.size = 1 << 20;
    ASSERT_TRUE(ns.setattr(file, full).wait(io.waitScope).status.ok());
    control.cutsFail = true;
    Status s = manager
                   .truncateChunk(file, 1000,
                                  [this]() {
                                    SetAttrArgs cut;
                                    cut.size = 1000;
                                    return ns.setattr(file, cut).then(
                                        [](MutationResult r) { return r.status; });
                                  })
                   .wait(io.waitScope);
    ASSERT_FALSE(s.ok());
    ASSERT_EQ(ns.getattr(file).value.size, 1000u);  // the size is recorded...
    ASSERT_EQ(ns.getChunk(file, 0)->cutAt, 1000u);  // ...and the cut owed
    control.cutsFail = false;
  }
};

TEST_F(OwedCutTest, IsMadeBeforeTheChunkTakesAWrite) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_EQ(control.cutsAt, std::vector<uint32_t>(3, 1000));
  EXPECT_EQ(ns.getChunk(file, 0)->cutAt, 0u);
  EXPECT_EQ(r.value.record.version, ns.getChunk(file, 0)->version);
}

TEST_F(OwedCutTest, IsMadeBeforeTheFileGrows) {
  EXPECT_TRUE(manager.settleCut(file, 1000).wait(io.waitScope).ok());
  EXPECT_EQ(control.cutsAt, std::vector<uint32_t>(3, 1000));
  EXPECT_EQ(ns.getChunk(file, 0)->cutAt, 0u);
  EXPECT_TRUE(manager.settleCut(file, 1000).wait(io.waitScope).ok());  // nothing owed now
  EXPECT_EQ(control.cutsAt.size(), 3u);
}

TEST_F(OwedCutTest, IsTriedAgainByTheTicks) {
  manager.tick();  // not yet: a failed cut waits a second before the next try
  settle();
  EXPECT_TRUE(control.cutsAt.empty());
  timer.advanceTo(timer.now() + kj::SECONDS);
  heartbeatAll();
  manager.tick();
  settle();
  EXPECT_EQ(control.cutsAt, std::vector<uint32_t>(3, 1000));
  EXPECT_EQ(ns.getChunk(file, 0)->cutAt, 0u);
}

TEST_F(OwedCutTest, SurvivesAMasterRestart) {
  // A master that starts from this namespace finds the cut owed and makes it.
  ChunkManager restarted(ns, control, timer, noAudit());
  restarted.loadFromNamespace();
  std::vector<ChunkReportEntry> report{
      {ns.getChunk(file, 0)->handle, ns.getChunk(file, 0)->version, 0}};
  for (int i = 0; i < 4; ++i) {
    restarted.registerServer("127.0.0." + std::to_string(i + 2) + ":1", "r", 1 << 30, 0,
                             i < 3 ? report : std::vector<ChunkReportEntry>{});
  }
  restarted.tick();
  settle();
  EXPECT_FALSE(control.cutsAt.empty());
  EXPECT_EQ(ns.getChunk(file, 0)->cutAt, 0u);
}

TEST_F(ChunkManagerTest, AVersionIsNeverHandedOutTwice) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t v = r.value.record.version;
  // A bump that no replica answers (their answers lost): the chunk stays at v...
  control.down = {ids[0], ids[1], ids[2], ids[3]};
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  EXPECT_FALSE(prepare(0).ok());
  EXPECT_EQ(manager.locate(file, 0, 1)[0].record.version, v);
  // ...and the next bump skips v+1, which a replica may have taken without saying so.
  control.down.clear();
  auto again = prepare(0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value.record.version, v + 2);
}

TEST_F(ChunkManagerTest, AServerThatCreatesTheChunkWithoutAnsweringIsFencedOff) {
  // Two of four servers take the create but their answers are lost: at least one of the
  // three targets is such a server, and holds an empty chunk at version 1.
  control.late = {ids[0], ids[1]};
  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_GT(r.value.record.version, 1u);  // the writes go to a version it never got
  uint64_t handle = r.value.record.handle;
  for (uint64_t late : control.late) {
    if (!control.versions.count(std::make_pair(late, handle))) continue;
    EXPECT_EQ(control.versions[std::make_pair(late, handle)], 1u);
    std::string address = "127.0.0." + std::to_string(late + 1) + ":1";
    manager.registerServer(address, "r", 1 << 30, 0, {{handle, 1, 0}});
    for (auto& rep : replicasNow()) EXPECT_NE(rep.address, address);
    EXPECT_EQ(deletesFor(late), std::vector<uint64_t>{handle});
  }
}

TEST_F(ChunkManagerTest, AServerDeclaredDeadWhileCreatingTheChunkIsFencedOff) {
  // Two of four servers are slow to answer the create; before they do, they are declared
  // dead. Their answer (OK) comes after: they hold the chunk at version 1, but the writes
  // go to the live ones only, so those must move to a version the slow ones never got.
  control.hold = {ids[0], ids[1]};
  auto pending = manager.prepareWrite(file, 0);
  settle();
  ASSERT_FALSE(control.held.empty());
  timer.advanceTo(timer.now() + 31 * kj::SECONDS);
  for (auto id : {ids[2], ids[3]}) {
    std::vector<uint64_t> d;
    manager.heartbeat(id, 1 << 30, 0, d);
  }
  EXPECT_EQ(manager.sweepDeadServers(), 2u);
  control.hold.clear();
  for (auto& f : control.held) f->fulfill(Status::OK());
  auto r = pending.wait(io.waitScope);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_GT(r.value.record.version, 1u);
  uint64_t handle = r.value.record.handle;
  for (uint64_t slow : {ids[0], ids[1]}) {
    if (!control.versions.count(std::make_pair(slow, handle))) continue;
    std::string address = "127.0.0." + std::to_string(slow + 1) + ":1";
    for (auto& rep : r.value.replicas) EXPECT_NE(rep.address, address);
    manager.registerServer(address, "r", 1 << 30, 0, {{handle, 1, 0}});
    for (auto& rep : replicasNow()) EXPECT_NE(rep.address, address);
  }
}

TEST_F(ChunkManagerTest, AReplicaDeclaredDeadWhileTheLeaseIsOnItsWayIsLeftBehind) {
  // The leases lapse; the next write moves the chunk to a new version, and while the lease
  // is on its way a replica that took that version is declared dead. It holds the version
  // the lease was for: the writes must go to another, or it would come back current.
  auto first = prepare(0);
  ASSERT_TRUE(first.ok());
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  control.holdLeases = true;
  auto pending = manager.prepareWrite(file, 0);
  settle();
  ASSERT_EQ(control.held.size(), 1u);
  uint64_t handle = first.value.record.handle;
  uint64_t bumped = control.versions[std::make_pair(idOf(first.value.primary), handle)];
  ASSERT_EQ(bumped, first.value.record.version + 1);
  uint64_t leaver = 0;
  for (auto& r : first.value.replicas) {
    if (r.address != first.value.primary) leaver = idOf(r.address);
  }
  timer.advanceTo(timer.now() + 31 * kj::SECONDS);
  heartbeatAll(leaver);
  ASSERT_EQ(manager.sweepDeadServers(), 1u);
  control.holdLeases = false;
  control.held[0]->fulfill(Status::OK());
  auto r = pending.wait(io.waitScope);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_GT(r.value.record.version, bumped);
  for (auto& rep : r.value.replicas) EXPECT_NE(idOf(rep.address), leaver);
  std::string address = "127.0.0." + std::to_string(leaver + 1) + ":1";
  manager.registerServer(address, "r", 1 << 30, 0, {{handle, bumped, 0}});
  for (auto& rep : replicasNow()) EXPECT_NE(rep.address, address);
}

TEST_F(ChunkManagerTest, AReplicaThatTakesABumpLateIsStaleNotNewer) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t v = r.value.record.version, handle = r.value.record.handle;
  std::vector<uint64_t> holders;
  for (auto& rep : r.value.replicas) holders.push_back(idOf(rep.address));
  // Every replica takes the bump but no answer comes back: the master keeps v...
  control.late = {ids[0], ids[1], ids[2], ids[3]};
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  EXPECT_FALSE(prepare(0).ok());
  settle();
  EXPECT_EQ(ns.getChunk(file, 0)->version, v);
  EXPECT_EQ(ns.getChunk(file, 0)->issued, v + 1);  // recorded, so it outlives the master
  EXPECT_EQ(control.versions[std::make_pair(holders[0], handle)], v + 1);
  // ...and a replica reporting v+1 is one that missed what the others hold since: it must
  // not be taken as newer (which would have the others deleted).
  control.late.clear();
  manager.registerServer(r.value.replicas[0].address, "r", 1 << 30, 0, {{handle, v + 1, 0}});
  auto view = manager.locate(file, 0, 1)[0];
  EXPECT_EQ(view.record.version, v);
  EXPECT_EQ(view.replicas.size(), 2u);
  for (auto& rep : view.replicas) EXPECT_NE(rep.address, r.value.replicas[0].address);
}

TEST_F(ChunkManagerTest, AReplicaWhoseBumpAnswerIsLostIsLeftBehindByAnotherBump) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t v = r.value.record.version, handle = r.value.record.handle;
  uint64_t lost = idOf(r.value.replicas[1].address);
  control.late = {lost};
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  auto again = prepare(0);
  ASSERT_TRUE(again.ok()) << again.status.toString();
  EXPECT_EQ(control.versions[std::make_pair(lost, handle)], v + 1);  // it took the first bump...
  EXPECT_EQ(again.value.record.version, v + 2);  // ...and the writes go to the second
  EXPECT_EQ(again.value.replicas.size(), 2u);
  control.late.clear();
  manager.registerServer(r.value.replicas[1].address, "r", 1 << 30, 0, {{handle, v + 1, 0}});
  for (auto& rep : replicasNow()) {
    EXPECT_NE(rep.address, r.value.replicas[1].address);
  }
}

TEST_F(ChunkManagerTest, ACopyWaitsForALeaseTheMasterNoLongerNames) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t version = r.value.record.version;
  // The primary leaves the set; its chunkserver still holds the lease it was granted.
  auto& v = r.value;
  manager.reportBadReplica(v.record.handle, v.record.version, v.primary);
  ASSERT_EQ(manager.locate(file, 0, 1)[0].replicas.size(), 2u);
  heartbeatAll();
  manager.tick();  // under-replicated, but a write under that lease could slip past a copy
  EXPECT_EQ(control.copies, 0);
  timer.advanceTo(timer.now() + 5 * kj::SECONDS);
  heartbeatAll();
  manager.tick();  // idle: revoked under a new version first
  settle();
  EXPECT_GT(ns.getChunk(file, 0)->version, version);
  manager.tick();
  settle();
  EXPECT_EQ(control.copies, 1);
}

TEST_F(ChunkManagerTest, ACorruptReplicaIsNeitherASourceNorAGoodCopy) {
  ASSERT_TRUE(ns.setReplication(file, 1).wait(io.waitScope).status.ok());
  manager.goalChanged(file, 1);
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.value.replicas.size(), 1u);
  std::string bad = r.value.replicas[0].address;
  manager.reportBadReplica(r.value.record.handle, r.value.record.version, bad);
  ASSERT_EQ(manager.health().corrupt, 1u);
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  manager.tick();
  settle();
  EXPECT_EQ(control.copies, 0) << "a copy was made from a replica known to be bad";
  EXPECT_EQ(manager.health().underReplicated, 1u);
  // A good copy turns up (a chunkserver back with it): the bad one is the one that goes.
  std::string good;
  for (size_t i = 0; i < ids.size() && good.empty(); ++i) {
    std::string a = "127.0.0." + std::to_string(i + 2) + ":1";
    if (a != bad) good = a;
  }
  manager.registerServer(good, "r", 1 << 30, 0,
                         {{r.value.record.handle, r.value.record.version, 10}});
  manager.tick();
  auto view = manager.locate(file, 0, 1)[0];
  ASSERT_EQ(view.replicas.size(), 1u);
  EXPECT_EQ(view.replicas[0].address, good);
  EXPECT_EQ(deletesFor(idOf(bad)), std::vector<uint64_t>{r.value.record.handle});
}

// A standby's manager next to the active's, over the same namespace (as the log keeps it).
class MirrorTest : public ChunkManagerTest {
 protected:
  ~MirrorTest() noexcept override {}
  MirrorTest() : standby(ns, standbyControl, timer, ChunkManagerOptions{}) {
    standby.setMirroring(true);
    for (int i = 0; i < 4; ++i) {
      standbyIds.push_back(
          standby.registerServer("127.0.0." + std::to_string(i + 2) + ":1", "r", 1 << 30, 0, {}));
    }
  }
  uint64_t standbyIdOf(const std::string& address) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (address == "127.0.0." + std::to_string(i + 2) + ":1") return standbyIds[i];
    }
    return 0;
  }
  std::set<std::string> addressesOf(const ChunkView& v) {
    std::set<std::string> out;
    for (auto& r : v.replicas) out.insert(r.address);
    return out;
  }
  FakeControl standbyControl;
  ChunkManager standby;
  std::vector<uint64_t> standbyIds;
};

TEST_F(MirrorTest, AServerSilentForLongIsNoReplicaAtTheTakeover) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle, v = r.value.record.version;
  for (auto& rep : r.value.replicas)
    standby.applyChanges(standbyIdOf(rep.address), {{handle, v, 0}});
  // One replica's server stops; the standby, which sweeps no server, still mirrors it.
  std::string gone = r.value.replicas[0].address;
  timer.advanceTo(timer.now() + 40 * kj::SECONDS);
  for (auto id : standbyIds) {
    std::vector<uint64_t> deletes;
    if (id != standbyIdOf(gone)) standby.heartbeat(id, 1 << 30, 0, deletes);
  }
  standby.becomeActive();
  auto seen = standby.locate(file, 0, 1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].replicas.size(), 2u);
  EXPECT_FALSE(addressesOf(seen[0]).count(gone));
  bool goneIsLive = false;
  for (auto& s : standby.servers()) goneIsLive |= s.address == gone && s.live;
  EXPECT_FALSE(goneIsLive);
}

// Whether the newer version's report comes first or last among the chunk's reports.
class TakeoverTest : public MirrorTest, public ::testing::WithParamInterface<bool> {
 protected:
  ~TakeoverTest() noexcept override {}
};
INSTANTIATE_TEST_SUITE_P(NewerFirstOrLast, TakeoverTest, ::testing::Bool());

TEST_P(TakeoverTest, ATakeoverAdoptsANewerVersionDropsOrphansAndKeepsEachServersChunks) {
  bool newerFirst = GetParam();
  auto r = prepare(0);
  auto second = prepare(1);
  ASSERT_TRUE(r.ok() && second.ok());
  settle();
  uint64_t handle = r.value.record.handle, v = r.value.record.version;
  uint64_t handle1 = second.value.record.handle, v1 = second.value.record.version;
  for (auto& rep : second.value.replicas)
    standby.applyChanges(standbyIdOf(rep.address), {{handle1, v1, 0}});
  // Chunk 0: three replicas at the recorded version, and the fourth server at a newer one
  // that the old active moved it to and died before recording (never issued here).
  std::string newer;
  for (auto& s : standby.servers()) {
    if (!addressesOf(r.value).count(s.address)) newer = s.address;
  }
  ASSERT_FALSE(newer.empty());
  // A chunk allocated but recorded as never created, which the newer server holds too.
  auto pending = ns.allocateChunk(file, 3).wait(io.waitScope);
  ASSERT_TRUE(pending.ok());
  uint64_t handle3 = pending.value.handle, v3 = pending.value.version;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto id : standbyIds) {
      bool isNewer = id == standbyIdOf(newer);
      if (isNewer != ((pass == 0) == newerFirst)) continue;
      // And every server reports a chunk the namespace never had.
      standby.applyChanges(id, {{handle, isNewer ? v + 7 : v, 0}, {999999, 1, 0}});
      if (isNewer) standby.applyChanges(id, {{handle3, v3 + 3, 0}});
    }
  }
  standby.becomeActive();
  EXPECT_EQ(addressesOf(standby.locate(file, 0, 1)[0]), std::set<std::string>{newer});
  EXPECT_EQ(ns.getChunk(file, 0)->version, v + 7);
  settle();
  EXPECT_EQ(ns.getChunk(file, 3)->version, v3 + 3);
  EXPECT_FALSE(ns.getChunk(file, 3)->pending) << "a chunk a server holds was created";
  EXPECT_EQ(addressesOf(standby.locate(file, 3, 1)[0]), std::set<std::string>{newer});
  EXPECT_EQ(addressesOf(standby.locate(file, 1, 1)[0]), addressesOf(second.value));
  std::map<std::string, uint64_t> held;
  for (auto& s : standby.servers()) held[s.address] = s.chunkCount;
  for (auto& [address, count] : held) {
    EXPECT_EQ(count, (address == newer ? 2u : 0u) + addressesOf(second.value).count(address))
        << address;
  }
  // The older replicas and the orphans go at the next heartbeats.
  for (auto id : standbyIds) {
    std::vector<uint64_t> d;
    ASSERT_TRUE(standby.heartbeat(id, 1 << 30, 0, d));
    std::sort(d.begin(), d.end());
    std::vector<uint64_t> want{999999};
    if (standbyIdOf(newer) != id) want.insert(want.begin(), handle);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(d, want) << id;
  }
  // Each server's chunks are known: one that dies takes its replicas with it.
  std::string gone = second.value.replicas[0].address;
  timer.advanceTo(timer.now() + 40 * kj::SECONDS);
  for (auto id : standbyIds) {
    std::vector<uint64_t> d;
    if (id != standbyIdOf(gone)) standby.heartbeat(id, 1 << 30, 0, d);
  }
  standby.tick();
  EXPECT_FALSE(addressesOf(standby.locate(file, 1, 1)[0]).count(gone));
  EXPECT_EQ(standby.locate(file, 1, 1)[0].replicas.size(), 2u);
}

TEST_F(MirrorTest, AReportOfHandleZeroIsNoChunkOnAStandby) {
  // A stray file named "0" in a chunkserver's directory: no chunk has handle 0.
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle, v = r.value.record.version;
  std::string address = r.value.replicas[0].address;
  EXPECT_NO_THROW(standby.registerServer(address, "r", 1 << 30, 0, {{0, 1, 0}, {handle, v, 0}}));
  EXPECT_NO_THROW(standby.applyChanges(standbyIdOf(address), {{0, 2, 0}}));
  EXPECT_EQ(addressesOf(standby.locate(file, 0, 1)[0]), std::set<std::string>{address});
}

TEST_F(ChunkManagerTest, AManagerWithAStepInLineCanBeDestroyed) {
  // A step still waiting for a chunkserver when the master stops (ASan checks the rest).
  auto m = std::make_unique<ChunkManager>(ns, control, timer, noAudit());
  for (int i = 0; i < 4; ++i) {
    m->registerServer("127.0.0." + std::to_string(i + 2) + ":1", "r", 1 << 30, 0, {});
  }
  for (auto id : ids) control.hold.insert(id);
  {
    // The caller gives up; the step stays in line, held by the chunk's activity.
    auto pending = m->prepareWrite(file, 5);
    settle();
    EXPECT_EQ(m->activeChunks(), 1u);
  }
  m.reset();
  control.hold.clear();
  control.held.clear();
}

TEST_F(MirrorTest, AStandbyFollowsReportedChangesAndTakesOverWithoutSafeMode) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle, v = r.value.record.version;
  EXPECT_TRUE(standby.locate(file, 0, 1)[0].replicas.empty());  // nothing reported yet
  for (auto& rep : r.value.replicas)
    standby.applyChanges(standbyIdOf(rep.address), {{handle, v, 0}});
  auto seen = standby.locate(file, 0, 1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(addressesOf(seen[0]), addressesOf(r.value));
  EXPECT_TRUE(seen[0].primary.empty());  // a standby names no primary

  // The active moves the chunk on without one replica; the others report the new version.
  std::string left = r.value.replicas[2].address;
  control.down.insert(idOf(left));
  timer.advanceTo(timer.now() + 61 * kj::SECONDS);
  heartbeatAll();
  auto moved = prepare(0);
  ASSERT_TRUE(moved.ok());
  control.down.clear();
  for (auto& rep : moved.value.replicas) {
    standby.applyChanges(standbyIdOf(rep.address), {{handle, moved.value.record.version, 0}});
  }
  // Every standby server heartbeats (so they are live): still no order, no delete.
  for (auto id : standbyIds) {
    std::vector<uint64_t> d;
    EXPECT_TRUE(standby.heartbeat(id, 1 << 30, 0, d));
    EXPECT_TRUE(d.empty());
  }
  EXPECT_EQ(addressesOf(standby.locate(file, 0, 1)[0]), addressesOf(moved.value));
  EXPECT_TRUE(standbyControl.calls.empty());

  // It takes over: at once out of safe mode, the same replicas, and the one left behind
  // at the old version is stale.
  standby.becomeActive();
  EXPECT_FALSE(standby.inSafeMode());
  auto after = standby.locate(file, 0, 1)[0];
  EXPECT_EQ(addressesOf(after), addressesOf(moved.value));
  std::vector<uint64_t> d;
  ASSERT_TRUE(standby.heartbeat(standbyIdOf(left), 1 << 30, 0, d));
  EXPECT_EQ(d, std::vector<uint64_t>{handle});
  EXPECT_EQ(moved.value.record.version, v + 2);  // the bump, and one more to fence it off
}

TEST_F(MirrorTest, ARemovedReplicaLeavesTheMirrorAndALateReportFillsAnEmptyChunk) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  uint64_t handle = r.value.record.handle, v = r.value.record.version;
  uint64_t a = standbyIdOf(r.value.replicas[0].address);
  standby.applyChanges(a, {{handle, v, 0}, {handle, 0, 0}});  // created, then deleted
  EXPECT_TRUE(standby.locate(file, 0, 1)[0].replicas.empty());
  // Taking over with no report of the chunk: it has no replica known...
  standby.becomeActive();
  EXPECT_TRUE(standby.locate(file, 0, 1)[0].replicas.empty());
  // ...until the report that was on its way arrives; one of another version does not count.
  uint64_t b = standbyIdOf(r.value.replicas[1].address);
  standby.applyChanges(a, {{handle, v + 5, 0}});
  EXPECT_TRUE(standby.locate(file, 0, 1)[0].replicas.empty());
  standby.applyChanges(b, {{handle, v, 0}});
  auto after = standby.locate(file, 0, 1)[0];
  ASSERT_EQ(after.replicas.size(), 1u);
  EXPECT_EQ(after.replicas[0].address, r.value.replicas[1].address);
  // Once a replica is live, reports change nothing: the active's orders make the map.
  standby.applyChanges(a, {{handle, v, 0}});
  EXPECT_EQ(standby.locate(file, 0, 1)[0].replicas.size(), 1u);
}

TEST_F(MirrorTest, AChunkAllocatedButNeverCreatedIsMadeAtTheTakeover) {
  // The old active recorded chunk 3 and died before any chunkserver created it.
  auto record = ns.allocateChunk(file, 3).wait(io.waitScope);
  ASSERT_TRUE(record.ok());
  EXPECT_TRUE(ns.getChunk(file, 3)->pending);
  standby.becomeActive();
  EXPECT_FALSE(standby.inSafeMode());  // nothing to wait for
  auto r = standby.prepareWrite(file, 3).wait(io.waitScope);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  EXPECT_EQ(r.value.replicas.size(), 3u);
  EXPECT_GT(r.value.record.version, 1u);
  settle();
  EXPECT_FALSE(ns.getChunk(file, 3)->pending);
}

TEST_F(MirrorTest, AChunkOnceCreatedIsMissingNotMadeAgain) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok());
  settle();
  EXPECT_FALSE(ns.getChunk(file, 0)->pending);  // recorded before the first lease
  // No chunkserver that holds it reported to the standby: it is missing, never replaced by
  // an empty chunk.
  standby.becomeActive();
  EXPECT_TRUE(standby.inSafeMode());
  standby.leaveSafeMode();
  auto again = standby.prepareWrite(file, 0).wait(io.waitScope);
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(ns.getChunk(file, 0)->version, r.value.record.version);
  EXPECT_TRUE(standbyControl.calls.empty());
}

TEST_F(ChunkManagerTest, ASharedChunkWaitsForTheSnapshotThenIsCopiedBeforeAWrite) {
  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  uint64_t handle = r.value.record.handle;
  uint64_t leased = r.value.record.version;
  // A snapshot freezes the file: its lease is revoked under a new version, and a write
  // waits until the snapshot is recorded.
  ASSERT_TRUE(manager.freeze({file}).wait(io.waitScope).ok());
  EXPECT_TRUE(manager.quiet(file));
  EXPECT_GT(ns.getChunk(file, 0)->version, leased);
  auto waiting = manager.prepareWrite(file, 0);
  settle();
  EXPECT_FALSE(waiting.poll(io.waitScope)) << "a lease granted on a frozen file";
  SnapshotRequest request;
  request.source = file;
  request.parent = ROOT_INODE;
  request.name = "g";
  request.quiet = [this](uint64_t inode) { return manager.quiet(inode); };
  auto g = ns.snapshot(request).wait(io.waitScope);
  ASSERT_TRUE(g.status.ok()) << g.status.toString();
  manager.thaw({file});
  // The write that waited copies the chunk (on every replica, locally) and goes to the copy.
  auto written = waiting.wait(io.waitScope);
  ASSERT_TRUE(written.ok()) << written.status.toString();
  EXPECT_NE(written.value.record.handle, handle);
  EXPECT_EQ(ns.getChunk(file, 0)->handle, written.value.record.handle);
  EXPECT_EQ(ns.getChunk(g.inode.inode, 0)->handle, handle) << "the snapshot keeps the chunk";
  size_t copies = 0;
  for (auto& call : control.calls) copies += call.rfind("copyChunk", 0) == 0;
  EXPECT_EQ(copies, 3u);
  EXPECT_EQ(written.value.replicas.size(), 3u);
}

// A replica no record names, reported as a change to the active (an early create whose
// master died before its record landed, reaching the server after the takeover), goes at
// the server's next heartbeat, as it would with its next full report. A copy-on-write's
// copies, reported before their record lands, are kept and become the chunk's replicas.
TEST_F(ChunkManagerTest, AReplicaNoRecordNamesGoesButACopyOnItsWayIsKept) {
  heartbeatAll();
  manager.applyChanges(ids[0], {{999999, 1, 0}});
  EXPECT_EQ(deletesFor(ids[0]), std::vector<uint64_t>{999999});

  auto r = prepare(0);
  ASSERT_TRUE(r.ok()) << r.status.toString();
  uint64_t handle = r.value.record.handle;
  ASSERT_TRUE(manager.freeze({file}).wait(io.waitScope).ok());
  SnapshotRequest request;
  request.source = file;
  request.parent = ROOT_INODE;
  request.name = "g";
  request.quiet = [this](uint64_t inode) { return manager.quiet(inode); };
  ASSERT_TRUE(ns.snapshot(request).wait(io.waitScope).status.ok());
  manager.thaw({file});
  uint64_t sharedVersion = ns.getChunk(file, 0)->version;
  // The write copies the shared chunk; the copy's record is held on its way to the log.
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> shipped;
  store.setShipper(NamespaceStore::Shipper([&](const LogEntry&) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    shipped.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }));
  auto writing = manager.prepareWrite(file, 0);
  auto copying = [&]() {
    for (auto& call : control.calls) {
      if (call.rfind("copyChunk", 0) == 0) return true;
    }
    return false;
  };
  for (int i = 0; i < 20; ++i) {  // the entries before the copies go through
    settle();
    if (copying()) break;
    for (auto& f : shipped) f->fulfill();
    shipped.clear();
  }
  std::vector<uint64_t> copiedOn;
  uint64_t fresh = 0;
  for (auto& call : control.calls) {
    unsigned long long server, from, version, to;
    if (sscanf(call.c_str(), "copyChunk %llu %llu v%llu -> %llu", &server, &from, &version, &to) ==
        4) {
      copiedOn.push_back(server);
      fresh = to;
    }
  }
  ASSERT_EQ(copiedOn.size(), 3u);
  ASSERT_FALSE(shipped.empty());
  // One server reports the copy as a change, another in a full report (it restarted).
  manager.applyChanges(copiedOn[0], {{fresh, 1, 0}});
  auto restarted = std::find(ids.begin(), ids.end(), copiedOn[1]) - ids.begin();
  manager.registerServer("127.0.0." + std::to_string(restarted + 2) + ":1", "r", 1 << 30, 0,
                         {{handle, sharedVersion, 0}, {fresh, 1, 0}});
  for (uint64_t id : copiedOn) {
    auto d = deletesFor(id);
    EXPECT_EQ(std::count(d.begin(), d.end(), fresh), 0) << "server " << id;
  }
  store.setShipper(nullptr);
  for (auto& f : shipped) f->fulfill();
  auto written = writing.wait(io.waitScope);
  ASSERT_TRUE(written.ok()) << written.status.toString();
  EXPECT_EQ(written.value.record.handle, fresh);
  EXPECT_EQ(written.value.replicas.size(), 3u);
  for (uint64_t id : copiedOn) {
    auto d = deletesFor(id);
    EXPECT_EQ(std::count(d.begin(), d.end(), fresh), 0) << "server " << id;
  }
}

TEST_F(ChunkManagerTest, ASharedChunkHasTheHighestGoalOfItsFiles) {
  ASSERT_TRUE(prepare(0).ok());
  ASSERT_TRUE(manager.freeze({file}).wait(io.waitScope).ok());
  SnapshotRequest request;
  request.source = file;
  request.parent = ROOT_INODE;
  request.name = "g";
  auto g = ns.snapshot(request).wait(io.waitScope);
  manager.thaw({file});
  ASSERT_TRUE(g.status.ok());
  ASSERT_TRUE(ns.setReplication(g.inode.inode, 4).wait(io.waitScope).status.ok());
  manager.goalChanged(g.inode.inode, 4);
  auto checks = manager.check(file, 0, 1);
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].goal, 4u);
  EXPECT_EQ(checks[0].files, 2u);
  // Re-replication gives it a fourth replica.
  for (int i = 0; i < 5; ++i) {
    manager.tick();
    settle();
  }
  EXPECT_EQ(manager.locate(file, 0, 1).at(0).replicas.size(), 4u);
}

}  // namespace
}  // namespace cairn
