#include "coordinator.h"

#include <fmt/format.h>

#include "address.h"
#include "log.h"
#include "names.h"
#include "protocol.h"

namespace cairn::mapreduce {
namespace {

ClientOptions clientOptions(const std::string& master, const RpcSecurity& security) {
  ClientOptions o;
  o.master = master;
  o.security = security;
  return o;
}

Status withContext(const std::string& what, const Status& s) {
  return Status(s.code(), fmt::format("{}: {}", what, s.message()));
}

}  // namespace

// A worker's session: as long as it lives, the worker is known; its end (the worker's
// connection dropped) loses the worker.
class Coordinator::Session final : public wire::WorkerSession::Server {
 public:
  Session(Coordinator& c, uint64_t id) : c(c), id(id) {}
  ~Session() noexcept(false) {
    if (c.scheduler.knowsWorker(id)) {
      c.scheduler.workerLost(id, "its connection closed", c.nowMs());
      c.wakeWaiters();
    }
  }

  kj::Promise<void> nextTask(NextTaskContext context) override {
    if (!c.scheduler.knowsWorker(id)) return lost(context.getResults().initStatus());
    if (tryAssign(context)) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    c.waiters.push_back(kj::mv(paf.fulfiller));
    return paf.promise.exclusiveJoin(c.timer.afterDelay(c.opts.pollWait))
        .then([this, context]() mutable {
          if (!c.scheduler.knowsWorker(id)) return lost(context.getResults().initStatus());
          tryAssign(context);
          return kj::Promise<void>(kj::READY_NOW);
        });
  }

  kj::Promise<void> finish(FinishContext context) override {
    if (!c.scheduler.knowsWorker(id)) return lost(context.getResults().initStatus());
    c.scheduler.finish(id, fromWire(context.getParams().getResult()), c.nowMs());
    c.wakeWaiters();
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    if (!c.scheduler.heartbeat(id, c.nowMs())) return lost(context.getResults().initStatus());
    auto ended = c.scheduler.endedJobs();
    auto list = context.getResults().initDropJobs(static_cast<unsigned>(ended.size()));
    for (size_t i = 0; i < ended.size(); ++i) list.set(static_cast<unsigned>(i), ended[i]);
    return kj::READY_NOW;
  }

 private:
  template <typename Context>
  bool tryAssign(Context& context) {
    auto a = c.scheduler.assign(id, c.nowMs());
    if (!a) return false;
    auto results = context.getResults();
    results.setHas(true);
    toWire(*a, results.initTask());
    return true;
  }

  kj::Promise<void> lost(wire::Status::Builder status) {
    cairn::toWire(Status::notFound("this worker was declared lost; join again"), status);
    return kj::READY_NOW;
  }

  Coordinator& c;
  uint64_t id;
};

// The coordinator as one peer sees it: its certificate decides whose job it submits (a
// user's own; an admin's as stated) and whether it may join as a worker.
class Coordinator::Service final : public wire::Coordinator::Server {
 public:
  Service(Coordinator& c, Identity peer) : c(c), peer(std::move(peer)) {}

  kj::Promise<void> submit(SubmitContext context) override {
    JobSpec spec = fromWire(context.getParams().getSpec());
    Status valid = validateSpec(spec);
    if (valid.ok() && peer.authenticated) {
      if (peer.role == Role::USER) {
        // Outputs are made, and inputs read, as the submitter and nobody else.
        spec.uid = peer.uid;
        spec.gid = peer.gids.empty() ? peer.uid : peer.gids[0];
      } else if (peer.role != Role::ADMIN) {
        valid = Status::notPermitted(
            fmt::format("jobs are submitted with a user or admin certificate, not a {} one",
                        roleName(peer.role)));
      }
    }
    if (!valid.ok()) {
      cairn::toWire(valid, context.getResults().initStatus());
      return kj::READY_NOW;
    }
    spec.output = canonicalPath(spec.output);
    for (auto& in : spec.inputs) in = canonicalPath(in);
    return c.pool.run([this, spec]() { return c.plan(spec); })
        .then([this, context, spec](Result<Plan> plan) mutable {
          auto results = context.getResults();
          if (!plan.ok()) {
            cairn::toWire(plan.status, results.initStatus());
            return;
          }
          uint32_t maps = static_cast<uint32_t>(plan.value.splits.size());
          uint64_t id =
              c.scheduler.addJob(spec, kj::mv(plan.value.splits), plan.value.inputFiles, c.nowMs());
          logInfo("job {} ({}): {} input files, {} maps, {} reduces, output {}", id,
                  jobKindName(spec.kind), plan.value.inputFiles, maps, spec.reducers, spec.output);
          results.setJobId(id);
          c.wakeWaiters();
        });
  }

  kj::Promise<void> status(StatusContext context) override {
    uint64_t id = context.getParams().getJobId();
    auto report = c.scheduler.report(id, c.nowMs());
    auto results = context.getResults();
    if (!report) {
      cairn::toWire(Status::notFound(fmt::format("no job {} (finished long ago, or the "
                                                 "coordinator restarted)",
                                                 id)),
                    results.initStatus());
    } else {
      toWire(*report, results.initReport());
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> kill(KillContext context) override {
    uint64_t id = context.getParams().getJobId();
    Status s;
    if (peer.authenticated && peer.role != Role::ADMIN) {
      const JobSpec* spec = c.scheduler.spec(id);
      if (peer.role != Role::USER || (spec != nullptr && spec->uid != peer.uid)) {
        s = Status::notPermitted("only an admin or the job's submitter kills a job");
      }
    }
    if (s.ok()) s = c.scheduler.kill(id, c.nowMs());
    if (s.ok()) logInfo("job {} killed on request", id);
    cairn::toWire(s, context.getResults().initStatus());
    c.wakeWaiters();
    return kj::READY_NOW;
  }

  kj::Promise<void> jobs(JobsContext context) override {
    auto all = c.scheduler.reports(c.nowMs());
    auto list = context.getResults().initReports(static_cast<unsigned>(all.size()));
    for (size_t i = 0; i < all.size(); ++i) toWire(all[i], list[static_cast<unsigned>(i)]);
    return kj::READY_NOW;
  }

  kj::Promise<void> join(JoinContext context) override {
    auto p = context.getParams();
    auto results = context.getResults();
    std::string host = p.getHost().cStr();
    std::string address = p.getAddress().cStr();
    uint32_t slots = p.getSlots();
    Status bad;
    if (peer.authenticated && peer.role != Role::WORKER && peer.role != Role::ADMIN) {
      bad = Status::notPermitted(
          fmt::format("workers join with a worker certificate, not a {} one", roleName(peer.role)));
    }
    if (host.empty() || host.size() > 255)
      bad = Status::invalidArgument("a worker host of 1..255 bytes");
    if (!parseHostPort(address).ok())
      bad = Status::invalidArgument("bad worker address " + address);
    if (slots < 1 || slots > 256) bad = Status::invalidArgument("slots must be 1..256");
    if (!bad.ok()) {
      cairn::toWire(bad, results.initStatus());
      return kj::READY_NOW;
    }
    uint64_t id = c.scheduler.addWorker(host, address, slots, c.nowMs());
    logInfo("worker {} joined: host {}, address {}, {} slots", id, host, address, slots);
    results.setSession(kj::heap<Session>(c, id));
    results.setMaster(c.opts.master);
    c.wakeWaiters();
    return kj::READY_NOW;
  }

 private:
  Coordinator& c;
  Identity peer;
};

Coordinator::Coordinator(CoordinatorOptions options, kj::Timer& timer)
    : opts(std::move(options)),
      timer(timer),
      scheduler(opts.scheduler),
      io(clientOptions(opts.master, opts.security)),
      tasks(*this) {
  scheduler.onReducesDone = [this](uint64_t jobId) {
    JobSpec spec = *scheduler.spec(jobId);
    tasks.add(pool.run([this, spec]() { return commit(spec); }).then([this, jobId](Status s) {
      scheduler.jobCommitted(jobId, s, nowMs());
      if (s.ok()) logInfo("job {} succeeded", jobId);
    }));
  };
  scheduler.onFailed = [this](uint64_t jobId) {
    JobSpec spec = *scheduler.spec(jobId);
    tasks.add(pool.run([this, spec]() { removeOutput(spec); }));
  };
  using T = Metrics::Type;
  metrics_.describe("cairn_mapreduce_tasks", T::GAUGE, "tasks of known jobs, by phase and state");
  metrics_.describe("cairn_mapreduce_jobs", T::GAUGE, "jobs known, by state");
  metrics_.describe("cairn_mapreduce_workers", T::GAUGE, "workers joined");
  metrics_.describe("cairn_mapreduce_worker_slots", T::GAUGE, "task slots of joined workers");
  metrics_.collect([this](const Metrics::GaugeSink& set) {
    int64_t now = nowMs();
    std::map<std::pair<std::string, std::string>, double> tasks;
    std::map<std::string, double> jobs = {{"running", 0}, {"succeeded", 0}, {"failed", 0}};
    for (auto& r : scheduler.reports(now)) {
      jobs[r.state == JobState::RUNNING     ? "running"
           : r.state == JobState::SUCCEEDED ? "succeeded"
                                            : "failed"]++;
      for (auto& t : scheduler.tasksOf(r.jobId, now)) {
        tasks[{t.isMap ? "map" : "reduce", taskStateName(t.state)}]++;
      }
    }
    for (const char* phase : {"map", "reduce"}) {
      for (auto state :
           {TaskView::State::PENDING, TaskView::State::RUNNING, TaskView::State::DONE}) {
        set("cairn_mapreduce_tasks", {{"phase", phase}, {"state", taskStateName(state)}},
            tasks[{phase, taskStateName(state)}]);
      }
    }
    for (auto& [state, n] : jobs) set("cairn_mapreduce_jobs", {{"state", state}}, n);
    double slots = 0;
    auto workers = scheduler.workerViews(now);
    for (auto& w : workers) slots += w.slots;
    set("cairn_mapreduce_workers", {}, static_cast<double>(workers.size()));
    set("cairn_mapreduce_worker_slots", {}, slots);
  });
}

Coordinator::~Coordinator() noexcept(false) {}

wire::Coordinator::Client Coordinator::capabilityFor(const Identity& peer) {
  return kj::heap<Service>(*this, peer);
}

kj::Promise<void> Coordinator::run() {
  return timer.afterDelay(opts.tickInterval).then([this]() {
    scheduler.tick(nowMs());
    wakeWaiters();
    return run();
  });
}

int64_t Coordinator::nowMs() const {
  return (timer.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS;
}

void Coordinator::wakeWaiters() {
  auto all = kj::mv(waiters);
  waiters.clear();
  for (auto& w : all) w->fulfill();
}

void Coordinator::taskFailed(kj::Exception&& e) {
  logError("coordinator task failed: {}", e.getDescription().cStr());
}

Result<Coordinator::Plan> Coordinator::plan(const JobSpec& spec) {
  // Whatever the job reads is checked as its submitter: search on every directory of the
  // paths, read on every input file (workers then read by chunk token).
  Caller who{spec.uid, {spec.gid}};
  auto existing = io.resolve(spec.output, who);
  if (existing.ok()) {
    return Status::alreadyExists(fmt::format("output directory {} exists", spec.output));
  }
  if (existing.status.code() != ErrorCode::NOT_FOUND) {
    return withContext("checking output " + spec.output, existing.status);
  }
  Plan plan;
  for (auto& input : spec.inputs) {
    auto attr = io.resolve(input, who);
    if (!attr.ok()) return withContext("input " + input, attr.status);
    Status s = addInput(input, attr.value, who, plan);
    if (!s.ok()) return s;
  }
  if (plan.inputFiles == 0) {
    std::string all;
    for (auto& i : spec.inputs) all += (all.empty() ? "" : ", ") + i;
    return Status::invalidArgument("no input files in " + all);
  }
  auto parts = splitPath(spec.output);
  std::string name = parts.value.back();
  std::string parentPath = spec.output.substr(0, spec.output.rfind('/'));
  auto parent = io.makeDirs(parentPath.empty() ? "/" : parentPath, spec.uid, spec.gid);
  if (!parent.ok()) return withContext("making " + parentPath, parent.status);
  auto out = io.mkdir(parent.value.inode, name, spec.uid, spec.gid);
  if (out.status.code() == ErrorCode::ALREADY_EXISTS) {
    return Status::alreadyExists(fmt::format("output directory {} exists", spec.output));
  }
  if (!out.ok()) return withContext("making " + spec.output, out.status);
  auto temp = io.mkdir(out.value.inode, "_temporary", spec.uid, spec.gid);
  if (!temp.ok()) return withContext("making " + spec.output + "/_temporary", temp.status);
  if (spec.appendOutput) {
    auto records = io.createFile(out.value.inode, APPENDED_OUTPUT, spec.uid, spec.gid);
    if (!records.ok()) {
      return withContext("making " + spec.output + "/" + APPENDED_OUTPUT, records.status);
    }
  }
  return plan;
}

Status Coordinator::addInput(const std::string& path, const FileAttr& attr, const Caller& who,
                             Plan& plan) {
  if (attr.type == FileType::DIRECTORY) {
    auto entries = io.list(attr.inode, who);
    if (!entries.ok()) return withContext("listing " + path, entries.status);
    for (auto& e : entries.value) {
      // Like Hadoop: `_SUCCESS`, `_temporary` and hidden files are not input.
      if (e.name.empty() || e.name[0] == '_' || e.name[0] == '.') continue;
      Status s = addInput(path == "/" ? "/" + e.name : path + "/" + e.name, e.attr, who, plan);
      if (!s.ok()) return s;
    }
    return Status::OK();
  }
  if (attr.type != FileType::REGULAR) return Status::OK();
  ++plan.inputFiles;
  if (attr.size == 0) return Status::OK();
  auto layout = io.layout(attr.inode, who);
  if (!layout.ok()) return withContext("locating the chunks of " + path, layout.status);
  uint64_t cs = layout.value.chunkSize;
  uint64_t size = layout.value.fileSize;
  if (cs == 0) return Status::unavailable("the master gave no chunk size");
  std::map<uint32_t, std::vector<std::string>> hosts;
  for (auto& chunk : layout.value.chunks) {
    for (auto& r : chunk.replicas) hosts[chunk.index].push_back(hostOf(r.address));
  }
  for (uint64_t start = 0; start < size; start += cs) {
    Split s;
    s.path = path;
    s.inode = attr.inode;
    s.fileSize = size;
    s.start = start;
    s.end = std::min(size, start + cs);
    s.hosts = hosts[static_cast<uint32_t>(start / cs)];
    plan.splits.push_back(std::move(s));
  }
  return Status::OK();
}

Status Coordinator::commit(const JobSpec& spec) {
  auto out = io.resolve(spec.output);
  if (!out.ok()) return out.status;
  // A losing backup attempt may still add a temporary file while this runs; try again.
  Status removed;
  for (int i = 0; i < 3; ++i) {
    removed = io.removeTree(out.value.inode, "_temporary");
    if (removed.ok() || removed.code() == ErrorCode::NOT_FOUND) break;
  }
  if (!removed.ok() && removed.code() != ErrorCode::NOT_FOUND) {
    logWarn("could not remove {}/_temporary: {}", spec.output, removed.toString());
  }
  auto success = io.createAtomically(out.value.inode, "_SUCCESS", out.value.inode,
                                     "._SUCCESS._COPYING_", spec.uid, spec.gid);
  if (!success.ok()) return withContext("creating _SUCCESS", success.status);
  Status s = success.value->commit();
  return s.ok() ? s : withContext("creating _SUCCESS", s);
}

void Coordinator::removeOutput(const JobSpec& spec) {
  // The output directory was made by this job; a failed job leaves nothing behind, so that
  // the same command can run again.
  std::string parentPath = spec.output.substr(0, spec.output.rfind('/'));
  auto parent = io.resolve(parentPath.empty() ? "/" : parentPath);
  if (!parent.ok()) return;
  std::string name = spec.output.substr(spec.output.rfind('/') + 1);
  Status s = io.removeTree(parent.value.inode, name);
  if (!s.ok() && s.code() != ErrorCode::NOT_FOUND) {
    logWarn("could not remove the failed job's output {}: {}", spec.output, s.toString());
  }
}

}  // namespace cairn::mapreduce
