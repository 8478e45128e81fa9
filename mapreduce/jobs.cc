#include "jobs.h"

#include <algorithm>
#include <set>

namespace cairn::mapreduce {
namespace {

// isalpha in the C locale, without depending on the process's locale.
bool isLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

uint64_t sum(const std::vector<std::string>& values) {
  uint64_t total = 0;
  for (auto& v : values) total += std::stoull(v);
  return total;
}

}  // namespace

void Job::combine(std::string_view key, const std::vector<std::string>& values, const Emit& emit) {
  for (auto& v : values) emit(key, v);
}

void forEachWord(std::string_view line, const std::function<void(std::string_view)>& word) {
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && !isLetter(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && isLetter(line[i])) ++i;
    if (i > start) word(line.substr(start, i - start));
  }
}

void WordCount::map(std::string_view, uint64_t, std::string_view line, const Emit& emit) {
  forEachWord(line, [&](std::string_view w) { emit(w, "1"); });
}

void WordCount::combine(std::string_view key, const std::vector<std::string>& values,
                        const Emit& emit) {
  emit(key, std::to_string(sum(values)));
}

void WordCount::reduce(std::string_view key, const std::vector<std::string>& values,
                       const std::function<void(std::string_view)>& out) {
  out(std::string(key) + "\t" + std::to_string(sum(values)));
}

void InvertedIndex::map(std::string_view path, uint64_t, std::string_view line, const Emit& emit) {
  forEachWord(line, [&](std::string_view w) { emit(w, path); });
}

void InvertedIndex::combine(std::string_view key, const std::vector<std::string>& values,
                            const Emit& emit) {
  for (auto& p : std::set<std::string>(values.begin(), values.end())) emit(key, p);
}

void InvertedIndex::reduce(std::string_view key, const std::vector<std::string>& values,
                           const std::function<void(std::string_view)>& out) {
  std::set<std::string> paths(values.begin(), values.end());
  std::string joined;
  for (auto& p : paths) {
    if (!joined.empty()) joined += ",";
    joined += p;
  }
  out(std::string(key) + "\t" + std::to_string(paths.size()) + "\t" + joined);
}

void Grep::map(std::string_view path, uint64_t offset, std::string_view line, const Emit& emit) {
  if (std::regex_search(line.begin(), line.end(), pattern)) {
    emit(std::string(path) + ":" + std::to_string(offset), line);
  }
}

void Grep::reduce(std::string_view key, const std::vector<std::string>& values,
                  const std::function<void(std::string_view)>& out) {
  for (auto& v : values) out(std::string(key) + "\t" + v);
}

}  // namespace cairn::mapreduce
