#pragma once
// A MapReduce worker: joins the coordinator, runs up to `slots` tasks at a time on threads
// of its own, keeps map output in its scratch directory and serves it to reducers. Rejoins
// when the coordinator restarts or declares it lost.

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "cairn_io.h"
#include "disk_pool.h"
#include "mapreduce.capnp.h"
#include "protocol.h"
#include "rpc.h"

namespace cairn::mapreduce {

struct WorkerOptions {
  std::string coordinator;  // HOST:PORT
  std::string scratch;      // map output and sort runs
  uint32_t slots = 2;
  std::string host;               // the host name chunkservers advertise here, for locality
  std::string address;            // HOST:PORT this worker serves map output on
  size_t mapMemory = 64 << 20;    // per map task, before the table is written out
  size_t sortMemory = 128 << 20;  // per reduce task, before sorted runs spill
  kj::Duration heartbeat = 1 * kj::SECONDS;
  std::function<void()> joined;  // called after each successful join
  RpcSecurity security;          // of every connection this worker makes
};

class Worker final : private kj::TaskSet::ErrorHandler {
 public:
  // Clears the scratch directory's job files left by an earlier run.
  Worker(WorkerOptions options, kj::Network& network, kj::Timer& timer);
  ~Worker() noexcept(false);

  // What a peer is served: map output goes to other workers and admins only.
  wire::Worker::Client capabilityFor(const Identity& peer);
  // Joins (retrying until the coordinator answers) and starts working; the work goes on
  // in the background, joining again whenever the coordinator loses this worker.
  kj::Promise<void> start();

 private:
  class Service;

  kj::Promise<void> join();
  kj::Promise<void> slotLoop(uint64_t generation);
  kj::Promise<void> heartbeatLoop(uint64_t generation);
  void rejoin(uint64_t generation, const std::string& why);
  void dropJobs(capnp::List<uint64_t>::Reader jobs);

  // Blocking, on a task thread.
  AttemptResult execute(const TaskOrder& order, CairnIo& fs);
  Status runReduceTask(const TaskOrder& order, CairnIo& fs, AttemptResult& result);
  // The reduce of `order`, its output lines passed to `out`.
  Status reduceInto(const TaskOrder& order, AttemptResult& result,
                    const std::function<Status(std::string_view)>& out);
  // JobSpec::appendOutput: the output lines appended as records to OUTPUT/records.
  Status runAppendingReduce(const TaskOrder& order, CairnIo& fs, uint64_t outputDir,
                            AttemptResult& result);
  Result<std::string> fetch(const MapOutputLocation& from, const TaskOrder& order, uint64_t offset,
                            bool* eof);
  // On the loop.
  kj::Promise<Result<std::string>> fetchOnce(MapOutputLocation from, uint64_t jobId,
                                             uint32_t partition, uint64_t offset, bool* eof);

  void taskFailed(kj::Exception&& exception) override;

  WorkerOptions opts;
  kj::Timer& timer;
  const kj::Executor& executor;
  PeerPool peers;
  // Replaced when a join names another master; each task keeps the one it started with.
  std::shared_ptr<CairnIo> io;
  std::string master;
  kj::Maybe<wire::WorkerSession::Client> session;
  uint64_t generation = 0;  // bumped on each join; loops of older joins stop
  // Jobs the coordinator said have ended: written on the loop, read by task threads.
  mutable std::mutex endedMutex;
  std::set<uint64_t> ended;
  bool jobEnded(uint64_t jobId) const;
  DiskPool taskPool;
  DiskPool servePool{2};
  kj::TaskSet tasks;
};

}  // namespace cairn::mapreduce
