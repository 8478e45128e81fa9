#pragma once
// The MapReduce coordinator: accepts jobs, plans their splits from the master's chunk
// locations, hands tasks to workers through their sessions, and commits the output. One
// event loop; planning and commits run on a pool thread over a blocking client.

#include <kj/async.h>
#include <kj/timer.h>

#include <memory>
#include <vector>

#include "cairn_io.h"
#include "disk_pool.h"
#include "mapreduce.capnp.h"
#include "metrics.h"
#include "scheduler.h"

namespace cairn::mapreduce {

struct CoordinatorOptions {
  std::string master;  // HOST:PORT
  SchedulerOptions scheduler;
  kj::Duration tickInterval = 500 * kj::MILLISECONDS;
  kj::Duration pollWait = 1 * kj::SECONDS;  // how long nextTask waits for work
  RpcSecurity security;                     // of the connection to the master
};

class Coordinator final : private kj::TaskSet::ErrorHandler {
 public:
  Coordinator(CoordinatorOptions options, kj::Timer& timer);
  ~Coordinator() noexcept(false);

  // What a peer is served: its certificate decides whose jobs it submits and whether it
  // may join as a worker.
  wire::Coordinator::Client capabilityFor(const Identity& peer);
  // Declares silent workers lost, on a timer; never resolves.
  kj::Promise<void> run();

  // The status page: jobs with their progress per phase, tasks with their worker and
  // locality, workers. No file name (no input or output path) is on it.
  std::string statusPage();
  // /metrics: tasks by phase and state, jobs by state, workers.
  Metrics& metrics() { return metrics_; }

 private:
  class Service;
  class Session;
  struct Plan {
    std::vector<Split> splits;
    uint32_t inputFiles = 0;
  };

  // Blocking, on the pool.
  Result<Plan> plan(const JobSpec& spec);
  Status addInput(const std::string& path, const FileAttr& attr, const Caller& who, Plan& plan);
  Status commit(const JobSpec& spec);
  void removeOutput(const JobSpec& spec);

  int64_t nowMs() const;
  void wakeWaiters();
  void taskFailed(kj::Exception&& exception) override;

  CoordinatorOptions opts;
  kj::Timer& timer;
  Scheduler scheduler;
  CairnIo io;
  DiskPool pool{2};
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters;
  Metrics metrics_;
  kj::TaskSet tasks;
};

}  // namespace cairn::mapreduce
