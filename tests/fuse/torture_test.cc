// The model-checked random-operation test: several cairn-fsstress processes on two mounts
// of one cluster with small chunks, each doing sparse writes, truncates, fallocate modes,
// copy_file_range, renames, links, unlinks of open files, fsyncs and reopenings (through
// either mount) over files that cross chunk boundaries, every result compared with the
// same operations on a local directory. A failure names the seed and the step.
//
// CAIRN_TORTURE_OPS (default 1500 per process) and CAIRN_TORTURE_SEED (default 1) make
// longer or other runs; CAIRN_TORTURE_PROCS sets the number of processes (default 4).

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cluster.h"

namespace cairn {
namespace {

using testing::ProcessCluster;

uint64_t envOr(const char* name, uint64_t fallback) {
  const char* v = getenv(name);
  return v ? std::stoull(v) : fallback;
}

TEST(TortureTest, RandomOperationsOnTwoMountsMatchTheLocalDisk) {
  uint64_t ops = envOr("CAIRN_TORTURE_OPS", 1500);
  uint64_t seed = envOr("CAIRN_TORTURE_SEED", 1);
  uint64_t procs = envOr("CAIRN_TORTURE_PROCS", 4);
  ProcessCluster cluster(1 << 20, {"--trash-seconds", "0"});
  cluster.startMaster();
  for (size_t i = 0; i < 3; ++i) cluster.startChunkserver(i);
  cluster.waitForLiveChunkservers(3);
  // Names and attributes uncached, so that what one mount did is seen at once by the
  // other (with caching, only close-to-open holds across mounts, as documented).
  std::string a = cluster.mount("entry_timeout=0,attr_timeout=0");
  std::string b = cluster.mount("entry_timeout=0,attr_timeout=0");
  std::string local = cluster.dir() + "/model";
  std::filesystem::create_directories(local);
  struct Run {
    pid_t pid;
    uint64_t seed;
    std::string log;
  };
  std::vector<Run> runs;
  for (uint64_t p = 0; p < procs; ++p) {
    std::string sub = "/p" + std::to_string(p);
    uint64_t s = seed + p;
    std::string log = cluster.dir() + "/fsstress" + std::to_string(p) + ".log";
    std::vector<std::string> argv = {ProcessCluster::binary("bench/cairn-fsstress"),
                                     "--dir",
                                     a + sub,
                                     "--dir",
                                     b + sub,
                                     "--check",
                                     local + sub,
                                     "--ops",
                                     std::to_string(ops),
                                     "--seed",
                                     std::to_string(s),
                                     "--max-size",
                                     std::to_string(12 << 20)};
    pid_t pid = fork();
    if (pid == 0) {
      FILE* f = freopen(log.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> args;
      for (auto& x : argv) args.push_back(x.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    runs.push_back({pid, s, log});
  }
  for (auto& r : runs) {
    int status = 0;
    waitpid(r.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "cairn-fsstress --seed " << r.seed << " --ops " << ops << ": "
        << testing::readFile(r.log);
  }
}

}  // namespace
}  // namespace cairn
