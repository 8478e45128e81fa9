#include "protocol.h"

#include <fmt/format.h>

#include "names.h"
#include "tasks.h"

namespace cairn::mapreduce {
namespace {

void outputsToWire(const std::vector<MapOutputLocation>& in,
                   capnp::List<wire::MapOutput>::Builder out) {
  for (size_t i = 0; i < in.size(); ++i) {
    auto o = out[static_cast<unsigned>(i)];
    o.setTask(in[i].task);
    o.setAttempt(in[i].attempt);
    o.setWorker(in[i].worker);
  }
}

std::vector<MapOutputLocation> outputsFromWire(capnp::List<wire::MapOutput>::Reader in) {
  std::vector<MapOutputLocation> out;
  for (auto o : in) out.push_back({o.getTask(), o.getAttempt(), o.getWorker().cStr()});
  return out;
}

}  // namespace

void toWire(const JobSpec& s, wire::JobSpec::Builder out) {
  auto inputs = out.initInputs(static_cast<unsigned>(s.inputs.size()));
  for (size_t i = 0; i < s.inputs.size(); ++i) inputs.set(static_cast<unsigned>(i), s.inputs[i]);
  out.setOutput(s.output);
  out.setReducers(s.reducers);
  out.setKind(static_cast<wire::JobKind>(s.kind));
  out.setPattern(s.pattern);
  out.setMapper(s.mapper);
  out.setReducer(s.reducer);
  out.setNoLocality(s.noLocality);
  out.setTaskTimeoutMs(s.taskTimeoutMs);
  out.setMaxAttempts(s.maxAttempts);
  out.setUid(s.uid);
  out.setGid(s.gid);
  out.setAppendOutput(s.appendOutput);
}

JobSpec fromWire(wire::JobSpec::Reader in) {
  JobSpec s;
  for (auto i : in.getInputs()) s.inputs.emplace_back(i.cStr());
  s.output = in.getOutput().cStr();
  s.reducers = in.getReducers();
  s.kind = static_cast<JobKind>(in.getKind());
  s.pattern = in.getPattern().cStr();
  s.mapper = in.getMapper().cStr();
  s.reducer = in.getReducer().cStr();
  s.noLocality = in.getNoLocality();
  s.taskTimeoutMs = in.getTaskTimeoutMs();
  s.maxAttempts = in.getMaxAttempts();
  s.uid = in.getUid();
  s.gid = in.getGid();
  s.appendOutput = in.getAppendOutput();
  return s;
}

void toWire(const JobReport& r, wire::JobReport::Builder out) {
  out.setJobId(r.jobId);
  out.setState(static_cast<wire::JobState>(r.state));
  out.setError(r.error);
  out.setOutput(r.output);
  out.setInputFiles(r.inputFiles);
  out.setMapTasks(r.mapTasks);
  out.setMapsDone(r.mapsDone);
  out.setReduceTasks(r.reduceTasks);
  out.setReducesDone(r.reducesDone);
  out.setDataLocalMaps(r.dataLocalMaps);
  out.setBytesRead(r.bytesRead);
  out.setBytesWritten(r.bytesWritten);
  out.setShuffleBytes(r.shuffleBytes);
  out.setFailedAttempts(r.failedAttempts);
  out.setBackupAttempts(r.backupAttempts);
  out.setWallMs(static_cast<uint64_t>(std::max<int64_t>(r.wallMs, 0)));
}

JobReport fromWire(wire::JobReport::Reader in) {
  JobReport r;
  r.jobId = in.getJobId();
  r.state = static_cast<JobState>(in.getState());
  r.error = in.getError().cStr();
  r.output = in.getOutput().cStr();
  r.inputFiles = in.getInputFiles();
  r.mapTasks = in.getMapTasks();
  r.mapsDone = in.getMapsDone();
  r.reduceTasks = in.getReduceTasks();
  r.reducesDone = in.getReducesDone();
  r.dataLocalMaps = in.getDataLocalMaps();
  r.bytesRead = in.getBytesRead();
  r.bytesWritten = in.getBytesWritten();
  r.shuffleBytes = in.getShuffleBytes();
  r.failedAttempts = in.getFailedAttempts();
  r.backupAttempts = in.getBackupAttempts();
  r.wallMs = static_cast<int64_t>(in.getWallMs());
  return r;
}

void toWire(const Assignment& a, wire::Task::Builder out) {
  out.setJobId(a.jobId);
  out.setTask(a.task);
  out.setAttempt(a.attempt);
  out.setIsMap(a.isMap);
  toWire(*a.spec, out.initSpec());
  if (a.split) {
    out.setPath(a.split->path);
    out.setInode(a.split->inode);
    out.setFileSize(a.split->fileSize);
    out.setStart(a.split->start);
    out.setEnd(a.split->end);
  }
  outputsToWire(a.mapOutputs, out.initMapOutputs(static_cast<unsigned>(a.mapOutputs.size())));
}

TaskOrder fromWire(wire::Task::Reader in) {
  TaskOrder t;
  t.jobId = in.getJobId();
  t.task = in.getTask();
  t.attempt = in.getAttempt();
  t.isMap = in.getIsMap();
  t.spec = fromWire(in.getSpec());
  t.split.path = in.getPath().cStr();
  t.split.inode = in.getInode();
  t.split.fileSize = in.getFileSize();
  t.split.start = in.getStart();
  t.split.end = in.getEnd();
  t.mapOutputs = outputsFromWire(in.getMapOutputs());
  return t;
}

void toWire(const AttemptResult& r, wire::TaskResult::Builder out) {
  out.setJobId(r.jobId);
  out.setTask(r.task);
  out.setAttempt(r.attempt);
  out.setIsMap(r.isMap);
  cairn::toWire(r.status, out.initStatus());
  out.setBytesRead(r.bytesRead);
  out.setBytesWritten(r.bytesWritten);
  out.setShuffleBytes(r.shuffleBytes);
  outputsToWire(r.lostMaps, out.initLostMaps(static_cast<unsigned>(r.lostMaps.size())));
}

AttemptResult fromWire(wire::TaskResult::Reader in) {
  AttemptResult r;
  r.jobId = in.getJobId();
  r.task = in.getTask();
  r.attempt = in.getAttempt();
  r.isMap = in.getIsMap();
  r.status = cairn::fromWire(in.getStatus());
  r.bytesRead = in.getBytesRead();
  r.bytesWritten = in.getBytesWritten();
  r.shuffleBytes = in.getShuffleBytes();
  r.lostMaps = outputsFromWire(in.getLostMaps());
  return r;
}

namespace {
Status checkPath(const std::string& what, const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return Status::invalidArgument(fmt::format("{} '{}' is not an absolute path", what, path));
  }
  auto parts = splitPath(path);
  if (!parts.ok())
    return Status(parts.status.code(),
                  fmt::format("{} '{}': {}", what, path, parts.status.message()));
  return Status::OK();
}
}  // namespace

Status validateSpec(const JobSpec& s) {
  if (s.inputs.empty()) return Status::invalidArgument("no input given");
  if (s.inputs.size() > MAX_INPUTS) {
    return Status::invalidArgument(fmt::format("at most {} inputs", MAX_INPUTS));
  }
  for (auto& in : s.inputs) {
    Status st = checkPath("input", in);
    if (!st.ok()) return st;
  }
  Status st = checkPath("output", s.output);
  if (!st.ok()) return st;
  if (splitPath(s.output).value.empty()) {
    return Status::invalidArgument("the output cannot be the root directory");
  }
  if (s.reducers < 1 || s.reducers > MAX_REDUCERS) {
    return Status::invalidArgument(fmt::format("reducers must be 1..{}", MAX_REDUCERS));
  }
  if (s.maxAttempts < 1 || s.maxAttempts > 100) {
    return Status::invalidArgument("max attempts must be 1..100");
  }
  if (s.taskTimeoutMs < 100 || s.taskTimeoutMs > 24u * 3600 * 1000) {
    return Status::invalidArgument("task timeout must be 0.1 s..24 h");
  }
  if (static_cast<uint32_t>(s.kind) > static_cast<uint32_t>(JobKind::STREAMING)) {
    return Status::invalidArgument("unknown job kind");
  }
  if (s.kind == JobKind::STREAMING && (s.mapper.empty() || s.reducer.empty())) {
    return Status::invalidArgument("a streaming job needs --mapper and --reducer");
  }
  if (s.kind == JobKind::GREP && s.pattern.empty()) {
    return Status::invalidArgument("grep needs --pattern");
  }
  for (auto* text : {&s.mapper, &s.reducer}) {
    if (text->size() > MAX_COMMAND) {
      return Status::invalidArgument(fmt::format("a command over {} bytes", MAX_COMMAND));
    }
  }
  // std::regex compiles recursively: a long pattern of nested groups would overflow the
  // coordinator's stack.
  if (s.pattern.size() > MAX_PATTERN) {
    return Status::invalidArgument(fmt::format("a pattern over {} bytes", MAX_PATTERN));
  }
  auto job = makeJob(s);
  return job.status;
}

std::string canonicalPath(const std::string& path) {
  auto parts = splitPath(path);
  std::string out;
  for (auto& p : parts.value) out += "/" + p;
  return out.empty() ? "/" : out;
}

const char* jobStateName(JobState state) {
  switch (state) {
    case JobState::RUNNING:
      return "running";
    case JobState::SUCCEEDED:
      return "succeeded";
    case JobState::FAILED:
      return "failed";
  }
  return "?";
}

}  // namespace cairn::mapreduce
