// Failures on a real cluster: dead chunkservers, stale and corrupt replicas, a master
// killed among writers, trash, goals raised and lowered, decommissioning, balancing.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "chunk_store.h"
#include "cluster.h"
#include "fixture.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::randomBytes;
using testing::readFile;
using testing::writeFile;
using Clock = std::chrono::steady_clock;

constexpr uint64_t MIB = 1 << 20;

using FaultTest = testing::ClusterFixture;

TEST_F(FaultTest, AKilledChunkserversChunksReturnToGoal) {
  start(4);
  std::vector<std::string> files;
  for (int f = 0; f < 5; ++f) {
    files.push_back(randomBytes(10 * MIB, 100 + f));  // 5 files x 10 chunks = 50 chunks
    cluster->put(files.back(), "/f" + std::to_string(f));
  }
  // A replica write that timed out under load is repaired, not a failure of this test.
  ASSERT_TRUE(waitFor(30, [&]() { return healthy(); }));
  auto t0 = Clock::now();
  cluster->killChunkserver(1);
  ASSERT_TRUE(waitFor(10, [&]() { return !isLive(cluster->chunkserverAddress(1)); }));
  // The bound: 2 s to be declared dead, then 50 copies of 1 MiB, two at a time per server.
  ASSERT_TRUE(waitFor(60, [&]() { return healthy(); })) << json({"admin", "health", "--json"});
  auto took = std::chrono::duration<double>(Clock::now() - t0).count();
  RecordProperty("repair_seconds", std::to_string(took));
  for (int f = 0; f < 5; ++f) {
    std::string path = "/f" + std::to_string(f);
    auto l = json({"locate", "--json", path});
    for (auto& c : l["chunks"]) {
      std::set<std::string> live;
      for (auto& r : c["replicas"]) live.insert(r["address"].get<std::string>());
      EXPECT_EQ(live.size(), 3u) << path << " " << c.dump();
      EXPECT_FALSE(live.count(cluster->chunkserverAddress(1)));
    }
    EXPECT_TRUE(cluster->get(path) == files[f]) << path;
  }
}

TEST_F(FaultTest, AStaleReplicaIsNeverServedAndIsDeleted) {
  start(4);
  std::string data = randomBytes(2 * MIB, 7);
  cluster->put(data, "/f");
  auto l = json({"locate", "--json", "/f"});
  std::string handle = l["chunks"][0]["handle"];
  uint64_t version = l["chunks"][0]["version"];
  size_t victim = indexOf(l["chunks"][0]["replicas"][0]["address"]);
  ASSERT_TRUE(std::filesystem::exists(chunkFile(victim, handle)));
  cluster->killChunkserver(victim);
  // Overwrite part of chunk 0 while the victim is away.
  std::string mnt = cluster->mount();
  {
    int fd = open((mnt + "/f").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "NEW BYTES", 9, 1000), 9);
    ASSERT_EQ(close(fd), 0);
  }
  data.replace(1000, 9, "NEW BYTES");
  auto after = json({"locate", "--json", "/f"});
  EXPECT_GT(after["chunks"][0]["version"].get<uint64_t>(), version);
  cluster->startChunkserver(victim);
  // Its replica is at the old version: deleted at its first heartbeats, never listed.
  EXPECT_TRUE(waitFor(15, [&]() { return !std::filesystem::exists(chunkFile(victim, handle)); }));
  EXPECT_NE(json({"locate", "--json", "/f"})["chunks"][0]["version"], version);
  EXPECT_TRUE(cluster->get("/f") == data);
  EXPECT_TRUE(waitFor(30, [&]() { return healthy(); }));
  EXPECT_TRUE(cluster->get("/f") == data);
}

TEST_F(FaultTest, AFlippedByteIsCaughtAndTheReplicaReplaced) {
  start(4);
  std::string data = randomBytes(MIB, 8);
  cluster->put(data, "/f");
  auto l = json({"locate", "--json", "/f"});
  std::string handle = l["chunks"][0]["handle"];
  size_t victim = indexOf(l["chunks"][0]["replicas"][1]["address"]);
  std::string path = chunkFile(victim, handle);
  {
    int fd = open(path.c_str(), O_RDWR);
    char b;
    ASSERT_EQ(pread(fd, &b, 1, CHUNK_DATA_OFFSET + 4321), 1);
    b ^= 0x10;
    ASSERT_EQ(pwrite(fd, &b, 1, CHUNK_DATA_OFFSET + 4321), 1);
    close(fd);
  }
  // Every read returns the right bytes, whichever replica it tries first.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(cluster->get("/f") == data);
  // The read or the scrubber reported it; the master dropped it, deleted the bad file and
  // made a third good replica elsewhere.
  // (The new replica may land on the same chunkserver, as a fresh, good copy.)
  bool replaced = waitFor(30, [&]() {
    auto h = holders("/f", 0);
    if (h.size() != 3 || !healthy()) return false;
    if (!h.count(cluster->chunkserverAddress(victim))) return true;
    return readFile(path).substr(CHUNK_DATA_OFFSET) == data.substr(0, MIB);
  });
  EXPECT_TRUE(replaced) << json({"admin", "health", "--json"}) << " "
                        << json({"locate", "--json", "/f"});
  std::string master = readFile(cluster->dir() + "/master.log");
  EXPECT_NE(master.find("dropping it"), std::string::npos) << master;
  EXPECT_TRUE(cluster->get("/f") == data);
}

// Runs `cairn put` of distinct files in a loop, appending each acknowledged name to `log`,
// until `stop` exists.
pid_t startWriter(ProcessCluster& cluster, int id, const std::string& log,
                  const std::string& stop) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  std::string src = cluster.dir() + "/src" + std::to_string(id);
  for (int i = 0; access(stop.c_str(), F_OK) != 0 && i < 10000; ++i) {
    std::string name = "/w" + std::to_string(id) + "-" + std::to_string(i);
    writeFile(src, randomBytes(100000 + i * 1000, id * 100000 + i));
    if (cluster.cli({"put", src, name}) == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      std::string line = name + "\n";
      (void)!write(fd, line.data(), line.size());
      close(fd);
    }
  }
  _exit(0);
}

TEST_F(FaultTest, SigkillOfTheMasterAmongWritersLosesNothingAcknowledged) {
  start(3);
  std::string stop = local("stop"), log = local("acked");
  std::vector<pid_t> writers;
  for (int w = 0; w < 3; ++w) writers.push_back(startWriter(*cluster, w, log, stop));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  cluster->killMaster(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  cluster->startMaster();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  writeFile(stop, "");
  for (pid_t w : writers) waitpid(w, nullptr, 0);
  std::string acked = readFile(log);
  size_t count = 0;
  for (size_t pos = 0; pos < acked.size();) {
    size_t nl = acked.find('\n', pos);
    std::string name = acked.substr(pos, nl - pos);
    pos = nl + 1;
    int id = name[2] - '0';
    int i = std::stoi(name.substr(name.find('-') + 1));
    EXPECT_TRUE(cluster->get(name) == randomBytes(100000 + i * 1000, id * 100000 + i)) << name;
    ++count;
  }
  EXPECT_GT(count, 5u);
}

// Changes answered without any fsync (creates, writes and closes, renames, unlinks,
// through a mount) are in the masters' logs and the chunkservers' files: kill -9 of the
// master and then of a chunkserver, while they go on, loses none of them.
TEST_F(FaultTest, SigkillOfEachDaemonLosesNoChangeAnsweredWithoutFsync) {
  start(3);
  std::string mnt = cluster->mount();
  std::map<std::string, std::string> model;  // what the mount acknowledged
  std::mutex modelMutex;
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::string error;
  auto body = [](int i) { return "round " + std::to_string(i) + std::string(i % 3000, 'r'); };
  std::thread writer([&]() {
    for (int i = 0; !stop; ++i) {
      std::string name = "f" + std::to_string(i);
      int fd = open((mnt + "/" + name).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      std::string b = body(i);
      bool ok = fd >= 0 && write(fd, b.data(), b.size()) == static_cast<ssize_t>(b.size());
      if (fd >= 0) ok = close(fd) == 0 && ok;
      std::lock_guard<std::mutex> lock(modelMutex);
      if (!ok) {
        error = "round " + std::to_string(i) + ": " + strerror(errno);
        return;
      }
      model[name] = b;
      if (i % 3 == 1) {  // the one before moves, or goes
        std::string before = "f" + std::to_string(i - 1);
        if (i % 2 == 0) {
          if (rename((mnt + "/" + before).c_str(), (mnt + "/m" + std::to_string(i - 1)).c_str())) {
            error = "rename: " + std::string(strerror(errno));
            return;
          }
          model["m" + std::to_string(i - 1)] = model[before];
        } else if (unlink((mnt + "/" + before).c_str())) {
          error = "unlink: " + std::string(strerror(errno));
          return;
        }
        model.erase(before);
      }
      rounds = i + 1;
    }
  });
  auto after = [&](int more) {
    int target = rounds + more;
    return waitFor(60, [&]() { return rounds >= target || !error.empty(); });
  };
  EXPECT_TRUE(after(50));
  cluster->killMaster(SIGKILL);
  cluster->startMaster();
  EXPECT_TRUE(after(50));
  cluster->killChunkserver(0);
  cluster->startChunkserver(0);
  EXPECT_TRUE(after(50));
  stop = true;
  writer.join();
  ASSERT_TRUE(error.empty()) << error;
  // Every answered change is there, and nothing else; then the same after another kill -9
  // of the master, with no fsync in between.
  for (int pass = 0; pass < 2; ++pass) {
    std::set<std::string> names;
    for (auto& e : std::filesystem::directory_iterator(mnt)) names.insert(e.path().filename());
    for (auto& [name, content] : model) {
      EXPECT_TRUE(names.count(name)) << name << " (pass " << pass << ")";
      EXPECT_TRUE(readFile(mnt + "/" + name) == content) << name;
    }
    EXPECT_EQ(names.size(), model.size());
    if (pass == 0) {
      cluster->killMaster(SIGKILL);
      cluster->startMaster();
    }
  }
  std::cout << rounds << " rounds; " << model.size() << " files kept\n";
}

TEST_F(FaultTest, TrashRestoreExpireAndOrphans) {
  // Long enough for the four CLI calls between the rm and the restore on a loaded machine.
  start(3, {"--trash-seconds", "8"});
  std::string data = randomBytes(MIB + 10, 9);
  std::string err;
  ASSERT_EQ(cluster->cli({"mkdir", "/keep"}, nullptr, &err), 0);
  cluster->put(data, "/keep/me");
  writeFile(local("in"), data);
  ASSERT_NE(cluster->cli({"put", local("in"), "/nodir/x"}, nullptr, &err), 0);
  EXPECT_NE(err.find("nodir"), std::string::npos) << err;
  ASSERT_EQ(cluster->cli({"mkdir", "-p", "/d/e"}, nullptr, &err), 0);
  cluster->put(data, "/d/e/f");
  ASSERT_EQ(cluster->cli({"rm", "/d/e/f"}, nullptr, &err), 0) << err;
  auto trash = json({"trash", "ls", "--json"});
  ASSERT_EQ(trash.size(), 1u);
  EXPECT_EQ(trash[0]["path"], "/d/e/f");
  ASSERT_EQ(cluster->cli({"rm", "-r", "/d"}, nullptr, &err), 0) << err;
  ASSERT_EQ(cluster->cli({"trash", "restore", "/d/e/f"}, nullptr, &err), 0) << err;
  EXPECT_TRUE(cluster->get("/d/e/f") == data);  // parents made again
  // Deleted again and left to expire: the chunks leave every chunkserver's disk.
  auto l = json({"locate", "--json", "/d/e/f"});
  std::string handle = l["chunks"][0]["handle"];
  ASSERT_EQ(cluster->cli({"rm", "/d/e/f"}, nullptr, &err), 0);
  EXPECT_TRUE(waitFor(20, [&]() {
    for (size_t i = 0; i < 3; ++i) {
      if (std::filesystem::exists(chunkFile(i, handle))) return false;
    }
    return json({"trash", "ls", "--json"}).empty();
  }));
  EXPECT_NE(cluster->cli({"trash", "restore", "/d/e/f"}, nullptr, &err), 0);
  // An orphan: a chunk the master never made, found at a chunkserver's start.
  cluster->killChunkserver(0);
  auto keep = json({"locate", "--json", "/keep/me"})["chunks"][0]["handle"].get<std::string>();
  std::string orphan = chunkFile(0, "fffff1");
  std::filesystem::create_directories(std::filesystem::path(orphan).parent_path());
  writeFile(orphan, "orphan bytes");
  writeFile(orphan + ".meta", std::string(32, '\0'));
  cluster->startChunkserver(0);
  EXPECT_TRUE(waitFor(15, [&]() { return !std::filesystem::exists(orphan); }));
  EXPECT_TRUE(cluster->get("/keep/me") == data);
}

TEST_F(FaultTest, GoalsRiseAndFall) {
  start(4);
  std::string data = randomBytes(3 * MIB, 10);
  cluster->put(data, "/f");
  std::string err;
  ASSERT_EQ(cluster->cli({"setrep", "2", "/f"}, nullptr, &err), 0) << err;
  EXPECT_TRUE(waitFor(20, [&]() {
    return holders("/f", 0).size() == 2 && holders("/f", 2).size() == 2 && healthy();
  }));
  ASSERT_EQ(cluster->cli({"setrep", "4", "/f"}, nullptr, &err), 0) << err;
  EXPECT_TRUE(waitFor(30, [&]() {
    return holders("/f", 0).size() == 4 && holders("/f", 2).size() == 4 && healthy();
  }));
  EXPECT_TRUE(cluster->get("/f") == data);
}

TEST_F(FaultTest, DecommissionDrainsAServerAndBalanceFillsANewOne) {
  start(3);
  std::string data = randomBytes(12 * MIB, 11);
  cluster->put(data, "/f", {"-r", "2"});
  cluster->startChunkserver(3);  // an empty newcomer
  cluster->waitForLiveChunkservers(4);
  std::string out, err;
  ASSERT_EQ(cluster->cli({"admin", "balance", "--threshold", "0.5", "--wait", "--timeout", "60"},
                         &out, &err),
            0)
      << err;
  auto servers = json({"servers", "--json"});
  for (auto& s : servers["servers"]) {
    if (s["address"] == cluster->chunkserverAddress(3)) {
      EXPECT_GT(s["chunks"], 0);
    }
  }
  std::string leaving = cluster->chunkserverAddress(0);
  ASSERT_EQ(
      cluster->cli({"admin", "decommission", leaving, "--wait", "--timeout", "60"}, &out, &err), 0)
      << err;
  EXPECT_NE(out.find("safe to remove"), std::string::npos);
  cluster->killChunkserver(0);
  EXPECT_TRUE(cluster->get("/f") == data);
  for (size_t i = 0; i < 12; ++i) EXPECT_FALSE(holders("/f", i).count(leaving));
}

TEST_F(FaultTest, AFullChunkserverRefusesChunksAndKeepsWhatItHas) {
  // Chunkserver 3's data lives on a 6 MiB tmpfs; the others have room.
  cluster = std::make_unique<ProcessCluster>(MIB, std::vector<std::string>{"--dead-after", "2"});
  testing::Tmpfs tiny(cluster->dir() + "/cs3", "6m");
  ASSERT_TRUE(tiny.ok) << "cannot mount a tmpfs (root needed)";
  cluster->startMaster();
  for (size_t i = 0; i < 4; ++i) cluster->startChunkserver(i);
  cluster->waitForLiveChunkservers(4);
  std::vector<std::string> files;
  for (int f = 0; f < 8; ++f) {
    files.push_back(randomBytes(3 * MIB + 1000, 300 + f));
    cluster->put(files.back(), "/f" + std::to_string(f));
  }
  for (int f = 0; f < 8; ++f) EXPECT_TRUE(cluster->get("/f" + std::to_string(f)) == files[f]) << f;
  // The full server took chunks while it had room and then no more; what it holds is intact.
  size_t onTiny = 0;
  uint64_t bytesOnTiny = 0;
  for (int f = 0; f < 8; ++f) {
    auto l = json({"locate", "--json", "/f" + std::to_string(f)});
    for (auto& c : l["chunks"]) {
      for (auto& r : c["replicas"]) {
        if (r["address"] != cluster->chunkserverAddress(3)) continue;
        ++onTiny;
        bytesOnTiny += c["size"].get<uint64_t>();
      }
    }
  }
  EXPECT_GT(onTiny, 0u);
  EXPECT_LE(bytesOnTiny, 6 * MIB);  // 6 MiB of room for 24 MiB of chunks
  // Read everything with only the full server and one other left: whatever it holds reads.
  EXPECT_TRUE(waitFor(30, [&]() { return healthy(); }));
  for (int f = 0; f < 8; ++f) EXPECT_TRUE(cluster->get("/f" + std::to_string(f)) == files[f]) << f;
}

TEST_F(FaultTest, AMasterWhoseMetadataDiskFillsStopsAndStartsAgainWhenThereIsRoom) {
  // The master's data lives on an 8 MiB tmpfs, which the test fills behind its back.
  cluster = std::make_unique<ProcessCluster>(MIB, std::vector<std::string>{"--dead-after", "2"});
  testing::Tmpfs disk(cluster->dir() + "/master", "8m");
  ASSERT_TRUE(disk.ok) << "cannot mount a tmpfs (root needed)";
  cluster->startMaster();
  cluster->startChunkserver(0);
  cluster->waitForLiveChunkservers(1);
  ASSERT_EQ(cluster->cli({"mkdir", "/before"}), 0);  // a finished command: synced
  std::string filler = disk.path + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    std::string block(1 << 16, 'x');
    while (out.write(block.data(), block.size())) {
    }
  }
  // Changes go on while the log's last page has room; then one cannot be written: the
  // master refuses it and stops rather than serve what its disk does not hold.
  int answered = 0;
  while (answered < 500 && cluster->cli({"mkdir", "/after" + std::to_string(answered)}) == 0) {
    ++answered;
  }
  EXPECT_LT(answered, 500);
  auto exited = [&]() {
    std::ifstream stat("/proc/" + std::to_string(cluster->masterPid()) + "/stat");
    std::string pid, comm, state;
    stat >> pid >> comm >> state;
    return !stat || state == "Z";
  };
  EXPECT_TRUE(waitFor(30, exited));
  EXPECT_NE(readFile(cluster->dir() + "/master.log").find("stopping: the metadata store failed"),
            std::string::npos);
  // With room again it starts from its disk: what was answered before is there.
  std::filesystem::remove(filler);
  cluster->killMaster();  // reaps it
  cluster->startMaster();
  EXPECT_EQ(cluster->cli({"stat", "/before"}), 0);
  for (int i = 0; i < answered; ++i) {
    EXPECT_EQ(cluster->cli({"stat", "/after" + std::to_string(i)}), 0) << i;
  }
  EXPECT_EQ(cluster->cli({"mkdir", "/later"}), 0);
}

}  // namespace
}  // namespace cairn
