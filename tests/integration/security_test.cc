// Security through real processes: certificates decide who connects and what they may
// call, the master checks POSIX permissions for every caller, mounts have root squashed
// unless allowed, and chunkservers serve only holders of the master's chunk tokens.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "address.h"
#include "chunkserver.capnp.h"
#include "cluster.h"
#include "master.capnp.h"
#include "tokens.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::randomBytes;
using testing::readFile;
using testing::writeFile;

constexpr uint64_t MIB = 1 << 20;

// Waits up to 10 s for `text` to appear in the log `file`.
bool logShows(const std::string& file, const std::string& text) {
  for (int i = 0; i < 1000; ++i) {
    if (readFile(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class SecurityTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> masterFlags = {}) {
    cluster = std::make_unique<ProcessCluster>(MIB, std::move(masterFlags));
    cluster->startMaster();
    for (size_t i = 0; i < 3; ++i) cluster->startChunkserver(i);
    cluster->waitForLiveChunkservers(3);
  }
  // `cairn ARGS` with the credentials in `dir` ("" for none at all).
  int cliAs(const std::string& dir, std::vector<std::string> args, std::string* out = nullptr,
            std::string* err = nullptr) {
    std::vector<std::string> argv = {"/usr/bin/env", "-u", "CAIRN_CREDENTIALS"};
    if (!dir.empty()) argv.push_back("CAIRN_CREDENTIALS=" + dir);
    argv.push_back(ProcessCluster::binary("cairn"));
    argv.push_back("--master");
    argv.push_back(cluster->masterAddress());
    argv.insert(argv.end(), args.begin(), args.end());
    return cluster->run(argv, out, err);
  }
  std::string user(uint32_t uid, const std::string& name = "alice") {
    return cluster->certificates().issue(Role::USER, name, {}, uid, {uid});
  }

  std::unique_ptr<ProcessCluster> cluster;
};

TEST_F(SecurityTest, ACliWithoutTheClustersCertificateIsRefused) {
  start();
  std::string out, err;
  EXPECT_NE(cliAs("", {"ls", "/"}, &out, &err), 0);
  EXPECT_NE(err.find("no credentials"), std::string::npos) << err;

  testing::TestCa other;
  std::string stranger = other.issue(Role::ADMIN, "admin", {}, 0, {0});
  EXPECT_NE(cliAs(stranger, {"ls", "/"}, &out, &err), 0);
  EXPECT_NE(err.find("TLS"), std::string::npos) << err;

  std::string expired = cluster->certificates().issue(Role::ADMIN, "old", {}, 0, {0}, false, 0);
  EXPECT_NE(cliAs(expired, {"ls", "/"}, &out, &err), 0);

  // The master still serves everyone else.
  EXPECT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
}

TEST_F(SecurityTest, AUserCliGetsEaccesWhereTheMountWould) {
  start();
  std::string mnt = cluster->mount();  // root on it is root (allowed)
  ASSERT_EQ(mkdir((mnt + "/secret").c_str(), 0700), 0);
  writeFile(mnt + "/secret/key", "the key");
  ASSERT_EQ(chmod((mnt + "/secret/key").c_str(), 0600), 0);
  ASSERT_EQ(mkdir((mnt + "/pub").c_str(), 0755), 0);
  writeFile(mnt + "/pub/readme", "hello");
  ASSERT_EQ(mkdir((mnt + "/home").c_str(), 0755), 0);
  ASSERT_EQ(chown((mnt + "/home").c_str(), 1000, 1000), 0);

  std::string alice = user(1000);
  std::string out, err;
  EXPECT_NE(cliAs(alice, {"cat", "/secret/key"}, &out, &err), 0);
  EXPECT_NE(err.find("Permission denied"), std::string::npos) << err;
  EXPECT_EQ(out.find("the key"), std::string::npos);
  EXPECT_NE(cliAs(alice, {"rm", "/secret/key"}, &out, &err), 0);
  EXPECT_NE(cliAs(alice, {"ls", "/secret"}, &out, &err), 0);
  EXPECT_EQ(readFile(mnt + "/secret/key"), "the key");

  // Readable where POSIX allows, writable only where the directory allows.
  EXPECT_EQ(cliAs(alice, {"cat", "/pub/readme"}, &out, &err), 0) << err;
  EXPECT_EQ(out, "hello");
  std::string local = cluster->dir() + "/local";
  writeFile(local, "mine");
  EXPECT_NE(cliAs(alice, {"put", local, "/pub/mine"}, &out, &err), 0);
  EXPECT_NE(cliAs(alice, {"rm", "/pub/readme"}, &out, &err), 0);
  EXPECT_EQ(cliAs(alice, {"put", local, "/home/mine"}, &out, &err), 0) << err;
  struct stat st;
  ASSERT_EQ(stat((mnt + "/home/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  // Another user may read it (0644) but not remove it.
  std::string bob = user(1001, "bob");
  EXPECT_EQ(cliAs(bob, {"cat", "/home/mine"}, &out, &err), 0) << err;
  EXPECT_NE(cliAs(bob, {"rm", "/home/mine"}, &out, &err), 0);
  EXPECT_EQ(cliAs(alice, {"rm", "/home/mine"}, &out, &err), 0) << err;
  // Trash: each user sees and restores only their own.
  EXPECT_NE(cliAs(bob, {"trash", "restore", "/home/mine"}, &out, &err), 0);
  EXPECT_EQ(cliAs(alice, {"trash", "restore", "/home/mine"}, &out, &err), 0) << err;
}

TEST_F(SecurityTest, RootOnAMountWithoutAllowRootIsNobody) {
  start();
  std::string admin = cluster->mount();
  ASSERT_EQ(mkdir((admin + "/open").c_str(), 0777), 0);
  ASSERT_EQ(chmod((admin + "/open").c_str(), 0777), 0);
  writeFile(admin + "/private", "root's");
  ASSERT_EQ(chmod((admin + "/private").c_str(), 0600), 0);

  cluster->setMountFlags({"--credentials", cluster->certificates().issue(Role::MOUNT, "plain")});
  std::string mnt = cluster->mount();
  // This process is root; the kernel lets root through, the master does not.
  EXPECT_LT(open((mnt + "/private").c_str(), O_RDONLY), 0);
  EXPECT_EQ(errno, EACCES);
  EXPECT_LT(open((mnt + "/new").c_str(), O_CREAT | O_WRONLY, 0644), 0);
  EXPECT_EQ(errno, EACCES);
  EXPECT_NE(mkdir((mnt + "/dir").c_str(), 0755), 0);
  int fd = open((mnt + "/open/made").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(write(fd, "x", 1), 1);
  ASSERT_EQ(close(fd), 0);
  struct stat st;
  ASSERT_EQ(stat((admin + "/open/made").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, NOBODY);
  EXPECT_EQ(readFile(admin + "/open/made"), "x");
}

TEST_F(SecurityTest, ACertificatesRoleBoundsWhatItsHolderMayCall) {
  start();
  std::string out, err;
  std::string cs = cluster->certificates().issue(Role::CHUNKSERVER, "cs9", {"127.0.0.9"});
  EXPECT_NE(cliAs(cs, {"admin", "decommission", cluster->chunkserverAddress(0)}, &out, &err), 0);
  EXPECT_NE(err.find("Operation not permitted"), std::string::npos) << err;
  EXPECT_NE(cliAs(cs, {"ls", "/"}, &out, &err), 0);
  EXPECT_NE(err.find("Operation not permitted"), std::string::npos) << err;

  std::string alice = user(1000);
  EXPECT_NE(cliAs(alice, {"admin", "balance"}, &out, &err), 0);
  EXPECT_NE(err.find("Operation not permitted"), std::string::npos) << err;
  EXPECT_NE(cliAs(alice, {"admin", "decommission", cluster->chunkserverAddress(0)}, &out, &err), 0);
  EXPECT_EQ(cluster->cli({"admin", "balance"}, &out, &err), 0) << err;

  // A user certificate cannot register as a chunkserver.
  std::string dataDir = cluster->dir() + "/rogue";
  std::string portFile = cluster->dir() + "/rogue.port";
  cluster->startDaemon("rogue",
                       {ProcessCluster::binary("cairn-chunkserver"), "--listen", "127.0.0.9:0",
                        "--data", dataDir, "--master", cluster->masterAddress(), "--port-file",
                        portFile, "--credentials", user(1000, "rogue"), "--http", "none"},
                       portFile);
  EXPECT_TRUE(logShows(cluster->dir() + "/rogue.log", "only a chunkserver certificate"));
  ASSERT_EQ(cluster->cli({"servers", "--json"}, &out, &err), 0) << err;
  EXPECT_EQ(out.find("127.0.0.9"), std::string::npos) << out;
}

// Calls a chunkserver directly with a user's certificate, as a client that bypasses
// libcairn would.
class DirectCalls {
 public:
  DirectCalls(ProcessCluster& cluster, const std::string& credentials) {
    RpcSecurity security;
    auto tls = TlsCredentials::load(credentials);
    KJ_ASSERT(tls.ok());
    security.tls = std::shared_ptr<TlsCredentials>(std::move(tls.value));
    peers = kj::heap<PeerPool>(io.provider->getNetwork(), io.provider->getTimer(), security);
    ClientOptions o;
    o.master = cluster.masterAddress();
    o.security = security;
    o.layoutTtl = 60 * kj::SECONDS;  // cached tokens outlive their expiry
    client = kj::heap<Client>(o, io.provider->getNetwork(), io.provider->getTimer());
  }
  ChunkInfo chunkOf(const std::string& path) {
    auto attr = client->resolve(path).wait(io.waitScope);
    KJ_ASSERT(attr.ok(), attr.status.toString());
    auto layout = client->layout(attr.value.inode, 0, 1).wait(io.waitScope);
    KJ_ASSERT(layout.ok() && layout.value.chunks.size() == 1);
    return layout.value.chunks[0];
  }
  // A read of `chunk` at its first replica, presenting `token`.
  ErrorCode read(const ChunkInfo& chunk, const std::optional<ChunkToken>& token) {
    auto req = chunkserver(chunk).readRequest();
    req.setHandle(chunk.handle);
    req.setVersion(chunk.version);
    req.setLength(16);
    if (token) toWire(*token, req.initToken());
    return fromWire(req.send().wait(io.waitScope).getStatus()).code();
  }
  wire::ChunkServer::Client chunkserver(const ChunkInfo& chunk) {
    return peers->get<wire::ChunkServer>(chunk.replicas.at(0).address, Role::CHUNKSERVER);
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<PeerPool> peers;
  kj::Own<Client> client;
};

TEST_F(SecurityTest, ChunkserversServeOnlyHoldersOfAValidTokenForThatChunkAndMode) {
  start({"--token-lifetime", "3"});
  cluster->put(randomBytes(1000, 1), "/a");
  cluster->put(randomBytes(1000, 2), "/b");
  DirectCalls calls(*cluster, user(0, "reader"));  // uid 0 without root: nobody; files are 0644
  ChunkInfo a = calls.chunkOf("/a");
  ChunkInfo b = calls.chunkOf("/b");
  EXPECT_EQ(calls.read(a, a.token), ErrorCode::OK);
  EXPECT_EQ(calls.read(a, std::nullopt), ErrorCode::TOKEN_INVALID);  // none
  EXPECT_EQ(calls.read(b, a.token), ErrorCode::TOKEN_INVALID);       // another chunk
  ChunkToken forged = a.token;
  forged.mac[0] ^= 0x55;
  EXPECT_EQ(calls.read(a, forged), ErrorCode::TOKEN_INVALID);  // forged
  forged = a.token;
  forged.expiresMs += 3600 * 1000;
  EXPECT_EQ(calls.read(a, forged), ErrorCode::TOKEN_INVALID);  // extended

  // A read token does not write.
  auto write = calls.chunkserver(a).writeRequest();
  write.setHandle(a.handle);
  write.setVersion(a.version);
  write.setLength(1);
  toWire(a.token, write.initToken());
  EXPECT_EQ(fromWire(write.send().wait(calls.io.waitScope).getStatus()).code(),
            ErrorCode::TOKEN_INVALID);
  auto push = calls.chunkserver(a).pushDataRequest();
  push.setDataId(77);
  push.setTotalLength(1);
  push.setData(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("x"), 1));
  toWire(a.token, push.initToken());
  EXPECT_EQ(fromWire(push.send().wait(calls.io.waitScope).getStatus()).code(),
            ErrorCode::TOKEN_INVALID);
  // What only the master and chunkservers call.
  auto version = calls.chunkserver(a).setVersionRequest();
  version.setHandle(a.handle);
  version.setVersion(a.version + 100);
  EXPECT_EQ(fromWire(version.send().wait(calls.io.waitScope).getStatus()).code(),
            ErrorCode::NOT_PERMITTED);
  auto apply = calls.chunkserver(a).applyWriteRequest();
  apply.setHandle(a.handle);
  apply.setVersion(a.version);
  EXPECT_EQ(fromWire(apply.send().wait(calls.io.waitScope).getStatus()).code(),
            ErrorCode::NOT_PERMITTED);

  // Tokens expire.
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  EXPECT_EQ(calls.read(a, a.token), ErrorCode::TOKEN_INVALID);
  EXPECT_EQ(calls.read(a, calls.chunkOf("/a").token), ErrorCode::OK);
  EXPECT_EQ(cluster->get("/a"), randomBytes(1000, 1));
}

TEST_F(SecurityTest, AWriteCarryingItsOwnBytesIsCheckedAgainstTheCall) {
  start();
  DirectCalls calls(*cluster, cluster->certificates().issue(Role::ADMIN, "writer", {}));
  auto& ws = calls.io.waitScope;
  auto file = calls.client->create(ROOT_INODE, "w", 0644, 0, true).wait(ws);
  ASSERT_TRUE(file.ok()) << file.status.toString();
  // A lease on its first chunk, asked for as libcairn would.
  auto master = calls.peers->get<wire::Master>(cluster->masterAddress(), Role::MASTER)
                    .clientRequest()
                    .send()
                    .getService();
  auto prepare = master.prepareWriteRequest();
  prepare.setInode(file.value.inode);
  auto prepared = prepare.send().wait(ws);
  ASSERT_EQ(fromWire(prepared.getStatus()).code(), ErrorCode::OK);
  auto chunk = prepared.getChunk();
  std::string primary = chunk.getPrimary();
  auto write = [&](const std::string& bytes, uint32_t length, uint64_t dataId, uint32_t offset = 0,
                   wire::Mutation mutation = wire::Mutation::DATA) {
    auto req = calls.peers->get<wire::ChunkServer>(primary, Role::CHUNKSERVER).writeRequest();
    req.setHandle(chunk.getHandle());
    req.setVersion(chunk.getVersion());
    req.setOffset(offset);
    req.setMutation(mutation);
    req.setDataId(dataId);
    req.setLength(length);
    req.setData(
        capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()));
    req.setToken(chunk.getToken());
    std::vector<std::string> others;
    for (auto r : chunk.getReplicas()) {
      if (r.getAddress() != primary) others.emplace_back(r.getAddress());
    }
    auto secondaries = req.initSecondaries(static_cast<uint>(others.size()));
    for (size_t i = 0; i < others.size(); ++i) secondaries.set(static_cast<uint>(i), others[i]);
    return fromWire(req.send().wait(ws).getStatus()).code();
  };
  // What each replica holds of the chunk.
  auto held = [&]() {
    std::vector<std::string> out;
    for (auto r : chunk.getReplicas()) {
      auto req =
          calls.peers->get<wire::ChunkServer>(r.getAddress(), Role::CHUNKSERVER).readRequest();
      req.setHandle(chunk.getHandle());
      req.setVersion(chunk.getVersion());
      req.setLength(1 << 20);
      req.setToken(chunk.getToken());
      auto reply = req.send().wait(ws);
      EXPECT_EQ(fromWire(reply.getStatus()).code(), ErrorCode::OK);
      out.emplace_back(reinterpret_cast<const char*>(reply.getData().begin()),
                       reply.getData().size());
    }
    return out;
  };
  EXPECT_EQ(write("abc", 4, 0), ErrorCode::INVALID_ARGUMENT);   // not the length said
  EXPECT_EQ(write("abc", 3, 77), ErrorCode::INVALID_ARGUMENT);  // and a pushed buffer named
  std::string large((128 << 10) + 1, 'x');
  EXPECT_EQ(write(large, static_cast<uint32_t>(large.size()), 0), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(write("abc", 3, 0, 0, wire::Mutation::PUNCH), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(write("abc", 3, 0, MIB - 1), ErrorCode::INVALID_ARGUMENT);  // past the chunk's end
  EXPECT_EQ(held(), std::vector<std::string>(3, ""));                   // nothing landed anywhere
  EXPECT_EQ(write("abc", 3, 0), ErrorCode::OK);
  EXPECT_EQ(held(), std::vector<std::string>(3, "abc"));  // the primary and both secondaries
}

TEST_F(SecurityTest, ReadsGoOnWhileTokenKeysRotate) {
  start({"--token-lifetime", "2"});
  std::string data = randomBytes(3 * MIB + 12345, 5);
  cluster->put(data, "/f");
  DirectCalls calls(*cluster, cluster->adminCredentials());
  auto attr = calls.client->resolve("/f").wait(calls.io.waitScope);
  ASSERT_TRUE(attr.ok());
  // Long enough for several keys to sign, retire, and the cached tokens to expire.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(9);
  int reads = 0;
  while (std::chrono::steady_clock::now() < until) {
    std::string out;
    Status s = calls.client->read(attr.value.inode, 0, data.size(), out).wait(calls.io.waitScope);
    ASSERT_TRUE(s.ok()) << s.toString();
    ASSERT_TRUE(out == data);
    ++reads;
    calls.client->timerForTools().afterDelay(200 * kj::MILLISECONDS).wait(calls.io.waitScope);
  }
  EXPECT_GT(reads, 4);  // each pass 200 ms or more: several keys and tokens went by
  EXPECT_EQ(cluster->get("/f"), data);
}

TEST_F(SecurityTest, ADaemonReloadsItsCertificateOnSighupWithoutDroppingTheCluster) {
  start();
  std::string data = randomBytes(300000, 9);
  cluster->put(data, "/f");
  // A new certificate (as when the old one nears its end) in place of the master's.
  std::string fresh = cluster->certificates().issue(Role::MASTER, "master-renewed", {"127.0.0.1"});
  for (auto f : {"cert.pem", "key.pem"}) {
    writeFile(cluster->masterCredentials() + "/" + f, readFile(fresh + "/" + f));
  }
  ASSERT_EQ(kill(cluster->masterPid(), SIGHUP), 0);
  EXPECT_TRUE(logShows(cluster->dir() + "/master.log", "credentials in"));
  EXPECT_EQ(cluster->get("/f"), data);
  cluster->waitForLiveChunkservers(3);
  // A broken file is refused, and the master goes on with what it had.
  writeFile(cluster->masterCredentials() + "/key.pem", "garbage");
  ASSERT_EQ(kill(cluster->masterPid(), SIGHUP), 0);
  EXPECT_TRUE(logShows(cluster->dir() + "/master.log", "not reloaded"));
  EXPECT_EQ(cluster->get("/f"), data);
  std::string out, err;
  EXPECT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
}

// Opens a TCP connection from `source` and sends nothing.
int idleConnection(const std::string& address, const char* source) {
  auto hp = parseHostPort(address);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(hp.value.port);
  inet_pton(AF_INET, hp.value.host.c_str(), &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Whether the server closes `fd` (end of file or a reset) within `seconds`.
bool closedWithin(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char b;
  ssize_t n = read(fd, &b, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST_F(SecurityTest, SilentConnectionsAreCutAndEachPeerHoldsBoundedConnections) {
  start({"--handshake-timeout", "2", "--max-connections-per-peer", "4"});
  // From an address of its own, so that only these count against its bound.
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(idleConnection(cluster->masterAddress(), "127.0.0.50"));
    ASSERT_GE(idle.back(), 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int extra = idleConnection(cluster->masterAddress(), "127.0.0.50");
  ASSERT_GE(extra, 0);
  EXPECT_TRUE(closedWithin(extra, 1));  // over the bound: closed at once
  close(extra);
  // Another peer is not held back by this one.
  int other = idleConnection(cluster->masterAddress(), "127.0.0.51");
  EXPECT_FALSE(closedWithin(other, 1));  // still open: its handshake time is not up
  close(other);
  // Silent ones are cut once the handshake time is up.
  for (int fd : idle) {
    EXPECT_TRUE(closedWithin(fd, 5));
    close(fd);
  }
  std::string out, err;
  EXPECT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
}

}  // namespace
}  // namespace cairn
