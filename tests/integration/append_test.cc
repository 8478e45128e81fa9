// Record append on a real cluster: 16 appenders (4 threads on each of 3 mounts, writing
// one record per write(2) on an O_APPEND descriptor, and 4 `cairn append` processes), 10,000
// records each, to one file. Every record is there, whole, at least once (exactly once
// without faults), and none spans two chunks; the same with a chunkserver killed mid-run
// and with a secondary whose disk fills up mid-run.

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "cluster.h"
#include "fixture.h"
#include "record_io.h"

namespace cairn {
namespace {

using testing::writeFile;

constexpr uint64_t MIB = 1 << 20;
constexpr int RECORDS = 10'000;
constexpr int MOUNTS = 3, THREADS_PER_MOUNT = 4, CLI_APPENDERS = 4;

class AppendTest : public testing::ClusterFixture {
 protected:
  enum class Fault { NONE, KILL_CHUNKSERVER, FULL_SECONDARY };

  // Runs all 16 appenders against /log; `midRun` is called once a third of the mounts'
  // records are written. Returns the number of copies of each record, by payload.
  std::map<std::string, int> run(const std::function<void()>& midRun) {
    std::vector<std::string> mounts;
    for (int m = 0; m < MOUNTS; ++m) mounts.push_back(cluster->mount());
    int fd = open((mounts[0] + "/log").c_str(), O_CREAT | O_WRONLY | O_APPEND, 0666);
    EXPECT_GE(fd, 0) << strerror(errno);
    close(fd);
    // The CLI appenders' input: one record per line.
    std::vector<std::string> inputs;
    for (int k = 0; k < CLI_APPENDERS; ++k) {
      std::string lines;
      for (int i = 0; i < RECORDS; ++i) lines += fmt::format("cli{}:{:05} {}\n", k, i, filler(i));
      inputs.push_back(local(fmt::format("input{}", k)));
      writeFile(inputs.back(), lines);
    }
    std::atomic<int> written{0}, failures{0};
    std::vector<std::thread> threads;
    for (int k = 0; k < CLI_APPENDERS; ++k) {
      threads.emplace_back([&, k]() {
        std::string out, err;
        int rc = cluster->run(
            {"/bin/bash", "-c", "exec \"$0\" --master \"$1\" append /log < \"$2\"",
             testing::ProcessCluster::binary("cairn"), cluster->masterAddress(), inputs[k]},
            &out, &err);
        if (rc != 0) {
          ADD_FAILURE() << "cairn append " << k << " exited " << rc << ": " << out << err;
          failures++;
        }
      });
    }
    for (int m = 0; m < MOUNTS; ++m) {
      for (int t = 0; t < THREADS_PER_MOUNT; ++t) {
        threads.emplace_back([&, m, t]() {
          int fd = open((mounts[m] + "/log").c_str(), O_WRONLY | O_APPEND);
          if (fd < 0) {
            ADD_FAILURE() << "open: " << strerror(errno);
            failures++;
            return;
          }
          RecordWriter w;
          for (int i = 0; i < RECORDS; ++i) {
            std::string rec;
            w.frame(fmt::format("m{}t{}:{:05} {}\n", m, t, i, filler(i)), rec);
            if (write(fd, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size())) {
              ADD_FAILURE() << "write: " << strerror(errno);
              failures++;
              break;
            }
            if (i % 500 == 499 && fsync(fd) != 0) {
              ADD_FAILURE() << "fsync: " << strerror(errno);
              failures++;
              break;
            }
            written++;
          }
          if (close(fd) != 0) {
            ADD_FAILURE() << "close: " << strerror(errno);
            failures++;
          }
        });
      }
    }
    constexpr int MOUNT_RECORDS = MOUNTS * THREADS_PER_MOUNT * RECORDS;
    waitFor(120, [&]() { return written >= MOUNT_RECORDS / 3 || failures > 0; });
    midRun();
    for (auto& t : threads) t.join();
    for (auto& m : mounts) cluster->unmount(m);

    std::string file = cluster->get("/log");
    std::map<std::string, int> copies;
    RecordReader reader(false);
    reader.feed(file, [&](const Record& r) {
      copies[std::string(r.payload.substr(0, r.payload.find(' ')))]++;
      uint64_t end = r.offset + RECORD_HEADER + r.payload.size();
      EXPECT_EQ(r.offset / MIB, (end - 1) / MIB) << "a record spans chunks at " << r.offset;
    });
    return copies;
  }

  static std::string filler(int i) { return std::string(static_cast<size_t>(20 + i % 60), 'x'); }

  // Every record of every appender there at least once (exactly once with `exact`).
  void expectAll(const std::map<std::string, int>& copies, bool exact) {
    size_t expected = 0, missing = 0, extra = 0;
    auto check = [&](const std::string& id) {
      ++expected;
      auto it = copies.find(id);
      if (it == copies.end()) {
        if (missing++ < 5) ADD_FAILURE() << "record " << id << " is missing";
      } else if (exact && it->second != 1) {
        if (extra++ < 5) ADD_FAILURE() << "record " << id << " is there " << it->second << " times";
      }
    };
    for (int i = 0; i < RECORDS; ++i) {
      for (int k = 0; k < CLI_APPENDERS; ++k) check(fmt::format("cli{}:{:05}", k, i));
      for (int m = 0; m < MOUNTS; ++m) {
        for (int t = 0; t < THREADS_PER_MOUNT; ++t) check(fmt::format("m{}t{}:{:05}", m, t, i));
      }
    }
    EXPECT_EQ(missing, 0u);
    EXPECT_EQ(extra, 0u);
    EXPECT_EQ(copies.size(), expected) << "records nobody wrote";
  }
};

TEST_F(AppendTest, SixteenAppendersEveryRecordExactlyOnce) {
  start(4);
  expectAll(run([]() {}), true);
}

TEST_F(AppendTest, AChunkserverKilledMidRunLosesNoRecord) {
  start(4);
  expectAll(run([&]() { cluster->killChunkserver(1); }), false);
}

TEST_F(AppendTest, ASecondaryWhoseDiskFillsMidRunLosesNoRecord) {
  // Chunkserver 3's data lives on a 4 MiB tmpfs: it fills up while the appenders run, and
  // its writes fail as a secondary (and as a primary) from then on.
  cluster = std::make_unique<testing::ProcessCluster>(
      MIB, std::vector<std::string>{"--dead-after", "2", "--safe-mode-timeout", "20"});
  testing::Tmpfs tiny(cluster->dir() + "/cs3", "4m");
  ASSERT_TRUE(tiny.ok) << "cannot mount a tmpfs (root needed)";
  cluster->startMaster();
  for (size_t i = 0; i < 4; ++i) cluster->startChunkserver(i);
  cluster->waitForLiveChunkservers(4);
  expectAll(run([]() {}), false);
}

TEST_F(AppendTest, OAppendWritesStayWholeWhileTheirMountFlushesAnother) {
  // Records of 3,000 bytes straddle the kernel's pages; a third descriptor on mount 0
  // fsyncs in a loop, so that appends go out in small batches: a write cut in two at a
  // page boundary would land in two appends with others' between them.
  start(3);
  std::string m0 = cluster->mount(), m1 = cluster->mount();
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  int created = open((m0 + "/log").c_str(), O_CREAT | O_WRONLY | O_APPEND, 0666);
  ASSERT_GE(created, 0);
  std::thread flusher([&]() {
    while (!done) {
      if (fsync(created) != 0) failures++;
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w]() {
      int fd = open(((w < 2 ? m0 : m1) + "/log").c_str(), O_WRONLY | O_APPEND);
      if (fd < 0) {
        failures++;
        return;
      }
      RecordWriter rw;
      for (int i = 0; i < 1000; ++i) {
        std::string rec;
        rw.frame(fmt::format("w{}:{:05} {}", w, i, std::string(2950, 'p')), rec);
        if (write(fd, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size())) failures++;
      }
      if (close(fd) != 0) failures++;
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  flusher.join();
  close(created);
  EXPECT_EQ(failures, 0);
  cluster->unmount(m0);
  cluster->unmount(m1);
  std::map<std::string, int> copies;
  RecordReader reader(false);
  reader.feed(cluster->get("/log"), [&](const Record& r) {
    copies[std::string(r.payload.substr(0, r.payload.find(' ')))]++;
  });
  size_t wrong = 0;
  for (int w = 0; w < 4; ++w) {
    for (int i = 0; i < 1000; ++i) {
      auto it = copies.find(fmt::format("w{}:{:05}", w, i));
      if ((it == copies.end() || it->second != 1) && wrong++ < 5) {
        ADD_FAILURE() << fmt::format("w{}:{:05}", w, i) << " is there "
                      << (it == copies.end() ? 0 : it->second) << " times";
      }
    }
  }
  EXPECT_EQ(wrong, 0u);
}

}  // namespace
}  // namespace cairn
