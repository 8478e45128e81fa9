@0x98f52266b94aaff6;
# MapReduce: the coordinator's service for clients and workers, and the worker's service
# for reducers fetching map output. Ordinals are append-only.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::wire");

using Common = import "common.capnp";
using Status = Common.Status;

enum JobKind {
  wordCount @0;
  invertedIndex @1;
  grep @2;
  streaming @3;
}

struct JobSpec {
  inputs @0 :List(Text);        # files or directories in Cairn
  output @1 :Text;              # a directory that must not exist yet
  reducers @2 :UInt32;
  kind @3 :JobKind;
  pattern @4 :Text;             # grep: an ECMAScript regex
  mapper @5 :Text;              # streaming: shell commands
  reducer @6 :Text;
  noLocality @7 :Bool;          # place map tasks without regard to replica hosts
  taskTimeoutMs @8 :UInt32;     # a worker silent this long loses its tasks
  maxAttempts @9 :UInt32;       # failures of one task that fail the job
  uid @10 :UInt32;              # owner of the output
  gid @11 :UInt32;
  appendOutput @12 :Bool;       # reduces append their output as records to OUTPUT/records
}

enum JobState {
  running @0;
  succeeded @1;
  failed @2;
}

struct JobReport {
  jobId @0 :UInt64;
  state @1 :JobState;
  error @2 :Text;               # why the job failed
  mapTasks @3 :UInt32;
  mapsDone @4 :UInt32;
  reduceTasks @5 :UInt32;
  reducesDone @6 :UInt32;
  dataLocalMaps @7 :UInt32;     # finished maps that ran on a host holding their chunk
  bytesRead @8 :UInt64;         # input read by the maps that counted
  bytesWritten @9 :UInt64;      # output written by the reduces that counted
  shuffleBytes @10 :UInt64;     # map output fetched by the reduces that counted
  failedAttempts @11 :UInt32;   # attempts that failed or were lost with their worker
  backupAttempts @12 :UInt32;   # extra attempts started for stragglers
  wallMs @13 :UInt64;
  inputFiles @14 :UInt32;
  output @15 :Text;
}

struct MapOutput {
  task @0 :UInt32;
  attempt @1 :UInt32;
  worker @2 :Text;              # HOST:PORT of the worker holding the output
}

struct Task {
  jobId @0 :UInt64;
  task @1 :UInt32;              # index among the job's maps or reduces
  attempt @2 :UInt32;
  isMap @3 :Bool;
  spec @4 :JobSpec;
  # A map: lines starting in [start, end) of the file.
  path @5 :Text;
  inode @6 :UInt64;
  fileSize @7 :UInt64;
  start @8 :UInt64;
  end @9 :UInt64;
  # A reduce: partition `task` of every map's output.
  mapOutputs @10 :List(MapOutput);
}

struct TaskResult {
  jobId @0 :UInt64;
  task @1 :UInt32;
  attempt @2 :UInt32;
  isMap @3 :Bool;
  status @4 :Status;
  bytesRead @5 :UInt64;
  bytesWritten @6 :UInt64;
  shuffleBytes @7 :UInt64;
  lostMaps @8 :List(MapOutput); # a reduce could not fetch these map outputs
}

interface Coordinator {
  submit @0 (spec :JobSpec) -> (status :Status, jobId :UInt64);
  # Checks the inputs and the output directory, plans the splits and queues the job.
  # Any problem fails here, before a task runs.

  status @1 (jobId :UInt64) -> (status :Status, report :JobReport);
  jobs @2 () -> (reports :List(JobReport));

  join @3 (host :Text, address :Text, slots :UInt32) -> (status :Status,
                                                          session :WorkerSession,
                                                          master :Text);
  # A worker joins and learns the master's address. The session lives as long as the
  # worker's connection: when it drops, the worker is lost.

  kill @4 (jobId :UInt64) -> (status :Status);
  # Fails a running job; workers stop its tasks at their next heartbeat and its output
  # directory is removed.
}

interface WorkerSession {
  nextTask @0 () -> (status :Status, has :Bool, task :Task);
  # Waits up to about a second for a task for one free slot.

  finish @1 (result :TaskResult) -> (status :Status);

  heartbeat @2 () -> (status :Status, dropJobs :List(UInt64));
  # Every second. `dropJobs`: ended jobs: the worker stops their tasks and deletes their
  # scratch files. A
  # status of notFound means the coordinator has declared this worker lost: join again.
}

interface Worker {
  fetchPartition @0 (jobId :UInt64, task :UInt32, attempt :UInt32, partition :UInt32,
                     offset :UInt64, length :UInt32) -> (status :Status, data :Data,
                                                         eof :Bool);
  # Up to 4 MiB of one map output partition.
}
