#pragma once
// The coordinator's bookkeeping, without I/O: workers, jobs, and every task attempt. It
// decides which task a free worker gets (a map whose chunk has a replica on the worker's
// host first), what runs again when a worker is lost or a reduce cannot fetch a map's
// output, when a straggler gets a backup copy, and when a job has failed. Time comes in as
// milliseconds from the caller, so tests drive it without sleeping. Not thread-safe: the
// coordinator calls it from its event loop.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "status.h"

namespace cairn::mapreduce {

enum class JobKind { WORD_COUNT, INVERTED_INDEX, GREP, STREAMING };

// The file every reduce appends to in JobSpec::appendOutput mode, in the output directory.
constexpr const char* APPENDED_OUTPUT = "records";

struct JobSpec {
  std::vector<std::string> inputs;
  std::string output;
  uint32_t reducers = 1;
  JobKind kind = JobKind::WORD_COUNT;
  std::string pattern;          // grep
  std::string mapper, reducer;  // streaming
  bool noLocality = false;
  uint32_t taskTimeoutMs = 60000;
  uint32_t maxAttempts = 4;
  uint32_t uid = 0, gid = 0;  // owner of the output
  // Every reduce appends its output lines as records to OUTPUT/records (record append),
  // rather than writing OUTPUT/part-NNNNN; read it with `cairn cat --records`.
  bool appendOutput = false;
};

// One map task: the lines that start in [start, end) of a file, where [start, end) is one
// chunk; `hosts` hold a replica of that chunk.
struct Split {
  std::string path;
  uint64_t inode = 0;
  uint64_t fileSize = 0;
  uint64_t start = 0, end = 0;
  std::vector<std::string> hosts;
};

struct MapOutputLocation {
  uint32_t task = 0;
  uint32_t attempt = 0;
  std::string worker;  // HOST:PORT
};

// What a worker is told to run. `spec` and `split` point into the scheduler's job, valid
// until the next call that changes the scheduler.
struct Assignment {
  uint64_t jobId = 0;
  uint32_t task = 0;
  uint32_t attempt = 0;
  bool isMap = true;
  const JobSpec* spec = nullptr;
  const Split* split = nullptr;               // a map
  std::vector<MapOutputLocation> mapOutputs;  // a reduce
};

struct AttemptResult {
  uint64_t jobId = 0;
  uint32_t task = 0;
  uint32_t attempt = 0;
  bool isMap = true;
  Status status;
  uint64_t bytesRead = 0, bytesWritten = 0, shuffleBytes = 0;
  std::vector<MapOutputLocation> lostMaps;  // a reduce could not fetch these outputs
};

enum class JobState { RUNNING, SUCCEEDED, FAILED };

struct JobReport {
  uint64_t jobId = 0;
  JobState state = JobState::RUNNING;
  std::string error;
  std::string output;
  uint32_t inputFiles = 0;
  uint32_t mapTasks = 0, mapsDone = 0, reduceTasks = 0, reducesDone = 0;
  uint32_t dataLocalMaps = 0;
  uint64_t bytesRead = 0, bytesWritten = 0, shuffleBytes = 0;
  // Attempts that failed, were lost with their worker, or whose finished output was lost
  // with it: all ran again.
  uint32_t failedAttempts = 0, backupAttempts = 0;
  int64_t wallMs = 0;
};

// One task as the status page shows it.
struct TaskView {
  bool isMap = true;
  uint32_t index = 0;
  enum class State { PENDING, RUNNING, DONE } state = State::PENDING;
  std::vector<std::string> workers;  // running attempts', or the one that counted
  bool dataLocal = false;            // a map that read a replica on its worker's host
  int64_t durationMs = 0;            // done: its counted attempt's; running: so far
};

const char* taskStateName(TaskView::State state);  // "pending", "running", "done"

struct WorkerView {
  std::string host, address;
  uint32_t slots = 0, running = 0;
  int64_t sinceHeartbeatMs = 0;
};

struct SchedulerOptions {
  // A map waits this long for a free worker beside one of its replicas before it goes to
  // any free worker.
  int64_t localityWaitMs = 3000;
  // Backups: once a phase has nothing left to start and at most this share of its tasks
  // (or one task) still runs, a task running longer than `backupAfterMs` and 1.5 times the
  // phase's median gets one more attempt on an idle worker.
  double backupShare = 0.1;
  int64_t backupAfterMs = 2000;
  // A worker that has not sent a heartbeat for this long, while no job asks for less, is
  // lost.
  int64_t defaultTimeoutMs = 60000;
  // Ended jobs are reported (and their ids sent to workers for cleanup) this long.
  int64_t keepEndedMs = 600000;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});

  // Called once every reduce of a job is done; the caller then commits the output and
  // calls jobCommitted(). Set before adding jobs.
  std::function<void(uint64_t jobId)> onReducesDone;
  // Called when a job fails, for the caller to remove its partial output.
  std::function<void(uint64_t jobId)> onFailed;

  uint64_t addWorker(std::string host, std::string address, uint32_t slots, int64_t nowMs);
  // False when the worker is unknown (it was declared lost).
  bool heartbeat(uint64_t worker, int64_t nowMs);
  // The worker is gone: its running attempts and the map output on its disk run again.
  void workerLost(uint64_t worker, const std::string& why, int64_t nowMs);
  bool knowsWorker(uint64_t worker) const { return workers.count(worker) > 0; }

  uint64_t addJob(JobSpec spec, std::vector<Split> splits, uint32_t inputFiles, int64_t nowMs);

  // A task for one free slot of `worker`, if there is one.
  std::optional<Assignment> assign(uint64_t worker, int64_t nowMs);
  void finish(uint64_t worker, const AttemptResult& result, int64_t nowMs);
  void jobCommitted(uint64_t jobId, const Status& status, int64_t nowMs);
  // Ends a running job as failed ("killed"); its workers stop its tasks when they learn
  // it ended. notFound for an unknown job, invalidArgument for one that has ended or is
  // committing its output.
  Status kill(uint64_t jobId, int64_t nowMs);

  // Declares lost the workers whose heartbeats stopped; forgets long-ended jobs.
  void tick(int64_t nowMs);

  std::optional<JobReport> report(uint64_t jobId, int64_t nowMs) const;
  const JobSpec* spec(uint64_t jobId) const;
  std::vector<JobReport> reports(int64_t nowMs) const;
  std::vector<TaskView> tasksOf(uint64_t jobId, int64_t nowMs) const;
  std::vector<WorkerView> workerViews(int64_t nowMs) const;
  // Jobs that ended recently: their scratch files can go.
  std::vector<uint64_t> endedJobs() const;

 private:
  struct Attempt {
    uint32_t id = 0;
    uint64_t worker = 0;
    int64_t startedMs = 0;
  };
  struct Task {
    bool done = false;
    std::vector<Attempt> running;
    uint32_t nextAttempt = 0;
    uint32_t failures = 0;
    bool backedUp = false;
    int64_t pendingSinceMs = 0;
    // Of the attempt that counted:
    uint64_t doneWorker = 0;
    std::string doneAddress;
    uint32_t doneAttempt = 0;
    bool dataLocal = false;
    int64_t durationMs = 0;
    uint64_t bytesRead = 0, bytesWritten = 0, shuffleBytes = 0;
  };
  struct Job {
    uint64_t id = 0;
    JobSpec spec;
    std::vector<Split> splits;
    uint32_t inputFiles = 0;
    std::vector<Task> maps, reduces;
    uint32_t mapsDone = 0, reducesDone = 0;
    JobState state = JobState::RUNNING;
    bool committing = false;
    std::string error;
    uint32_t failedAttempts = 0, backupAttempts = 0;
    int64_t startedMs = 0, endedMs = 0;
    // Tasks to start (not done, none running) by index, maps also by the hosts of their
    // split; and the tasks not done. Kept as tasks start, end and come back, so that an
    // assignment looks at these, never at every task.
    std::set<size_t> pendingMaps, pendingReduces;
    std::unordered_map<std::string, std::set<size_t>> pendingMapsOn;
    std::set<size_t> unfinishedMaps, unfinishedReduces;
    // The median duration of the done tasks of each phase (backups compare with it), and
    // the count of done-or-undone changes it was taken at.
    int64_t medianMs[2] = {0, 0};
    uint64_t medianAt[2] = {UINT64_MAX, UINT64_MAX};
    uint64_t doneChanges[2] = {0, 0};
  };
  struct Worker {
    std::string host, address;
    uint32_t slots = 1;
    uint32_t running = 0;
    int64_t lastHeartbeatMs = 0;
  };

  std::optional<Assignment> assignFrom(Job& job, uint64_t workerId, int64_t nowMs);
  std::optional<size_t> pickMap(Job& job, uint64_t workerId, int64_t nowMs);
  std::optional<size_t> pickBackup(Job& job, bool isMap, uint64_t workerId, int64_t nowMs);
  Assignment start(Job& job, bool isMap, size_t index, uint64_t workerId, int64_t nowMs);
  bool workerFreeOn(const std::vector<std::string>& hosts) const;
  // The task has nothing running and is not done: it waits to start again.
  void requeue(Job& job, bool isMap, size_t index, int64_t nowMs);
  void started(Job& job, bool isMap, size_t index);
  // A worker's running count moves by `delta`; free slots per host follow.
  void setRunning(Worker& w, int delta);
  void rerunMap(Job& job, size_t index, int64_t nowMs);
  void fail(Job& job, std::string error, int64_t nowMs);
  JobReport makeReport(const Job& job, int64_t nowMs) const;

  SchedulerOptions opts;
  std::map<uint64_t, Worker> workers;
  std::map<uint64_t, Job> jobs;                           // by id: older jobs are served first
  std::unordered_map<std::string, uint32_t> freeSlotsOn;  // by host, over its workers
  uint64_t nextWorker = 1;
  uint64_t nextJob = 1;
};

const char* jobKindName(JobKind kind);

}  // namespace cairn::mapreduce
