// libcairn against a whole cluster in this process: master, four chunkservers on
// loopback with in-memory disks, one event loop.

#include "client.h"

#include <gtest/gtest.h>

#include "cluster.h"
#include "rpc.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 1 << 20;

class ClientTest : public ::testing::Test {
 protected:
  // kj's owners may throw from destructors; a test fixture must not.
  ~ClientTest() noexcept override {}
  ClientTest() : io(kj::setupAsyncIo()), cluster(io, 4, CHUNK) {}
  Client& client() { return cluster.client(); }
  template <typename T>
  T wait(kj::Promise<T> p) {
    return p.wait(io.waitScope);
  }
  uint64_t createFile(const std::string& name, uint8_t replication = 3) {
    auto r = wait(client().create(1, name, 0644, replication, true));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    return r.value.inode;
  }
  void write(uint64_t inode, uint64_t offset, const std::string& data) {
    Status s = wait(client().write(
        inode, offset, kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size())));
    ASSERT_TRUE(s.ok()) << s.toString();
    auto sized = wait(client().commitSize(inode, offset + data.size()));
    ASSERT_TRUE(sized.ok()) << sized.status.toString();
  }
  std::string read(uint64_t inode, uint64_t offset, uint64_t length) {
    std::string out;
    Status s = wait(client().read(inode, offset, length, out));
    EXPECT_TRUE(s.ok()) << s.toString();
    return out;
  }

  kj::AsyncIoContext io;
  testing::InProcessCluster cluster;
};

// How many calls of `method` the master has answered.
double masterCalls(Master& m, const std::string& method) {
  std::string text = m.metrics().render();
  std::string key = "cairn_master_request_duration_seconds_count{method=\"" + method + "\"} ";
  size_t at = text.find(key);
  return at == std::string::npos ? 0 : std::stod(text.substr(at + key.size()));
}
double getattrCalls(Master& m) { return masterCalls(m, "getattr"); }

TEST_F(ClientTest, ADirectorysAttributesComeBackWithEachChangeInIt) {
  // A mount's client keeps what each change brought back, as the kernel would have kept
  // it had it not dropped it: no getattr goes to the master for the directory meanwhile.
  auto mine = cluster.newClient([](ClientOptions& o) { o.dirAttrTtl = 30 * kj::SECONDS; });
  auto dir = wait(mine->mkdir(1, "d", 0755));
  ASSERT_TRUE(dir.ok()) << dir.status.toString();
  uint64_t d = dir.value.inode;
  double before = getattrCalls(cluster.master());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(wait(mine->create(d, "f" + std::to_string(i), 0644, 3, true)).ok());
    auto a = wait(mine->getattr(d));
    ASSERT_TRUE(a.ok());
    auto truth = wait(client().getattr(d));  // asks the master
    ASSERT_TRUE(truth.ok());
    EXPECT_EQ(a.value.mtimeNs, truth.value.mtimeNs) << "after create " << i;
    EXPECT_EQ(a.value.ctimeNs, truth.value.ctimeNs);
  }
  ASSERT_TRUE(wait(mine->mkdir(d, "sub", 0700)).ok());
  auto a = wait(mine->getattr(d));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value.nlink, 3u) << "a subdirectory's '..' counts";
  ASSERT_TRUE(wait(mine->unlink(d, "f0")).ok());
  ASSERT_TRUE(wait(mine->rename(d, "f1", 1, "moved")).ok());
  a = wait(mine->getattr(d));
  auto truth = wait(client().getattr(d));
  ASSERT_TRUE(a.ok() && truth.ok());
  EXPECT_EQ(a.value.mtimeNs, truth.value.mtimeNs);
  // Only the six checks above asked the master.
  EXPECT_EQ(getattrCalls(cluster.master()) - before, 6);

  // A change whose answer brings no attributes (chmod) forgets them: the next getattr asks.
  SetAttrRequest chmod;
  chmod.mode = 0711;
  ASSERT_TRUE(wait(mine->setattr(d, chmod)).ok());
  a = wait(mine->getattr(d));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value.mode & 07777, 0711u);
  // Another client's change is not seen until the attributes expire (as with the kernel's
  // attr_timeout); a client without the option always asks.
  ASSERT_TRUE(wait(mine->create(d, "g", 0644, 3, true)).ok());
  auto kept = wait(mine->getattr(d));
  ASSERT_TRUE(wait(client().create(d, "h", 0644, 3, true)).ok());
  auto seen = wait(mine->getattr(d));
  truth = wait(client().getattr(d));
  ASSERT_TRUE(kept.ok() && seen.ok() && truth.ok());
  EXPECT_EQ(seen.value.ctimeNs, kept.value.ctimeNs);
  EXPECT_GE(truth.value.ctimeNs, kept.value.ctimeNs);
}

TEST_F(ClientTest, ClosesWithinTheDelayReachTheMasterInOneCall) {
  auto mine = cluster.newClient([](ClientOptions& o) { o.closeDelay = 300 * kj::MILLISECONDS; });
  Master& m = cluster.master();
  std::vector<uint64_t> inodes;
  for (int i = 0; i < 4; ++i) {
    auto r = wait(mine->create(1, "c" + std::to_string(i), 0644, 3, true, /*open=*/true));
    ASSERT_TRUE(r.ok()) << r.status.toString();
    inodes.push_back(r.value.inode);
  }
  ASSERT_TRUE(wait(mine->open(inodes[0], 4)).ok());  // c0 twice
  ASSERT_TRUE(wait(mine->unlink(1, "c3")).ok());     // c3 lives until its close arrives
  double before = masterCalls(m, "closeAll") + masterCalls(m, "close");
  for (uint64_t inode : inodes) wait(mine->close(inode));  // answered at once
  for (uint64_t inode : inodes) EXPECT_TRUE(m.names().isOpen(inode));
  EXPECT_EQ(masterCalls(m, "closeAll") + masterCalls(m, "close") - before, 0);
  // Within the delay (and a margin), one call ends them all.
  for (int i = 0; i < 100 && masterCalls(m, "closeAll") - before < 1; ++i) {
    wait(io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS));
  }
  EXPECT_EQ(masterCalls(m, "closeAll") - before, 1);
  EXPECT_TRUE(m.names().isOpen(inodes[0])) << "opened twice, closed once";
  for (size_t i = 1; i < inodes.size(); ++i) EXPECT_FALSE(m.names().isOpen(inodes[i])) << i;
  // sendCloses() sends what waits at once (a mount's last releases at its end).
  wait(mine->close(inodes[0]));
  wait(mine->sendCloses());
  EXPECT_FALSE(m.names().isOpen(inodes[0]));
  EXPECT_EQ(masterCalls(m, "closeAll") - before, 2);
  // An unlink sends the closes that wait first: a file closed just before is deleted at
  // once, not kept as an orphan until they arrive.
  auto t = wait(mine->create(1, "tmp", 0644, 3, true, /*open=*/true));
  ASSERT_TRUE(t.ok());
  wait(mine->close(t.value.inode));
  ASSERT_TRUE(wait(mine->unlink(1, "tmp")).ok());
  EXPECT_FALSE(m.names().isOpen(t.value.inode));
  // The client without the delay closes each at once.
  auto r = wait(client().create(1, "now", 0644, 3, true, /*open=*/true));
  ASSERT_TRUE(r.ok());
  wait(client().close(r.value.inode));
  EXPECT_FALSE(m.names().isOpen(r.value.inode));
}

TEST_F(ClientTest, WritesAndReadsAcrossChunks) {
  uint64_t f = createFile("f");
  std::string data = testing::randomBytes(3 * CHUNK + 12345, 11);
  write(f, 0, data);
  EXPECT_EQ(read(f, 0, data.size()), data);
  EXPECT_EQ(read(f, CHUNK - 10, 20), data.substr(CHUNK - 10, 20));
  EXPECT_EQ(read(f, data.size() - 5, 100), data.substr(data.size() - 5));
  EXPECT_EQ(read(f, data.size() + 5, 100), "");
  auto layout = wait(client().layout(f, 0, 100));
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout.value.chunks.size(), 4u);
  for (auto& c : layout.value.chunks) {
    std::set<std::string> distinct;
    for (auto& r : c.replicas) distinct.insert(r.address);
    EXPECT_EQ(distinct.size(), 3u);
  }
}

TEST_F(ClientTest, OverwritesAndSparseFiles) {
  uint64_t f = createFile("sparse");
  std::string model(5 * CHUNK, '\0');
  auto apply = [&](uint64_t off, const std::string& d) {
    write(f, off, d);
    model.replace(off, d.size(), d);
  };
  apply(4 * CHUNK + 100, "end");  // chunks 0..3 are holes
  apply(CHUNK - 3, "across");     // crosses from chunk 0 into chunk 1
  apply(CHUNK - 1, "X");          // overwrite inside
  model.resize(4 * CHUNK + 103);
  EXPECT_EQ(read(f, 0, model.size()), model);
}

TEST_F(ClientTest, TruncateDownThenUpReadsZeros) {
  uint64_t f = createFile("t");
  std::string data = testing::randomBytes(2 * CHUNK + 10, 5);
  write(f, 0, data);
  SetAttrRequest shrink;
  shrink.size = CHUNK + 100;
  ASSERT_TRUE(wait(client().setattr(f, shrink)).ok());
  SetAttrRequest grow;
  grow.size = 2 * CHUNK;
  ASSERT_TRUE(wait(client().setattr(f, grow)).ok());
  std::string expect = data.substr(0, CHUNK + 100) + std::string(CHUNK - 100, '\0');
  EXPECT_EQ(read(f, 0, 2 * CHUNK), expect);
}

TEST_F(ClientTest, ReadsFailOverWhenAReplicaIsDown) {
  uint64_t f = createFile("f");
  std::string data = testing::randomBytes(2 * CHUNK, 6);
  write(f, 0, data);
  auto layout = wait(client().layout(f, 0, 1));
  std::string first = client().orderReplicas(layout.value.chunks[0])[0].address;
  for (size_t i = 0; i < 4; ++i) {
    if (cluster.chunkserverAddress(i) == first) cluster.stopChunkserver(i);
  }
  EXPECT_EQ(read(f, 0, data.size()), data);
}

TEST_F(ClientTest, ReadsFailOverOnACorruptReplica) {
  uint64_t f = createFile("f");
  std::string data = testing::randomBytes(CHUNK, 8);
  write(f, 0, data);
  auto layout = wait(client().layout(f, 0, 1));
  auto chunk = layout.value.chunks[0];
  std::string first = client().orderReplicas(chunk)[0].address;
  for (size_t i = 0; i < 4; ++i) {
    if (cluster.chunkserverAddress(i) != first) continue;
    auto path = cluster.chunkserver(i).store().dataPath(chunk.handle);
    std::string b;
    ASSERT_TRUE(cluster.disk(i).read(path, CHUNK_DATA_OFFSET + 1000, 1, b).ok());
    b[0] ^= 1;
    ASSERT_TRUE(cluster.disk(i).write(path, CHUNK_DATA_OFFSET + 1000, b.data(), 1, false).ok());
  }
  EXPECT_EQ(read(f, 0, data.size()), data);
  // The master dropped the bad replica once the client reported it.
  for (int i = 0; i < 100; ++i) {
    layout = wait(client().layout(f, 0, 1));
    if (layout.value.chunks[0].replicas.size() == 2) break;
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  EXPECT_EQ(layout.value.chunks[0].replicas.size(), 2u);
}

TEST_F(ClientTest, NamespaceErrorsComeBackAsValues) {
  createFile("f");
  EXPECT_EQ(wait(client().create(1, "f", 0644, 0, true)).status.code(), ErrorCode::ALREADY_EXISTS);
  EXPECT_EQ(wait(client().resolve("/nope")).status.code(), ErrorCode::NOT_FOUND);
  EXPECT_EQ(wait(client().mkdir(1, std::string(300, 'x'), 0755)).status.code(),
            ErrorCode::NAME_TOO_LONG);
  EXPECT_EQ(wait(client().mkdir(1, "a/b", 0755)).status.code(), ErrorCode::INVALID_ARGUMENT);
}

TEST_F(ClientTest, TreeHelpersListMakeAndRemoveWholeTrees) {
  auto made = wait(client().makeDirs("/a/b/c"));
  ASSERT_TRUE(made.ok()) << made.status.toString();
  EXPECT_EQ(made.value.type, FileType::DIRECTORY);
  // Existing directories are fine; the result is the same directory.
  auto again = wait(client().makeDirs("/a/b/c/"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value.inode, made.value.inode);
  // More entries than one readdir page (4096).
  uint64_t b = wait(client().resolve("/a/b")).value.inode;
  for (int i = 0; i < 4200; ++i) {
    ASSERT_TRUE(wait(client().create(b, "f" + std::to_string(i), 0644, 1, true)).ok());
  }
  auto all = wait(client().listAll(b));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all.value.size(), 4201u);
  // A file in the way is an error, not a directory.
  EXPECT_EQ(wait(client().makeDirs("/a/b/f7/x")).status.code(), ErrorCode::NOT_DIRECTORY);
  ASSERT_TRUE(wait(client().removeTree(1, "a")).ok());
  EXPECT_EQ(wait(client().resolve("/a")).status.code(), ErrorCode::NOT_FOUND);
  EXPECT_EQ(wait(client().removeTree(1, "a")).code(), ErrorCode::NOT_FOUND);
}

TEST_F(ClientTest, AMasterThatIsGoneFailsAfterItsRetryTimeNamingItsAddress) {
  ClientOptions options;
  options.master = "127.0.0.1:1,127.0.0.1:2";  // nothing listens on ports 1 and 2
  options.masterRetryFor = 1 * kj::SECONDS;
  Client lonely(options, io.provider->getNetwork(), io.provider->getTimer());
  auto started = io.provider->getTimer().now();
  auto r = wait(lonely.resolve("/"));
  auto took = io.provider->getTimer().now() - started;
  EXPECT_EQ(r.status.code(), ErrorCode::UNAVAILABLE);
  EXPECT_NE(r.status.message().find("127.0.0.1:1"), std::string::npos) << r.status.message();
  // Both masters were tried, again and again, for the retry time and not much longer.
  EXPECT_GE(took, 1 * kj::SECONDS);
  EXPECT_LT(took, 4 * kj::SECONDS);
}

// A master that is not active: it answers each getattr notActive, as a standby does.
class StandbyService final : public wire::ClientService::Server {
 protected:
  kj::Promise<void> getattr(GetattrContext context) override {
    toWire(Status(ErrorCode::NOT_ACTIVE, "this master is not active"),
           context.getResults().initStatus());
    return kj::READY_NOW;
  }
};
class StandbyMaster final : public wire::Master::Server {
 protected:
  kj::Promise<void> client(ClientContext context) override {
    context.getResults().setService(kj::heap<StandbyService>());
    return kj::READY_NOW;
  }
};

TEST_F(ClientTest, CallsMadeTogetherToAStandbyAllMoveOnToTheActiveMaster) {
  auto listener =
      io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  std::string standby = "127.0.0.1:" + std::to_string(listener->getPort());
  RpcServer server(kj::heap<StandbyMaster>(), kj::mv(listener), io.provider->getTimer(),
                   cluster.certificates().security(Role::MASTER, "standby", {"127.0.0.1"}));
  // Each call that the standby refuses moved the client on to the next master, so that an
  // even number of them brought it back to the standby, round after round.
  for (size_t calls : {2, 4}) {
    auto fresh = cluster.newClient([&](ClientOptions& o) {
      o.master = standby + "," + cluster.masterAddress();
      o.masterRetryFor = 3 * kj::SECONDS;
    });
    std::vector<kj::Promise<Result<FileAttr>>> pending;
    for (size_t i = 0; i < calls; ++i) pending.push_back(fresh->getattr(1));
    for (auto& p : pending) {
      auto r = wait(kj::mv(p));
      EXPECT_TRUE(r.ok()) << calls << " calls: " << r.status.toString();
    }
  }
}

TEST_F(ClientTest, ReplicationGoalIsHonoured) {
  uint64_t f = createFile("two", 2);
  write(f, 0, "hello");
  auto layout = wait(client().layout(f, 0, 1));
  EXPECT_EQ(layout.value.chunks[0].replicas.size(), 2u);
}

TEST(DurableDeleteTest, ChunksGoOnlyOnceTheRemovalOfTheirFileIsOnDisk) {
  // After a power cut the master comes back with what its disk holds: a file whose
  // removal was not synced yet comes back too, and must still have its chunks.
  auto io = kj::setupAsyncIo();
  testing::InProcessCluster cluster(io, 3, CHUNK, [](MasterOptions& o) {
    o.syncDelay = std::chrono::hours(1);  // nothing is synced unless asked for
    o.trashPeriod = 0 * kj::SECONDS;      // unlink removes at once
  });
  Client& client = cluster.client();
  auto f = client.create(1, "f", 0644, 3, true).wait(io.waitScope);
  ASSERT_TRUE(f.ok()) << f.status.toString();
  std::string data(2 * CHUNK + 10, 'x');
  ASSERT_TRUE(client
                  .write(f.value.inode, 0,
                         kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()))
                  .wait(io.waitScope)
                  .ok());
  ASSERT_TRUE(client.commitSize(f.value.inode, data.size()).wait(io.waitScope).ok());
  ChunkManager& chunks = cluster.master().chunkManager();
  ASSERT_EQ(chunks.knownChunks(), 3u);
  ASSERT_TRUE(client.unlink(1, "f").wait(io.waitScope).ok());
  io.provider->getTimer().afterDelay(200 * kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_EQ(chunks.knownChunks(), 3u) << "released before the removal was on disk";
  ASSERT_TRUE(client.syncMetadata().wait(io.waitScope).ok());
  for (int i = 0; i < 100 && chunks.knownChunks() > 0; ++i) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  EXPECT_EQ(chunks.knownChunks(), 0u);
}

}  // namespace
}  // namespace cairn
