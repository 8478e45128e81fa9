#include "external_sort.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <queue>

namespace cairn::mapreduce {
namespace {

// Run format: per record, u32 key length, u32 value length (little-endian), key, value.
bool writeRecord(FILE* f, std::string_view k, std::string_view v) {
  uint32_t lengths[2] = {static_cast<uint32_t>(k.size()), static_cast<uint32_t>(v.size())};
  return fwrite(lengths, sizeof(lengths), 1, f) == 1 &&
         fwrite(k.data(), 1, k.size(), f) == k.size() &&
         fwrite(v.data(), 1, v.size(), f) == v.size();
}

struct RunReader {
  FILE* file = nullptr;
  std::string key, value;
  bool valid = false;
  bool failed = false;
  ~RunReader() {
    if (file) fclose(file);
  }
  void next() {
    uint32_t lengths[2];
    valid = false;
    if (fread(lengths, sizeof(lengths), 1, file) != 1) return;
    key.resize(lengths[0]);
    value.resize(lengths[1]);
    if (fread(key.data(), 1, key.size(), file) != key.size() ||
        fread(value.data(), 1, value.size(), file) != value.size()) {
      failed = true;
      return;
    }
    valid = true;
  }
};

}  // namespace

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
      Status s = group(records[i].first, values);
      if (!s.ok()) return s;
      i = j;
    }
    records.clear();
    return Status::OK();
  }
  std::vector<std::unique_ptr<RunReader>> readers;
  for (auto& path : runs) {
    auto r = std::make_unique<RunReader>();
    r->file = fopen(path.c_str(), "rb");
    if (r->file == nullptr) return Status::ioError(fmt::format("{}: {}", path, strerror(errno)));
    r->next();
    readers.push_back(std::move(r));
  }
  // Smallest key first; among equal keys, the earlier run first (stable).
  auto later = [&](size_t a, size_t b) {
    if (readers[a]->key != readers[b]->key) return readers[a]->key > readers[b]->key;
    return a > b;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  for (size_t i = 0; i < readers.size(); ++i) {
    if (readers[i]->valid) heap.push(i);
  }
  std::vector<std::string> values;
  while (!heap.empty()) {
    std::string key = readers[heap.top()]->key;
    values.clear();
    while (!heap.empty() && readers[heap.top()]->key == key) {
      size_t i = heap.top();
      heap.pop();
      values.push_back(std::move(readers[i]->value));
      readers[i]->next();
      if (readers[i]->failed) return Status::ioError("a sorted run is truncated");
      if (readers[i]->valid) heap.push(i);
    }
    Status s = group(key, values);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

}  // namespace cairn::mapreduce
