#include "tasks.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "external_sort.h"
#include "partition.h"
#include "records.h"
#include "subprocess.h"

namespace cairn::mapreduce {
namespace {

constexpr uint64_t READ_BLOCK = 8 << 20;  // input read per call: 8 pieces in flight

// Map output on its way to the partition files: appended per partition in memory and
// written out in batches, so that no more than one file is open at a time whatever R is.
class PartitionWriter {
 public:
  PartitionWriter(std::string dir, uint32_t reducers) : dir(std::move(dir)), parts(reducers) {}

  Status add(std::string_view key, std::string_view value) {
    appendRecord(parts[partitionOf(key, static_cast<uint32_t>(parts.size()))], key, value);
    buffered += key.size() + value.size() + 8;
    return buffered >= (8u << 20) ? flush() : Status::OK();
  }

  Status flush() {
    for (uint32_t r = 0; r < parts.size(); ++r) {
      if (parts[r].empty()) continue;
      std::string path = partitionFile(dir, r);
      FILE* f = fopen(path.c_str(), "ab");
      bool ok = f != nullptr && fwrite(parts[r].data(), 1, parts[r].size(), f) == parts[r].size();
      if (f != nullptr && fclose(f) != 0) ok = false;
      if (!ok) return Status::ioError(fmt::format("writing {}: {}", path, strerror(errno)));
      written += parts[r].size();
      parts[r].clear();
    }
    buffered = 0;
    return Status::OK();
  }

  uint64_t written = 0;

 private:
  std::string dir;
  std::vector<std::string> parts;
  size_t buffered = 0;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// The map side of a built-in job: values gather per key and are folded by the combiner as
// they grow, and the whole table goes to the partitions when it outgrows its budget.
class MapTable {
 public:
  MapTable(Job& job, PartitionWriter& writer, size_t budget)
      : job(job), writer(writer), budget(budget) {}

  void emit(std::string_view key, std::string_view value) {
    if (job.valuesAreCounts()) {
      auto it = counts.find(key);
      if (it == counts.end()) {
        it = counts.emplace(std::string(key), 0).first;
        bytes += key.size() + 64;
      }
      it->second += value == "1" ? 1 : std::stoull(std::string(value));
      if (bytes > budget) flush();
      return;
    }
    auto it = table.find(key);
    if (it == table.end()) {
      it = table.emplace(std::string(key), Entry{}).first;
      bytes += key.size() + 64;
    }
    Entry& e = it->second;
    e.values.emplace_back(value);
    bytes += value.size() + 32;
    if (e.values.size() >= e.combineAt) {
      size_t before = 0, after = 0;
      std::vector<std::string> folded;
      for (auto& v : e.values) before += v.size() + 32;
      job.combine(it->first, e.values, [&](std::string_view, std::string_view v) {
        folded.emplace_back(v);
        after += v.size() + 32;
      });
      e.values = std::move(folded);
      e.combineAt = std::max<size_t>(64, 2 * e.values.size());
      bytes = bytes - before + after;
    }
    if (bytes > budget) flush();
  }

  // Writes out every key through the combiner; the first write error sticks.
  Status flush() {
    for (auto& [key, n] : counts) {
      if (error.ok()) error = writer.add(key, std::to_string(n));
    }
    counts.clear();
    for (auto& [key, e] : table) {
      job.combine(key, e.values, [&](std::string_view k, std::string_view v) {
        if (error.ok()) error = writer.add(k, v);
      });
    }
    table.clear();
    bytes = 0;
    return error;
  }

 private:
  struct Entry {
    std::vector<std::string> values;
    size_t combineAt = 64;
  };
  Job& job;
  PartitionWriter& writer;
  size_t budget;
  size_t bytes = 0;
  Status error;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> table;
  std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>> counts;
};

}  // namespace

Result<std::shared_ptr<Job>> makeJob(const JobSpec& spec) {
  switch (spec.kind) {
    case JobKind::WORD_COUNT:
      return std::shared_ptr<Job>(std::make_shared<WordCount>());
    case JobKind::INVERTED_INDEX:
      return std::shared_ptr<Job>(std::make_shared<InvertedIndex>());
    case JobKind::GREP:
      try {
        return std::shared_ptr<Job>(std::make_shared<Grep>(spec.pattern));
      } catch (const std::regex_error& e) {
        return Status::invalidArgument(
            fmt::format("grep pattern '{}': {}", spec.pattern, e.what()));
      }
    case JobKind::STREAMING:
      return std::shared_ptr<Job>();
  }
  return Status::invalidArgument("unknown job kind");
}

std::string jobScratchDir(const std::string& scratch, uint64_t jobId) {
  return fmt::format("{}/job-{}", scratch, jobId);
}

std::string mapOutputDir(const std::string& scratch, uint64_t jobId, uint32_t task,
                         uint32_t attempt) {
  return fmt::format("{}/map-{}-{}", jobScratchDir(scratch, jobId), task, attempt);
}

std::string partitionFile(const std::string& mapDir, uint32_t partition) {
  return fmt::format("{}/part-{}", mapDir, partition);
}

Status runMap(const JobSpec& spec, const Split& split, const ReadAt& read,
              const std::string& outDir, size_t memoryBudget, MapStats* stats,
              const Cancelled& cancelled) {
  auto job = makeJob(spec);
  if (!job.ok()) return job.status;
  std::string tmp = outDir + ".tmp";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  if (!std::filesystem::create_directories(tmp, ec) && ec) {
    return Status::ioError(fmt::format("{}: {}", tmp, ec.message()));
  }
  ReadAt counted = [&](uint64_t offset, uint64_t length) -> Result<std::string> {
    if (cancelled && cancelled()) return Status::unavailable("cancelled: the job ended");
    auto r = read(offset, length);
    if (r.ok()) stats->bytesRead += r.value.size();
    return r;
  };
  PartitionWriter writer(tmp, spec.reducers);
  Status s;
  if (!job.value) {
    std::vector<std::string> env = {"CAIRN_INPUT_FILE=" + split.path,
                                    "CAIRN_INPUT_START=" + std::to_string(split.start)};
    s = runCommand(
        spec.mapper, env,
        [&](const WriteInput& write) {
          bool reading = true;
          std::string buf;
          Status r = forEachLine(
              counted, split.fileSize, split.start, split.end,
              [&](uint64_t, std::string_view text) {
                if (!reading) return;
                buf.assign(text);
                buf += '\n';
                reading = write(buf);
              },
              READ_BLOCK);
          return r;
        },
        [&](std::string_view line) {
          size_t tab = line.find('\t');
          if (tab == std::string_view::npos) return writer.add(line, "");
          return writer.add(line.substr(0, tab), line.substr(tab + 1));
        },
        cancelled);
  } else {
    MapTable table(*job.value, writer, memoryBudget);
    s = forEachLine(
        counted, split.fileSize, split.start, split.end,
        [&](uint64_t offset, std::string_view text) {
          job.value->map(split.path, offset, text, [&](auto k, auto v) { table.emit(k, v); });
        },
        READ_BLOCK);
    Status flushed = table.flush();
    if (s.ok()) s = flushed;
  }
  if (s.ok()) s = writer.flush();
  if (s.ok()) {
    std::filesystem::rename(tmp, outDir, ec);
    if (ec) s = Status::ioError(fmt::format("renaming {}: {}", tmp, ec.message()));
  }
  if (!s.ok()) std::filesystem::remove_all(tmp, ec);
  stats->bytesWritten = writer.written;
  return s;
}

Status runReduce(const JobSpec& spec, uint32_t partition,
                 const std::vector<MapOutputLocation>& maps, const FetchPartition& fetch,
                 const std::string& scratchDir, size_t memoryBudget,
                 const std::function<Status(std::string_view)>& out, ReduceStats* stats,
                 const Cancelled& cancelled) {
  auto job = makeJob(spec);
  if (!job.ok()) return job.status;
  ExternalSorter sorter(scratchDir, fmt::format("reduce-{}", partition), memoryBudget);
  Status added;
  std::string lastError;
  for (auto& m : maps) {
    std::string carry;
    uint64_t offset = 0;
    bool eof = false;
    while (!eof) {
      if (cancelled && cancelled()) return Status::unavailable("cancelled: the job ended");
      auto piece = fetch(m, offset, &eof);
      if (!piece.ok()) {
        stats->lost.push_back(m);
        lastError = piece.status.message();
        break;
      }
      offset += piece.value.size();
      stats->shuffleBytes += piece.value.size();
      carry += piece.value;
      size_t used = forEachRecord(carry, [&](std::string_view k, std::string_view v) {
        if (added.ok()) added = sorter.add(k, v);
      });
      carry.erase(0, used);
      if (!added.ok()) return added;
      if (!eof && piece.value.empty()) {
        stats->lost.push_back(m);
        lastError = "a fetch returned nothing before the end";
        break;
      }
    }
    if (eof && !carry.empty()) {
      stats->lost.push_back(m);
      lastError = "map output ends inside a record";
    }
  }
  if (!stats->lost.empty()) {
    return Status::unavailable(
        fmt::format("could not fetch {} map output(s), e.g. map {} from {}: {}", stats->lost.size(),
                    stats->lost[0].task, stats->lost[0].worker, lastError));
  }
  auto emit = [&](std::string_view line) {
    if (cancelled && cancelled()) return Status::unavailable("cancelled: the job ended");
    stats->bytesWritten += line.size();
    return out(line);
  };
  if (job.value) {
    return sorter.finish([&](std::string_view key, const std::vector<std::string>& values) {
      Status s;
      std::string line;
      job.value->reduce(key, values, [&](std::string_view text) {
        if (!s.ok()) return;
        line.assign(text);
        line += '\n';
        s = emit(line);
      });
      return s;
    });
  }
  std::vector<std::string> env = {"CAIRN_PARTITION=" + std::to_string(partition)};
  std::string line;
  return runCommand(
      spec.reducer, env,
      [&](const WriteInput& write) {
        bool reading = true;
        std::string buf;
        return sorter.finish([&](std::string_view key, const std::vector<std::string>& values) {
          for (auto& v : values) {
            if (!reading) break;
            buf.assign(key);
            buf += '\t';
            buf += v;
            buf += '\n';
            reading = write(buf);
          }
          return Status::OK();
        });
      },
      [&](std::string_view text) {
        line.assign(text);
        line += '\n';
        return emit(line);
      },
      cancelled);
}

}  // namespace cairn::mapreduce
