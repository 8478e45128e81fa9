#pragma once
// Running one map or one reduce, given its input and output as functions, so that the
// same code runs in a worker (over Cairn and RPC) and in unit tests (over strings).
// Blocking: run on a worker's task thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jobs.h"
#include "scheduler.h"
#include "splits.h"
#include "status.h"
#include "subprocess.h"

namespace cairn::mapreduce {

// The built-in job for `spec` (nullptr for streaming); errors name a bad grep pattern.
Result<std::shared_ptr<Job>> makeJob(const JobSpec& spec);

// Where a worker keeps one map attempt's output: DIR/job-<id>/map-<task>-<attempt>/,
// one file `part-<r>` per partition that got records.
std::string jobScratchDir(const std::string& scratch, uint64_t jobId);
std::string mapOutputDir(const std::string& scratch, uint64_t jobId, uint32_t task,
                         uint32_t attempt);
std::string partitionFile(const std::string& mapDir, uint32_t partition);

struct MapStats {
  uint64_t bytesRead = 0;     // input bytes read
  uint64_t bytesWritten = 0;  // map output bytes
};

// Runs the lines of `split` through the job's map (and combiner) or the streaming mapper
// and writes the output partitioned by key hash into `outDir`, which must not exist: it
// is written under a temporary name and renamed, so it appears whole or not at all. The
// map-side table holds about `memoryBudget` bytes before it is combined and written out.
// `cancelled`, when given, is asked between input blocks and while a command runs; true
// stops the task.
Status runMap(const JobSpec& spec, const Split& split, const ReadAt& read,
              const std::string& outDir, size_t memoryBudget, MapStats* stats,
              const Cancelled& cancelled = nullptr);

// Reads up to `length` bytes at `offset` of one map output partition; `eof` says it ends
// there.
using FetchPartition =
    std::function<Result<std::string>(const MapOutputLocation& from, uint64_t offset, bool* eof)>;

struct ReduceStats {
  uint64_t shuffleBytes = 0;
  uint64_t bytesWritten = 0;
  std::vector<MapOutputLocation> lost;  // map outputs that could not be fetched
};

// Fetches partition `partition` of every map output, sorts it within `memoryBudget`
// (spilling runs into `scratchDir`), reduces each key and passes the output to `out`.
// When fetches fail, the others are still tried, `stats->lost` names the failed ones and
// the result is unavailable.
Status runReduce(const JobSpec& spec, uint32_t partition,
                 const std::vector<MapOutputLocation>& maps, const FetchPartition& fetch,
                 const std::string& scratchDir, size_t memoryBudget,
                 const std::function<Status(std::string_view)>& out, ReduceStats* stats,
                 const Cancelled& cancelled = nullptr);

}  // namespace cairn::mapreduce
