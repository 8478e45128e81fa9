#pragma once
// Sorting key/value records with a bounded memory budget: records collect in memory and,
// past the budget, are written to the scratch directory as sorted runs; finish() merges
// the runs and the memory with a heap and hands each key with all its values, in key order.
// Blocking file I/O: run it on a worker's pool thread, not an event loop.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "status.h"

namespace cairn::mapreduce {

class ExternalSorter {
 public:
  // Runs are files `scratchDir/<prefix>.run<N>`, removed by finish() or the destructor.
  ExternalSorter(std::string scratchDir, std::string prefix, size_t memoryBudgetBytes);
  ~ExternalSorter();

  Status add(std::string_view key, std::string_view value);
  // Calls group(key, values) once per key, keys and each key's values in byte order, so
  // that every attempt of a reduce sees the same input (and a deterministic reduce writes
  // the same output: record append's duplicates are then recognized by their ids).
  // Returns the first I/O error.
  Status finish(
      const std::function<Status(std::string_view, const std::vector<std::string>&)>& group);
  size_t runsSpilled() const { return runs.size(); }

 private:
  Status spill();

  std::string dir, prefix;
  size_t budget;
  size_t buffered = 0;
  std::vector<std::pair<std::string, std::string>> records;
  std::vector<std::string> runs;
};

}  // namespace cairn::mapreduce
