// Master availability on real processes: two masters that elect one active through a real
// ZooKeeper, killed, paused, restarted and handed over while a mount and the CLI write.
// What was acknowledged must be there, once, afterwards.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cluster.h"
#include "fixture.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::readFile;
using Clock = std::chrono::steady_clock;

class HaTest : public testing::ClusterFixture {
 protected:
  void startHa(std::vector<std::string> masterFlags = {}) {
    cluster = std::make_unique<ProcessCluster>(
        1 << 20, std::vector<std::string>{"--dead-after", "3", "--safe-mode-timeout", "10"});
    cluster->setChunkserverFlags({"--scrub-interval", "0.2"});
    cluster->startHaMasters(2, masterFlags);
    for (size_t i = 0; i < 3; ++i) cluster->startChunkserver(i);
    active = cluster->waitForActiveMaster(20000);
    ASSERT_GE(active, 0) << readFile(cluster->dir() + "/master0.log");
    cluster->waitForLiveChunkservers(3);
    // In sync: the standby could take over from now on.
    ASSERT_TRUE(waitFor(20, [&]() { return roleOf(standby()) == "standby"; })) << roleOf(standby());
  }
  int standby() const { return 1 - active; }
  // The role `cairn admin masters` gives master i ("" if it did not answer).
  std::string roleOf(int i) {
    auto all = json({"admin", "masters", "--json"});
    if (all.is_null()) {
      // Exit 1: no master active; the output is still there.
      std::string out;
      cluster->cli({"admin", "masters", "--json"}, &out);
      if (out.empty()) return "";
      all = nlohmann::json::parse(out);
    }
    for (auto& m : all) {
      if (m["address"] == cluster->masterAddressAt(i)) return m["role"];
    }
    return "";
  }
  std::string content(const std::string& what, int i) {
    return what + " " + std::to_string(i) + " " + std::string(100 + i % 300, 'a' + i % 26);
  }

  int active = -1;
};

// Writes through a mount: each round creates a file (written, fsync'd, closed) and appends
// a line to one log (O_APPEND, fsync'd). What returned success is acknowledged.
struct MountWriter {
  std::string dir;
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::vector<std::string> errors;
  std::vector<Clock::time_point> doneAt;  // when each round was acknowledged
  std::thread thread;

  static std::string body(int i) {
    return "file " + std::to_string(i) + std::string(i % 5000, 'x');
  }

  void run() {
    int logFd = open((dir + "/log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (logFd < 0) {
      errors.push_back(std::string("open log: ") + strerror(errno));
      return;
    }
    for (int i = 0; !stop; ++i) {
      std::string path = dir + "/f" + std::to_string(i);
      int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      std::string b = body(i);
      std::string line = std::to_string(i) + "\n";
      bool ok = fd >= 0 && write(fd, b.data(), b.size()) == static_cast<ssize_t>(b.size()) &&
                fsync(fd) == 0;
      if (fd >= 0) ok = close(fd) == 0 && ok;
      ok = ok && write(logFd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
           fsync(logFd) == 0;
      if (!ok) {
        errors.push_back("round " + std::to_string(i) + ": " + strerror(errno));
        break;
      }
      acknowledged = i + 1;
      doneAt.push_back(Clock::now());
    }
    close(logFd);
  }
};

TEST_F(HaTest, KillingTheActiveDuringWritesLosesNothingAcknowledged) {
  startHa();
  std::string mnt = cluster->mount();
  ASSERT_EQ(mkdir((mnt + "/w").c_str(), 0755), 0);
  ASSERT_EQ(cluster->cli({"mkdir", "/c"}), 0);

  MountWriter writer;
  writer.dir = mnt + "/w";
  writer.thread = std::thread([&]() { writer.run(); });
  std::atomic<bool> stopCli{false};
  std::atomic<int> cliAcknowledged{0};
  std::vector<std::string> cliErrors;
  std::thread cliWriter([&]() {
    for (int i = 0; !stopCli; ++i) {
      std::string local = cluster->dir() + "/cli" + std::to_string(i);
      testing::writeFile(local, content("cli", i));
      std::string err;
      if (cluster->cli({"put", local, "/c/p" + std::to_string(i)}, nullptr, &err) != 0) {
        cliErrors.push_back("put " + std::to_string(i) + ": " + err);
        break;
      }
      cliAcknowledged = i + 1;
      unlink(local.c_str());
    }
  });

  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  int before = writer.acknowledged;
  cluster->killMasterAt(active, SIGKILL);
  int next = cluster->waitForActiveMaster(30000);
  ASSERT_EQ(next, standby());
  // The writers go on: wait for a few more rounds after the failover.
  ASSERT_TRUE(
      waitFor(30, [&]() { return writer.acknowledged > before + 20 || !writer.errors.empty(); }));
  writer.stop = true;
  stopCli = true;
  writer.thread.join();
  cliWriter.join();
  EXPECT_TRUE(writer.errors.empty()) << writer.errors.front();
  EXPECT_TRUE(cliErrors.empty()) << cliErrors.front();

  // The pause the application saw: the longest gap between two acknowledged rounds.
  double longest = 0;
  for (size_t i = 1; i < writer.doneAt.size(); ++i) {
    longest = std::max(
        longest, std::chrono::duration<double>(writer.doneAt[i] - writer.doneAt[i - 1]).count());
  }
  std::cout << "failover: longest pause between acknowledged writes " << longest
            << " s across kill -9 of the active; " << writer.acknowledged << " mount rounds, "
            << cliAcknowledged << " CLI puts\n";
  EXPECT_LT(longest, 15.0);

  // Everything acknowledged is there, once.
  int acked = writer.acknowledged;
  for (int i = 0; i < acked; ++i) {
    ASSERT_EQ(readFile(mnt + "/w/f" + std::to_string(i)), MountWriter::body(i)) << "file " << i;
  }
  std::istringstream log(readFile(mnt + "/w/log"));
  std::string line;
  std::vector<int> lines;
  while (std::getline(log, line)) lines.push_back(std::stoi(line));
  ASSERT_GE(lines.size(), static_cast<size_t>(acked));
  for (int i = 0; i < acked; ++i) EXPECT_EQ(lines[i], i) << "log line " << i;
  for (int i = 0; i < cliAcknowledged; ++i) {
    ASSERT_EQ(cluster->get("/c/p" + std::to_string(i)), content("cli", i)) << "put " << i;
  }
  // And the old active, restarted, follows as a standby.
  cluster->startMasterAt(active);
  EXPECT_TRUE(waitFor(20, [&]() { return roleOf(active) == "standby"; })) << roleOf(active);
}

TEST_F(HaTest, APausedActiveIsFencedAndComesBackAsAStandby) {
  startHa();
  ASSERT_EQ(cluster->cli({"mkdir", "/p"}), 0);
  cluster->put(content("before", 0), "/p/before");
  int paused = active;
  cluster->signalMasterAt(paused, SIGSTOP);
  // Longer than the ZooKeeper session (4 s): the standby is elected meanwhile.
  int next = cluster->waitForActiveMaster(30000);
  for (int i = 0; i < 50 && next == paused; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    next = cluster->waitForActiveMaster(1000);
  }
  // (The paused master cannot answer: the only one answering active is the other.)
  ASSERT_EQ(next, standby());
  for (int i = 0; i < 5; ++i) cluster->put(content("during", i), "/p/during" + std::to_string(i));
  cluster->signalMasterAt(paused, SIGCONT);
  // It learns it lost, changes nothing, and starts again as a standby.
  ASSERT_TRUE(waitFor(30, [&]() { return roleOf(paused) == "standby"; })) << roleOf(paused);
  std::string log = readFile(cluster->dir() + "/master" + std::to_string(paused) + ".log");
  EXPECT_NE(log.find("restarting as a standby"), std::string::npos) << log;
  // Its store closed before its files did: no write of it failed on the way.
  EXPECT_EQ(log.find("metadata write failed"), std::string::npos) << log;
  for (int i = 5; i < 10; ++i) cluster->put(content("during", i), "/p/during" + std::to_string(i));

  // Hand back on purpose: the once-paused master holds everything.
  std::string out, err;
  ASSERT_TRUE(waitFor(20, [&]() {
    return cluster->cli({"admin", "failover"}, &out, &err) == 0;
  })) << err;
  ASSERT_TRUE(waitFor(30, [&]() { return roleOf(paused) == "active"; })) << roleOf(paused);
  EXPECT_EQ(cluster->get("/p/before"), content("before", 0));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(cluster->get("/p/during" + std::to_string(i)), content("during", i)) << i;
  }
  // The epoch moved at each change of hands, and every master comes to agree on it (the
  // one that handed back restarts as a standby and learns it from the log).
  nlohmann::json all;
  EXPECT_TRUE(waitFor(30, [&]() {
    all = json({"admin", "masters", "--json"});
    if (all.is_null() || all.size() != 2) return false;
    for (auto& m : all) {
      if (m["epoch"].get<uint64_t>() < 3) return false;
    }
    return true;
  })) << all.dump();
}

TEST_F(HaTest, ANewStandbyCopiesASnapshotWhileWritesGoOnAndCanTakeOver) {
  // A short log: a standby that was away for more than 50 entries needs a snapshot.
  startHa({"--log-keep-entries", "50"});
  ASSERT_EQ(cluster->cli({"mkdir", "/s"}), 0);
  cluster->killMasterAt(standby(), SIGKILL);
  // Its disk is lost as well: it comes back empty.
  std::filesystem::remove_all(cluster->dir() + "/master" + std::to_string(standby()));
  for (int i = 0; i < 120; ++i) {
    ASSERT_EQ(cluster->cli({"mkdir", "/s/d" + std::to_string(i)}), 0);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::thread writer([&]() {
    for (int i = 0; !stop; ++i) {
      std::string local = cluster->dir() + "/w" + std::to_string(i);
      testing::writeFile(local, content("w", i));
      if (cluster->cli({"put", local, "/s/w" + std::to_string(i)}) != 0) break;
      acknowledged = i + 1;
    }
  });
  cluster->startMasterAt(standby());
  bool caughtUp = waitFor(30, [&]() { return roleOf(standby()) == "standby"; });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  writer.join();
  ASSERT_TRUE(caughtUp) << readFile(cluster->dir() + "/master" + std::to_string(standby()) +
                                    ".log");
  std::string activeLog = readFile(cluster->dir() + "/master" + std::to_string(active) + ".log");
  EXPECT_NE(activeLog.find("snapshot at entry"), std::string::npos) << activeLog;

  // The new standby holds everything: it takes over when the active dies.
  cluster->killMasterAt(active, SIGKILL);
  ASSERT_EQ(cluster->waitForActiveMaster(30000), standby());
  std::string out;
  ASSERT_EQ(cluster->cli({"ls", "/s"}, &out), 0);
  for (int i = 0; i < 120; ++i) {
    EXPECT_NE(out.find("d" + std::to_string(i) + "\n"), std::string::npos) << i;
  }
  for (int i = 0; i < acknowledged; ++i) {
    EXPECT_EQ(cluster->get("/s/w" + std::to_string(i)), content("w", i)) << i;
  }
}

TEST_F(HaTest, AStandbyInSyncAnswersReadsAndTakesOverWithoutSafeMode) {
  startHa();
  ASSERT_EQ(cluster->cli({"mkdir", "/r"}), 0);
  std::string data;
  for (int i = 0; data.size() < (5u << 19); ++i) data += content("r", i);  // 3 chunks
  cluster->put(data, "/r/f");
  // The standby alone: stat, list and read (its locations come from the chunkservers'
  // reports of their changes).
  std::string sb = cluster->masterAddressAt(standby());
  auto onStandby = [&](std::vector<std::string> args, std::string* out = nullptr,
                       std::string* err = nullptr) {
    args.insert(args.begin(), {ProcessCluster::binary("cairn"), "--master", sb});
    return cluster->run(args, out, err);
  };
  std::string local = cluster->dir() + "/from-standby";
  ASSERT_TRUE(waitFor(10, [&]() {
    return onStandby({"get", "/r/f", local}) == 0 && readFile(local) == data;
  })) << readFile(cluster->dir() + "/master" + std::to_string(standby()) + ".log");
  std::string out, err;
  ASSERT_EQ(onStandby({"ls", "/r"}, &out), 0);
  EXPECT_NE(out.find("f"), std::string::npos) << out;
  // It changes nothing itself.
  EXPECT_NE(onStandby({"mkdir", "/r/x"}, nullptr, &err), 0);
  EXPECT_NE(err.find("standby"), std::string::npos) << err;
  // With both masters and standby reads on, reads and writes go on as before.
  setenv("CAIRN_STANDBY_READS", "1", 1);
  cluster->put(content("r", 1), "/r/g");
  EXPECT_EQ(cluster->get("/r/g"), content("r", 1));
  EXPECT_EQ(cluster->get("/r/f"), data);
  unsetenv("CAIRN_STANDBY_READS");

  // The active dies: the standby knows where every chunk is and serves at once, without
  // the safe mode of a master that waits for full reports.
  cluster->killMasterAt(active, SIGKILL);
  ASSERT_EQ(cluster->waitForActiveMaster(30000), standby());
  auto health = json({"admin", "health", "--json"});
  ASSERT_FALSE(health.is_null());
  EXPECT_FALSE(health["safe_mode"].get<bool>()) << health.dump();
  EXPECT_EQ(health["missing"].get<uint64_t>(), 0u) << health.dump();
  EXPECT_EQ(cluster->get("/r/f"), data);
  std::string log = readFile(cluster->dir() + "/master" + std::to_string(standby()) + ".log");
  EXPECT_NE(log.find("took over the replica map of 3 chunkservers"), std::string::npos) << log;
}

TEST_F(HaTest, ZooKeeperGoneMeansNoActiveAndItsReturnMeansOneAgain) {
  startHa();
  cluster->put(content("zk", 1), "/zk1");
  cluster->killZooKeeper(SIGKILL);
  // The active cannot know it still holds the role: it stops answering mutations.
  ASSERT_TRUE(waitFor(20, [&]() { return roleOf(0) != "active" && roleOf(1) != "active"; }));
  cluster->startZooKeeper();
  int now = cluster->waitForActiveMaster(30000);
  ASSERT_GE(now, 0);
  cluster->put(content("zk", 2), "/zk2");
  EXPECT_EQ(cluster->get("/zk1"), content("zk", 1));
  EXPECT_EQ(cluster->get("/zk2"), content("zk", 2));
}

}  // namespace
}  // namespace cairn
