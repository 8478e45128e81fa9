#pragma once
// The built-in jobs: what a map does with one line, how a combiner folds one key's values
// on the map side, and what a reduce writes for one key.

#include <functional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::mapreduce {

using Emit = std::function<void(std::string_view key, std::string_view value)>;

class Job {
 public:
  virtual ~Job() = default;
  // One input line of `path` at byte `offset`.
  virtual void map(std::string_view path, uint64_t offset, std::string_view line,
                   const Emit& emit) = 0;
  // Folds values of one key on the map side; by default keeps them all.
  virtual void combine(std::string_view key, const std::vector<std::string>& values,
                       const Emit& emit);
  // Output lines for one key (without newlines), given all its values.
  virtual void reduce(std::string_view key, const std::vector<std::string>& values,
                      const std::function<void(std::string_view)>& out) = 0;
  // True when every value is a decimal count and combine() sums them: the map side then
  // keeps one number per key instead of a list of values.
  virtual bool valuesAreCounts() const { return false; }
};

// word<TAB>count, a word being a maximal run of letters (isalpha in the C locale).
class WordCount final : public Job {
 public:
  void map(std::string_view, uint64_t, std::string_view line, const Emit& emit) override;
  void combine(std::string_view key, const std::vector<std::string>& values,
               const Emit& emit) override;
  void reduce(std::string_view key, const std::vector<std::string>& values,
              const std::function<void(std::string_view)>& out) override;
  bool valuesAreCounts() const override { return true; }
};

// word<TAB>n<TAB>path1,path2,… with the distinct input paths holding the word, sorted.
class InvertedIndex final : public Job {
 public:
  void map(std::string_view path, uint64_t, std::string_view line, const Emit& emit) override;
  void combine(std::string_view key, const std::vector<std::string>& values,
               const Emit& emit) override;
  void reduce(std::string_view key, const std::vector<std::string>& values,
              const std::function<void(std::string_view)>& out) override;
};

// path:byte-offset<TAB>line for every line matching an ECMAScript regex.
class Grep final : public Job {
 public:
  explicit Grep(const std::string& pattern) : pattern(pattern, std::regex::ECMAScript) {}
  void map(std::string_view path, uint64_t offset, std::string_view line,
           const Emit& emit) override;
  void reduce(std::string_view key, const std::vector<std::string>& values,
              const std::function<void(std::string_view)>& out) override;

 private:
  std::regex pattern;
};

// Calls word(w) for each maximal run of C-locale letters in `line`.
void forEachWord(std::string_view line, const std::function<void(std::string_view)>& word);

}  // namespace cairn::mapreduce
