#include "scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "log.h"

namespace cairn::mapreduce {
namespace {

bool contains(const std::vector<std::string>& hosts, const std::string& host) {
  return std::find(hosts.begin(), hosts.end(), host) != hosts.end();
}

}  // namespace

const char* jobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::WORD_COUNT:
      return "wordcount";
    case JobKind::INVERTED_INDEX:
      return "index";
    case JobKind::GREP:
      return "grep";
    case JobKind::STREAMING:
      return "streaming";
  }
  return "?";
}

Scheduler::Scheduler(SchedulerOptions options) : opts(options) {}

uint64_t Scheduler::addWorker(std::string host, std::string address, uint32_t slots,
                              int64_t nowMs) {
  uint64_t id = nextWorker++;
  Worker& w = workers[id] =
      Worker{std::move(host), std::move(address), std::max(slots, 1u), 0, nowMs};
  freeSlotsOn[w.host] += w.slots;
  return id;
}

bool Scheduler::heartbeat(uint64_t worker, int64_t nowMs) {
  auto it = workers.find(worker);
  if (it == workers.end()) return false;
  it->second.lastHeartbeatMs = nowMs;
  return true;
}

void Scheduler::workerLost(uint64_t worker, const std::string& why, int64_t now) {
  auto w = workers.find(worker);
  if (w == workers.end()) return;
  logWarn("worker {} ({}, host {}) lost: {}", worker, w->second.address, w->second.host, why);
  for (auto& [id, job] : jobs) {
    if (job.state != JobState::RUNNING) continue;
    // Every task, done ones too (a backup's other attempt may still run there): a rare
    // event, and its work is the job's size.
    for (bool isMap : {true, false}) {
      auto& tasks = isMap ? job.maps : job.reduces;
      for (size_t i = 0; i < tasks.size(); ++i) {
        Task& task = tasks[i];
        auto gone = std::remove_if(task.running.begin(), task.running.end(),
                                   [&](const Attempt& a) { return a.worker == worker; });
        if (gone == task.running.end()) continue;
        job.failedAttempts += static_cast<uint32_t>(task.running.end() - gone);
        task.running.erase(gone, task.running.end());
        if (!task.done && task.running.empty()) requeue(job, isMap, i, now);
      }
    }
    // Finished maps kept their output on the lost disk; reduces still need it. Their
    // attempts count as failed: they run again.
    if (job.reducesDone < job.reduces.size()) {
      for (size_t i = 0; i < job.maps.size(); ++i) {
        if (job.maps[i].done && job.maps[i].doneWorker == worker) {
          rerunMap(job, i, now);
          ++job.failedAttempts;
        }
      }
    }
  }
  auto free = freeSlotsOn.find(w->second.host);
  uint32_t mine = w->second.slots - std::min(w->second.running, w->second.slots);
  if (free != freeSlotsOn.end()) {
    free->second -= std::min(free->second, mine);
    if (free->second == 0) freeSlotsOn.erase(free);
  }
  workers.erase(w);
}

uint64_t Scheduler::addJob(JobSpec spec, std::vector<Split> splits, uint32_t inputFiles,
                           int64_t nowMs) {
  uint64_t id = nextJob++;
  Job& job = jobs[id];
  job.id = id;
  job.maps.resize(splits.size());
  job.reduces.resize(spec.reducers);
  for (auto* tasks : {&job.maps, &job.reduces}) {
    for (auto& t : *tasks) t.pendingSinceMs = nowMs;
  }
  job.spec = std::move(spec);
  job.splits = std::move(splits);
  job.inputFiles = inputFiles;
  job.startedMs = nowMs;
  for (size_t i = 0; i < job.maps.size(); ++i) {
    job.unfinishedMaps.insert(job.unfinishedMaps.end(), i);
    requeue(job, true, i, nowMs);
  }
  for (size_t i = 0; i < job.reduces.size(); ++i) {
    job.unfinishedReduces.insert(job.unfinishedReduces.end(), i);
    requeue(job, false, i, nowMs);
  }
  return id;
}

std::optional<Assignment> Scheduler::assign(uint64_t worker, int64_t nowMs) {
  auto w = workers.find(worker);
  if (w == workers.end() || w->second.running >= w->second.slots) return std::nullopt;
  for (auto& [id, job] : jobs) {
    if (job.state != JobState::RUNNING || job.committing) continue;
    if (auto a = assignFrom(job, worker, nowMs)) return a;
  }
  return std::nullopt;
}

std::optional<Assignment> Scheduler::assignFrom(Job& job, uint64_t worker, int64_t nowMs) {
  if (job.mapsDone < job.maps.size()) {
    if (auto i = pickMap(job, worker, nowMs)) return start(job, true, *i, worker, nowMs);
    if (auto i = pickBackup(job, true, worker, nowMs)) {
      ++job.backupAttempts;
      return start(job, true, *i, worker, nowMs);
    }
    return std::nullopt;  // reduces start when every map's output exists
  }
  if (!job.pendingReduces.empty()) {
    return start(job, false, *job.pendingReduces.begin(), worker, nowMs);
  }
  if (auto i = pickBackup(job, false, worker, nowMs)) {
    ++job.backupAttempts;
    return start(job, false, *i, worker, nowMs);
  }
  return std::nullopt;
}

// Pending maps a non-local assignment looks at: any of them will do, the first suits best.
constexpr size_t MAX_LOOKED_AT = 256;

std::optional<size_t> Scheduler::pickMap(Job& job, uint64_t worker, int64_t nowMs) {
  if (job.pendingMaps.empty()) return std::nullopt;
  if (job.spec.noLocality) return *job.pendingMaps.begin();
  auto local = job.pendingMapsOn.find(workers.at(worker).host);
  if (local != job.pendingMapsOn.end()) return *local->second.begin();
  // Leave a map to a free worker beside a replica, unless it has waited long enough.
  size_t looked = 0;
  for (size_t i : job.pendingMaps) {
    if (++looked > MAX_LOOKED_AT) break;
    if (!workerFreeOn(job.splits[i].hosts) ||
        nowMs - job.maps[i].pendingSinceMs >= opts.localityWaitMs) {
      return i;
    }
  }
  return std::nullopt;
}

bool Scheduler::workerFreeOn(const std::vector<std::string>& hosts) const {
  for (auto& host : hosts) {
    if (freeSlotsOn.count(host)) return true;
  }
  return false;
}

void Scheduler::setRunning(Worker& w, int delta) {
  bool wasFree = w.running < w.slots;
  w.running = static_cast<uint32_t>(static_cast<int64_t>(w.running) + delta);
  bool free = w.running < w.slots;
  if (delta > 0 && wasFree) {
    auto it = freeSlotsOn.find(w.host);
    if (it != freeSlotsOn.end() && --it->second == 0) freeSlotsOn.erase(it);
  } else if (delta < 0 && free) {
    ++freeSlotsOn[w.host];
  }
}

void Scheduler::requeue(Job& job, bool isMap, size_t index, int64_t nowMs) {
  Task& task = (isMap ? job.maps : job.reduces)[index];
  task.pendingSinceMs = nowMs;
  task.backedUp = false;
  if (!isMap) {
    job.pendingReduces.insert(index);
    return;
  }
  job.pendingMaps.insert(index);
  for (auto& host : job.splits[index].hosts) job.pendingMapsOn[host].insert(index);
}

void Scheduler::started(Job& job, bool isMap, size_t index) {
  if (!isMap) {
    job.pendingReduces.erase(index);
    return;
  }
  if (!job.pendingMaps.erase(index)) return;
  for (auto& host : job.splits[index].hosts) {
    auto it = job.pendingMapsOn.find(host);
    if (it == job.pendingMapsOn.end()) continue;
    it->second.erase(index);
    if (it->second.empty()) job.pendingMapsOn.erase(it);
  }
}

std::optional<size_t> Scheduler::pickBackup(Job& job, bool isMap, uint64_t worker, int64_t nowMs) {
  auto& tasks = isMap ? job.maps : job.reduces;
  if (!(isMap ? job.pendingMaps : job.pendingReduces).empty()) return std::nullopt;
  const auto& unfinished = isMap ? job.unfinishedMaps : job.unfinishedReduces;
  size_t left = unfinished.size();
  size_t limit =
      std::max<size_t>(1, static_cast<size_t>(std::ceil(opts.backupShare * tasks.size())));
  if (left == 0 || left > limit) return std::nullopt;
  // The median of the done tasks, taken again only when more are done.
  if (job.medianAt[isMap] != job.doneChanges[isMap]) {
    std::vector<int64_t> durations;
    for (auto& t : tasks) {
      if (t.done) durations.push_back(t.durationMs);
    }
    int64_t median = 0;
    if (!durations.empty()) {
      std::nth_element(durations.begin(), durations.begin() + durations.size() / 2,
                       durations.end());
      median = durations[durations.size() / 2];
    }
    job.medianMs[isMap] = median;
    job.medianAt[isMap] = job.doneChanges[isMap];
  }
  int64_t threshold = std::max<int64_t>(opts.backupAfterMs, job.medianMs[isMap] * 3 / 2);
  for (size_t i : unfinished) {
    auto& t = tasks[i];
    if (t.done || t.backedUp || t.running.size() != 1 || t.running[0].worker == worker) continue;
    if (nowMs - t.running[0].startedMs >= threshold) {
      t.backedUp = true;
      return i;
    }
  }
  return std::nullopt;
}

Assignment Scheduler::start(Job& job, bool isMap, size_t index, uint64_t worker, int64_t nowMs) {
  Task& t = (isMap ? job.maps : job.reduces)[index];
  Attempt attempt{t.nextAttempt++, worker, nowMs};
  t.running.push_back(attempt);
  started(job, isMap, index);
  setRunning(workers.at(worker), 1);
  Assignment a;
  a.jobId = job.id;
  a.task = static_cast<uint32_t>(index);
  a.attempt = attempt.id;
  a.isMap = isMap;
  a.spec = &job.spec;
  if (isMap) {
    a.split = &job.splits[index];
  } else {
    for (size_t m = 0; m < job.maps.size(); ++m) {
      a.mapOutputs.push_back(
          {static_cast<uint32_t>(m), job.maps[m].doneAttempt, job.maps[m].doneAddress});
    }
  }
  return a;
}

void Scheduler::finish(uint64_t worker, const AttemptResult& r, int64_t nowMs) {
  auto w = workers.find(worker);
  auto j = jobs.find(r.jobId);
  if (w == workers.end() || j == jobs.end()) return;  // a lost worker's attempts are gone
  Job& job = j->second;
  auto& tasks = r.isMap ? job.maps : job.reduces;
  if (r.task >= tasks.size()) return;
  Task& t = tasks[r.task];
  auto a = std::find_if(t.running.begin(), t.running.end(),
                        [&](const Attempt& x) { return x.id == r.attempt && x.worker == worker; });
  if (a == t.running.end()) return;
  int64_t startedMs = a->startedMs;
  t.running.erase(a);
  setRunning(w->second, -1);
  if (job.state != JobState::RUNNING || job.committing) return;

  if (r.status.ok()) {
    if (t.done) return;  // the other copy of a backed-up task won
    t.done = true;
    t.doneWorker = worker;
    t.doneAddress = w->second.address;
    t.doneAttempt = r.attempt;
    t.durationMs = nowMs - startedMs;
    (r.isMap ? job.unfinishedMaps : job.unfinishedReduces).erase(r.task);
    ++job.doneChanges[r.isMap];
    t.bytesRead = r.bytesRead;
    t.bytesWritten = r.bytesWritten;
    t.shuffleBytes = r.shuffleBytes;
    if (r.isMap) {
      t.dataLocal = contains(job.splits[r.task].hosts, w->second.host);
      ++job.mapsDone;
    } else if (++job.reducesDone == job.reduces.size()) {
      job.committing = true;
      if (onReducesDone) onReducesDone(job.id);
    }
    return;
  }

  ++job.failedAttempts;
  if (!r.isMap && !r.lostMaps.empty()) {
    // Not the reduce's fault: the maps run again, then the reduce.
    for (auto& lost : r.lostMaps) {
      if (lost.task < job.maps.size() && job.maps[lost.task].done &&
          job.maps[lost.task].doneAttempt == lost.attempt) {
        rerunMap(job, lost.task, nowMs);
      }
    }
    if (!t.done && t.running.empty()) requeue(job, r.isMap, r.task, nowMs);
    return;
  }
  if (++t.failures >= job.spec.maxAttempts) {
    std::string what = r.isMap ? fmt::format("map task {} ({} @{})", r.task,
                                             job.splits[r.task].path, job.splits[r.task].start)
                               : fmt::format("reduce task {}", r.task);
    fail(job, fmt::format("{} failed {} times: {}", what, t.failures, r.status.message()), nowMs);
    return;
  }
  if (!t.done && t.running.empty()) requeue(job, r.isMap, r.task, nowMs);
}

void Scheduler::rerunMap(Job& job, size_t index, int64_t nowMs) {
  Task& t = job.maps[index];
  t.done = false;
  t.bytesRead = t.bytesWritten = t.shuffleBytes = 0;
  t.dataLocal = false;
  --job.mapsDone;
  job.unfinishedMaps.insert(index);
  ++job.doneChanges[true];
  if (t.running.empty()) requeue(job, true, index, nowMs);
}

void Scheduler::fail(Job& job, std::string error, int64_t nowMs) {
  logWarn("job {} failed: {}", job.id, error);
  job.state = JobState::FAILED;
  job.error = std::move(error);
  job.endedMs = nowMs;
  if (onFailed) onFailed(job.id);
}

void Scheduler::jobCommitted(uint64_t jobId, const Status& status, int64_t nowMs) {
  auto j = jobs.find(jobId);
  if (j == jobs.end() || !j->second.committing) return;
  Job& job = j->second;
  job.committing = false;
  if (!status.ok()) {
    fail(job, "committing the output: " + status.message(), nowMs);
    return;
  }
  job.state = JobState::SUCCEEDED;
  job.endedMs = nowMs;
}

Status Scheduler::kill(uint64_t jobId, int64_t nowMs) {
  auto j = jobs.find(jobId);
  if (j == jobs.end()) return Status::notFound(fmt::format("no job {}", jobId));
  Job& job = j->second;
  if (job.state != JobState::RUNNING) {
    return Status::invalidArgument(fmt::format(
        "job {} has already {}", jobId, job.state == JobState::SUCCEEDED ? "succeeded" : "failed"));
  }
  if (job.committing) {
    return Status::invalidArgument(fmt::format("job {} is committing its output", jobId));
  }
  fail(job, "killed on request", nowMs);
  return Status::OK();
}

void Scheduler::tick(int64_t nowMs) {
  int64_t timeout = -1;
  for (auto& [id, job] : jobs) {
    if (job.state == JobState::RUNNING) {
      int64_t t = job.spec.taskTimeoutMs;
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
  }
  if (timeout < 0) timeout = opts.defaultTimeoutMs;
  std::vector<uint64_t> silent;
  for (auto& [id, w] : workers) {
    if (nowMs - w.lastHeartbeatMs > timeout) silent.push_back(id);
  }
  for (uint64_t id : silent) {
    workerLost(id, fmt::format("no heartbeat for {} ms", nowMs - workers.at(id).lastHeartbeatMs),
               nowMs);
  }
  for (auto it = jobs.begin(); it != jobs.end();) {
    bool old =
        it->second.state != JobState::RUNNING && nowMs - it->second.endedMs > opts.keepEndedMs;
    it = old ? jobs.erase(it) : std::next(it);
  }
}

JobReport Scheduler::makeReport(const Job& job, int64_t nowMs) const {
  JobReport r;
  r.jobId = job.id;
  r.state = job.state;
  r.error = job.error;
  r.output = job.spec.output;
  r.inputFiles = job.inputFiles;
  r.mapTasks = static_cast<uint32_t>(job.maps.size());
  r.reduceTasks = static_cast<uint32_t>(job.reduces.size());
  r.mapsDone = job.mapsDone;
  r.reducesDone = job.reducesDone;
  for (auto& t : job.maps) {
    if (!t.done) continue;
    r.dataLocalMaps += t.dataLocal;
    r.bytesRead += t.bytesRead;
  }
  for (auto& t : job.reduces) {
    if (!t.done) continue;
    r.bytesWritten += t.bytesWritten;
    r.shuffleBytes += t.shuffleBytes;
  }
  r.failedAttempts = job.failedAttempts;
  r.backupAttempts = job.backupAttempts;
  r.wallMs = (job.state == JobState::RUNNING ? nowMs : job.endedMs) - job.startedMs;
  return r;
}

std::optional<JobReport> Scheduler::report(uint64_t jobId, int64_t nowMs) const {
  auto j = jobs.find(jobId);
  if (j == jobs.end()) return std::nullopt;
  return makeReport(j->second, nowMs);
}

const JobSpec* Scheduler::spec(uint64_t jobId) const {
  auto j = jobs.find(jobId);
  return j == jobs.end() ? nullptr : &j->second.spec;
}

std::vector<JobReport> Scheduler::reports(int64_t nowMs) const {
  std::vector<JobReport> out;
  for (auto& [id, job] : jobs) out.push_back(makeReport(job, nowMs));
  return out;
}

const char* taskStateName(TaskView::State state) {
  switch (state) {
    case TaskView::State::PENDING:
      return "pending";
    case TaskView::State::RUNNING:
      return "running";
    case TaskView::State::DONE:
      return "done";
  }
  return "pending";
}

std::vector<TaskView> Scheduler::tasksOf(uint64_t jobId, int64_t nowMs) const {
  std::vector<TaskView> out;
  auto j = jobs.find(jobId);
  if (j == jobs.end()) return out;
  auto add = [&](const std::vector<Task>& tasks, bool isMap) {
    for (size_t i = 0; i < tasks.size(); ++i) {
      const Task& t = tasks[i];
      TaskView v;
      v.isMap = isMap;
      v.index = static_cast<uint32_t>(i);
      if (t.done) {
        v.state = TaskView::State::DONE;
        v.workers.push_back(t.doneAddress);
        v.dataLocal = t.dataLocal;
        v.durationMs = t.durationMs;
      } else if (!t.running.empty()) {
        v.state = TaskView::State::RUNNING;
        for (auto& a : t.running) {
          auto w = workers.find(a.worker);
          v.workers.push_back(w == workers.end() ? "?" : w->second.address);
          v.durationMs = std::max(v.durationMs, nowMs - a.startedMs);
        }
      }
      out.push_back(std::move(v));
    }
  };
  add(j->second.maps, true);
  add(j->second.reduces, false);
  return out;
}

std::vector<WorkerView> Scheduler::workerViews(int64_t nowMs) const {
  std::vector<WorkerView> out;
  for (auto& [id, w] : workers) {
    out.push_back({w.host, w.address, w.slots, w.running, nowMs - w.lastHeartbeatMs});
  }
  return out;
}

std::vector<uint64_t> Scheduler::endedJobs() const {
  std::vector<uint64_t> out;
  for (auto& [id, job] : jobs) {
    if (job.state != JobState::RUNNING) out.push_back(id);
  }
  return out;
}

}  // namespace cairn::mapreduce
