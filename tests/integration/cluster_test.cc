// Real cairn-master, cairn-chunkserver and cairn processes on loopback: put, get, locate,
// kill and restart, bad input.

#include "cluster.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "address.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::randomBytes;
using testing::readFile;
using testing::writeFile;

constexpr uint64_t MIB = 1 << 20;

class IntegrationTest : public ::testing::Test {
 protected:
  void start(size_t chunkservers) {
    cluster = std::make_unique<ProcessCluster>(MIB);
    cluster->startMaster();
    for (size_t i = 0; i < chunkservers; ++i) cluster->startChunkserver(i);
    cluster->waitForLiveChunkservers(chunkservers);
  }
  std::string local(const std::string& name) { return cluster->dir() + "/" + name; }
  // put, then get; returns what came back.
  std::string roundTrip(const std::string& data, const std::string& path) {
    cluster->put(data, path);
    return cluster->get(path);
  }
  nlohmann::json locate(const std::string& path) {
    std::string out, err;
    EXPECT_EQ(cluster->cli({"locate", "--json", path}, &out, &err), 0) << err;
    return nlohmann::json::parse(out);
  }

  std::unique_ptr<ProcessCluster> cluster;
};

TEST_F(IntegrationTest, ReplicatedFileSurvivesAChunkserverAndAMasterRestart) {
  start(4);
  std::string data = randomBytes(20 * MIB, 20);
  cluster->put(data, "/big.bin", {"-r", "3"});
  ASSERT_EQ(cluster->get("/big.bin"), data);

  auto layout = locate("/big.bin");
  EXPECT_EQ(layout["size"], data.size());
  EXPECT_EQ(layout["chunk_size"], MIB);
  ASSERT_EQ(layout["chunks"].size(), 20u);
  for (auto& chunk : layout["chunks"]) {
    std::set<std::string> servers;
    for (auto& r : chunk["replicas"]) servers.insert(r["address"].get<std::string>());
    EXPECT_EQ(servers.size(), 3u) << chunk.dump();
    EXPECT_EQ(chunk["size"], MIB);
  }

  // Kill a chunkserver that holds chunk 0: every byte still reads back.
  std::string holder = layout["chunks"][0]["replicas"][0]["address"];
  for (size_t i = 0; i < 4; ++i) {
    if (cluster->chunkserverAddress(i) == holder) cluster->killChunkserver(i);
  }
  EXPECT_EQ(cluster->get("/big.bin"), data);

  // Restart the master: nothing it acknowledged is lost.
  cluster->killMaster(SIGKILL);
  cluster->startMaster();
  EXPECT_EQ(cluster->get("/big.bin"), data);
  auto after = locate("/big.bin");
  EXPECT_EQ(after["size"], data.size());
}

TEST_F(IntegrationTest, ChunkBoundarySizes) {
  start(3);
  for (uint64_t size : {uint64_t{0}, MIB, MIB + 1, 3 * MIB - 1}) {
    std::string path = "/size-" + std::to_string(size);
    std::string data = randomBytes(size, size);
    EXPECT_EQ(roundTrip(data, path), data) << size;
    auto layout = locate(path);
    EXPECT_EQ(layout["size"], size);
    EXPECT_EQ(layout["chunks"].size(), (size + MIB - 1) / MIB) << size;
    if (size == MIB + 1) {
      EXPECT_EQ(layout["chunks"][1]["size"], 1);
    }
  }
}

// A write of at most 128 KiB carries its bytes to the primary, which hands them on with the
// order to apply (chunkservers of this release register as taking them); a larger one is
// pushed down the chain first.
TEST_F(IntegrationTest, SmallWritesCarryTheirBytesAndLargeOnesArePushed) {
  start(3);
  auto calls = [&](const std::string& method) {
    double n = 0;
    for (size_t i = 0; i < 3; ++i) {
      double v = ProcessCluster::sample(
          cluster->fetch(cluster->chunkserverHttp(i), "/metrics"),
          "cairn_chunkserver_requests_total{method=\"" + method + "\",result=\"ok\"}");
      n += std::max(v, 0.0);
    }
    return n;
  };
  std::string small = randomBytes(64 << 10, 1);
  EXPECT_EQ(roundTrip(small, "/small"), small);
  EXPECT_GE(calls("write"), 1);
  EXPECT_GE(calls("applyWrite"), 2);  // the two secondaries
  EXPECT_EQ(calls("pushData"), 0);
  std::string large = randomBytes(MIB / 2, 2);
  EXPECT_EQ(roundTrip(large, "/large"), large);
  EXPECT_GE(calls("pushData"), 3);
}

TEST_F(IntegrationTest, NamespaceCommandsAndTheirErrors) {
  start(3);
  std::string out, err;
  EXPECT_EQ(cluster->cli({"mkdir", "-p", "/a/b/c"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"mkdir", "-p", "/a/b/c"}, nullptr, &err), 0) << err;
  EXPECT_NE(cluster->cli({"mkdir", "/a/b"}, nullptr, &err), 0);
  EXPECT_NE(err.find("File exists"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"mkdir", "/x/y"}, nullptr, &err), 0);
  EXPECT_NE(err.find("No such file or directory"), std::string::npos) << err;

  writeFile(local("f"), "hello\n");
  ASSERT_EQ(cluster->cli({"put", local("f"), "/a/b/c/f"}, nullptr, &err), 0) << err;
  EXPECT_NE(cluster->cli({"put", local("f"), "/a/b/c/f"}, nullptr, &err), 0);
  EXPECT_NE(err.find("exists"), std::string::npos) << err;
  EXPECT_EQ(cluster->cli({"put", "-f", local("f"), "/a/b/c/f"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"cat", "/a/b/c/f"}, &out, &err), 0) << err;
  EXPECT_EQ(out, "hello\n");
  // A directory as the target puts the file inside it.
  ASSERT_EQ(cluster->cli({"put", local("f"), "/a"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"cat", "/a/f"}, &out, &err), 0) << err;

  EXPECT_NE(cluster->cli({"mkdir", "/a/b/c/f/g"}, nullptr, &err), 0);
  EXPECT_NE(err.find("Not a directory"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"mkdir", "/" + std::string(256, 'n')}, nullptr, &err), 0);
  EXPECT_NE(err.find("File name too long"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"rm", "/a"}, nullptr, &err), 0);
  EXPECT_NE(err.find("Directory not empty"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"mv", "/a", "/a/b/c/inside"}, nullptr, &err), 0);
  EXPECT_NE(err.find("into itself"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"get", "/nope", local("x")}, nullptr, &err), 0);
  EXPECT_NE(err.find("No such file or directory"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), err.size() - 1) << "one line: " << err;

  EXPECT_EQ(cluster->cli({"mv", "/a/b", "/moved"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"cat", "/moved/c/f"}, &out, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"setrep", "2", "/moved/c/f"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"stat", "--json", "/moved/c/f"}, &out, &err), 0) << err;
  auto st = nlohmann::json::parse(out);
  EXPECT_EQ(st["replication"], 2);
  EXPECT_EQ(st["size"], 6);
  EXPECT_EQ(st["type"], "file");
  EXPECT_EQ(cluster->cli({"ls", "--json", "/"}, &out, &err), 0) << err;
  auto ls = nlohmann::json::parse(out);
  ASSERT_EQ(ls.size(), 2u);
  EXPECT_EQ(ls[0]["name"], "a");
  EXPECT_EQ(ls[1]["name"], "moved");
  EXPECT_EQ(cluster->cli({"rm", "-r", "/moved"}, nullptr, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
  EXPECT_EQ(out, "a\n");
}

TEST_F(IntegrationTest, AcknowledgedCreatesSurviveSigkill) {
  start(3);
  std::string err;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(cluster->cli({"mkdir", "-p", "/d" + std::to_string(i) + "/sub"}, nullptr, &err), 0);
  }
  cluster->killMaster(SIGKILL);
  cluster->startMaster();
  std::string out;
  ASSERT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 20);
}

TEST_F(IntegrationTest, AnUnreachableMasterFailsFastNamingItsAddress) {
  start(1);
  cluster->killMaster(SIGKILL);
  std::string err;
  auto begin = std::chrono::steady_clock::now();
  EXPECT_NE(cluster->cli({"ls", "/"}, nullptr, &err), 0);
  auto took = std::chrono::steady_clock::now() - begin;
  // The CLI retries for two seconds; the rest is margin for a loaded machine.
  EXPECT_LT(took, std::chrono::seconds(8));
  EXPECT_NE(err.find(cluster->masterAddress()), std::string::npos) << err;
}

// Sends raw bytes to a HOST:PORT and closes.
void sendRaw(const std::string& address, const std::string& bytes) {
  auto hp = parseHostPort(address);
  ASSERT_TRUE(hp.ok());
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(hp.value.port);
  inet_pton(AF_INET, hp.value.host.c_str(), &sa.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  (void)!write(fd, bytes.data(), bytes.size());
  char buf[256];
  // Wait for the server to hang up on us.
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)!read(fd, buf, sizeof(buf));
  close(fd);
}

TEST_F(IntegrationTest, MalformedAndOversizedMessagesHarmNothing) {
  start(1);
  std::string err;
  ASSERT_EQ(cluster->cli({"mkdir", "/keep"}, nullptr, &err), 0) << err;
  sendRaw(cluster->masterAddress(), std::string(64, '\xff'));
  sendRaw(cluster->masterAddress(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  // A segment table claiming one segment of 2^31 words: far over the message limit.
  std::string huge("\x00\x00\x00\x00\x00\x00\x00\x80", 8);
  sendRaw(cluster->masterAddress(), huge + std::string(1024, 'a'));
  sendRaw(cluster->chunkserverAddress(0), huge + std::string(1024, 'a'));
  std::string out;
  ASSERT_EQ(cluster->cli({"ls", "/"}, &out, &err), 0) << err;
  EXPECT_EQ(out, "keep\n");
  cluster->waitForLiveChunkservers(1);
  EXPECT_EQ(roundTrip("still works", "/f"), "still works");
}

}  // namespace
}  // namespace cairn
