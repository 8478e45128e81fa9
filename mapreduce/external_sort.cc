#include "external_sort.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <queue>

#include "records.h"

namespace cairn::mapreduce {

ExternalSorter::ExternalSorter(std::string scratchDir, std::string prefix, size_t budget)
    : dir(std::move(scratchDir)), prefix(std::move(prefix)), budget(budget) {}

ExternalSorter::~ExternalSorter() {
  for (auto& r : runs) remove(r.c_str());
}

Status ExternalSorter::add(std::string_view key, std::string_view value) {
  records.emplace_back(std::string(key), std::string(value));
  buffered += key.size() + value.size() + 64;
  if (buffered > budget) return spill();
  return Status::OK();
}

Status ExternalSorter::spill() {
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string path = fmt::format("{}/{}.run{}", dir, prefix, runs.size());
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::ioError(fmt::format("{}: {}", path, strerror(errno)));
  runs.push_back(path);
  for (auto& [k, v] : records) {
    if (!writeRecord(f, k, v)) {
      fclose(f);
      return Status::ioError(fmt::format("writing {}: {}", path, strerror(errno)));
    }
  }
  if (fclose(f) != 0) return Status::ioError(fmt::format("closing {}", path));
  records.clear();
  buffered = 0;
  return Status::OK();
}

Status ExternalSorter::finish(
    const std::function<Status(std::string_view, const std::vector<std::string>&)>& group) {
  if (!runs.empty() && !records.empty()) {
    Status s = spill();
    if (!s.ok()) return s;
  }
  if (runs.empty()) {
    // Everything fits in memory.
    std::stable_sort(records.begin(), records.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> values;
    for (size_t i = 0; i < records.size();) {
      size_t j = i;
      values.clear();
      while (j < records.size() && records[j].first == records[i].first) {
        values.push_back(std::move(records[j].second));
        ++j;
      }
      std::sort(values.begin(), values.end());
      Status s = group(records[i].first, values);
      if (!s.ok()) return s;
      i = j;
    }
    records.clear();
    return Status::OK();
  }
  std::vector<std::unique_ptr<RecordReader>> readers;
  std::vector<bool> valid;
  for (auto& path : runs) {
    FILE* f = fopen(path.c_str(), "rb");
    if (f == nullptr) return Status::ioError(fmt::format("{}: {}", path, strerror(errno)));
    readers.push_back(std::make_unique<RecordReader>(f));
    valid.push_back(readers.back()->next());
  }
  // Smallest key first; among equal keys, the earlier run first (stable).
  auto later = [&](size_t a, size_t b) {
    if (readers[a]->key != readers[b]->key) return readers[a]->key > readers[b]->key;
    return a > b;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  for (size_t i = 0; i < readers.size(); ++i) {
    if (valid[i]) heap.push(i);
  }
  std::vector<std::string> values;
  while (!heap.empty()) {
    std::string key = readers[heap.top()]->key;
    values.clear();
    while (!heap.empty() && readers[heap.top()]->key == key) {
      size_t i = heap.top();
      heap.pop();
      values.push_back(std::move(readers[i]->value));
      if (readers[i]->next()) {
        heap.push(i);
      } else if (readers[i]->truncated()) {
        return Status::ioError(fmt::format("sorted run {} is truncated", runs[i]));
      }
    }
    std::sort(values.begin(), values.end());
    Status s = group(key, values);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

}  // namespace cairn::mapreduce
