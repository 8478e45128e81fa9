// cairn-schedsim: the MapReduce coordinator's scheduler with simulated workers: one job of
// --maps map tasks (each split with replicas on 3 of --hosts hosts) and --reducers
// reduces, run to its end by --workers workers of 2 slots each, every attempt finishing at
// once. Reports the CPU time per assignment and per finished attempt, and the share of
// maps that ran beside a replica.
//
//   cairn-schedsim [--maps 100000] [--workers 1000] [--hosts 1000] [--reducers 100]

#include <time.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "log.h"
#include "scheduler.h"

namespace {

using namespace cairn;
using namespace cairn::mapreduce;

double cpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"the MapReduce scheduler with simulated workers"};
  size_t maps = 100000, workerCount = 1000, hosts = 1000;
  uint32_t reducers = 100;
  app.add_option("--maps", maps, "map tasks")->check(CLI::Range(1, 10000000));
  app.add_option("--workers", workerCount, "workers, 2 slots each")->check(CLI::Range(1, 100000));
  app.add_option("--hosts", hosts, "hosts the workers and replicas are on")
      ->check(CLI::Range(3, 100000));
  app.add_option("--reducers", reducers, "reduce tasks")->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  setLogLevel(LogLevel::ERROR);

  std::mt19937_64 random(1);
  auto host = [](size_t i) { return "host" + std::to_string(i); };
  std::vector<Split> splits(maps);
  for (size_t i = 0; i < maps; ++i) {
    splits[i].path = "/in";
    splits[i].start = i * (64ull << 20);
    splits[i].end = splits[i].start + (64ull << 20);
    size_t first = random() % hosts;
    for (size_t r = 0; r < 3; ++r) splits[i].hosts.push_back(host((first + r) % hosts));
  }
  Scheduler scheduler;
  bool done = false;
  scheduler.onReducesDone = [&](uint64_t) { done = true; };
  std::vector<uint64_t> workers;
  for (size_t w = 0; w < workerCount; ++w) {
    workers.push_back(scheduler.addWorker(host(w % hosts), host(w % hosts) + ":9500", 2, 0));
  }
  JobSpec spec;
  spec.inputs = {"/in"};
  spec.output = "/out";
  spec.reducers = reducers;
  spec.taskTimeoutMs = 1u << 30;
  uint64_t job = scheduler.addJob(spec, splits, 1, 0);

  // Each simulated second every worker heartbeats and fills its free slots; half of the
  // attempts running then finish (in random order).
  struct Running {
    uint64_t worker;
    Assignment a;
  };
  std::vector<Running> running;
  double assignCpu = 0, finishCpu = 0;
  uint64_t assignCalls = 0, finishCalls = 0;
  int64_t now = 0;
  while (!done) {
    now += 1000;
    for (uint64_t w : workers) scheduler.heartbeat(w, now);
    double t0 = cpuSeconds();
    for (uint64_t w : workers) {
      for (;;) {
        ++assignCalls;
        auto a = scheduler.assign(w, now);
        if (!a) break;
        running.push_back({w, *a});
      }
    }
    assignCpu += cpuSeconds() - t0;
    std::shuffle(running.begin(), running.end(), random);
    size_t finishing = (running.size() + 1) / 2;
    t0 = cpuSeconds();
    for (size_t i = 0; i < finishing; ++i) {
      AttemptResult r;
      r.jobId = running[i].a.jobId;
      r.task = running[i].a.task;
      r.attempt = running[i].a.attempt;
      r.isMap = running[i].a.isMap;
      scheduler.finish(running[i].worker, r, now);
      ++finishCalls;
    }
    finishCpu += cpuSeconds() - t0;
    running.erase(running.begin(), running.begin() + static_cast<std::ptrdiff_t>(finishing));
  }
  auto report = scheduler.report(job, now);
  printf("job: %zu maps, %u reduces, %zu workers on %zu hosts, %lld simulated seconds\n", maps,
         reducers, workerCount, hosts, static_cast<long long>(now / 1000));
  printf("assign: %llu calls, %.2f us each (%.2f s of CPU)\n",
         static_cast<unsigned long long>(assignCalls), assignCpu * 1e6 / assignCalls, assignCpu);
  printf("finish: %llu calls, %.2f us each\n", static_cast<unsigned long long>(finishCalls),
         finishCpu * 1e6 / finishCalls);
  printf("data-local maps: %.1f%%\n", 100.0 * report->dataLocalMaps / report->mapTasks);
  return 0;
}
