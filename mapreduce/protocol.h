#pragma once
// Conversions between the scheduler's types and mapreduce.capnp, and the checks every
// job specification passes before the coordinator accepts it.

#include "mapreduce.capnp.h"
#include "scheduler.h"
#include "status.h"

namespace cairn::mapreduce {

void toWire(const JobSpec& spec, wire::JobSpec::Builder out);
JobSpec fromWire(wire::JobSpec::Reader in);
void toWire(const JobReport& report, wire::JobReport::Builder out);
JobReport fromWire(wire::JobReport::Reader in);
void toWire(const Assignment& task, wire::Task::Builder out);
void toWire(const AttemptResult& result, wire::TaskResult::Builder out);
AttemptResult fromWire(wire::TaskResult::Reader in);

// A task as a worker receives it.
struct TaskOrder {
  uint64_t jobId = 0;
  uint32_t task = 0;
  uint32_t attempt = 0;
  bool isMap = true;
  JobSpec spec;
  Split split;
  std::vector<MapOutputLocation> mapOutputs;
};
TaskOrder fromWire(wire::Task::Reader in);

constexpr uint32_t MAX_REDUCERS = 10000;
constexpr uint32_t MAX_INPUTS = 1000;
constexpr size_t MAX_COMMAND = 64 << 10;
constexpr size_t MAX_PATTERN = 1024;

// "/a//b/" -> "/a/b"; the path must already be valid (see validateSpec).
std::string canonicalPath(const std::string& path);

// Checks everything that does not need the cluster: paths, counts, the job's own fields
// (a grep pattern must compile; streaming needs both commands).
Status validateSpec(const JobSpec& spec);

const char* jobStateName(JobState state);

}  // namespace cairn::mapreduce
