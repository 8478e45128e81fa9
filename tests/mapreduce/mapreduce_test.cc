// The MapReduce building blocks: splits at chunk boundaries, partitioning, the external
// merge, and the built-in jobs.

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <random>

#include "cluster.h"
#include "external_sort.h"
#include "jobs.h"
#include "partition.h"
#include "splits.h"

namespace cairn::mapreduce {
namespace {

// Every line of `text` as the splits of `chunk` bytes see them, in order.
std::vector<std::pair<uint64_t, std::string>> linesBySplits(const std::string& text, uint64_t chunk,
                                                            uint64_t block) {
  ReadAt read = [&](uint64_t off, uint64_t len) -> Result<std::string> {
    if (off >= text.size()) return std::string();
    return text.substr(off, len);
  };
  std::vector<std::pair<uint64_t, std::string>> out;
  uint64_t splits = std::max<uint64_t>(1, (text.size() + chunk - 1) / chunk);
  for (uint64_t i = 0; i < splits; ++i) {
    Status s = forEachLine(
        read, text.size(), i * chunk, (i + 1) * chunk,
        [&](uint64_t off, std::string_view l) { out.emplace_back(off, l); }, block);
    EXPECT_TRUE(s.ok());
  }
  return out;
}

std::vector<std::pair<uint64_t, std::string>> linesOf(const std::string& text) {
  std::vector<std::pair<uint64_t, std::string>> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.emplace_back(start, text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

TEST(SplitsTest, EveryLineOnceWhateverTheBoundaries) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    int lines = static_cast<int>(rng() % 40);
    for (int i = 0; i < lines; ++i) {
      text += std::string(rng() % (trial % 3 == 0 ? 100 : 12), static_cast<char>('a' + i % 26));
      if (i + 1 < lines || rng() % 2) text += '\n';  // sometimes no final newline
    }
    uint64_t chunk = 1 + rng() % 30;
    uint64_t block = 1 + rng() % 17;
    EXPECT_EQ(linesBySplits(text, chunk, block), linesOf(text))
        << "trial " << trial << " chunk " << chunk << " block " << block;
  }
}

TEST(SplitsTest, EdgeCases) {
  EXPECT_TRUE(linesBySplits("", 4, 4).empty());
  EXPECT_EQ(linesBySplits("abc", 4, 4), linesOf("abc"));            // no newline at all
  EXPECT_EQ(linesBySplits("abcd\nef", 4, 2), linesOf("abcd\nef"));  // newline right at a boundary
  std::string longLine = std::string(50, 'x') + "\nshort\n";
  EXPECT_EQ(linesBySplits(longLine, 8, 3), linesOf(longLine));  // a line over six chunks
  EXPECT_EQ(linesBySplits("\n\n\n", 1, 1), linesOf("\n\n\n"));  // empty lines
}

TEST(PartitionTest, StableAndSpread) {
  EXPECT_EQ(keyHash("hello"), 0xa430d84680aabd0bull);  // FNV-1a 64 of "hello"
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 10000; ++i) counts[partitionOf("key" + std::to_string(i), 7)]++;
  ASSERT_EQ(counts.size(), 7u);
  for (auto& [p, n] : counts) EXPECT_GT(n, 1000) << p;
}

class SortTest : public ::testing::Test {
 protected:
  testing::TempDir dir;
};

TEST_F(SortTest, MergesSpilledRunsInKeyOrder) {
  ExternalSorter sorter(dir.path(), "p0", 4096);  // tiny budget: many runs
  std::map<std::string, std::vector<std::string>> expect;
  std::mt19937 rng(3);
  for (int i = 0; i < 5000; ++i) {
    std::string k = "k" + std::to_string(rng() % 300);
    std::string v = std::to_string(i);
    ASSERT_TRUE(sorter.add(k, v).ok());
    expect[k].push_back(v);
  }
  EXPECT_GT(sorter.runsSpilled(), 10u);
  std::vector<std::string> seen;
  Status s = sorter.finish([&](std::string_view k, const std::vector<std::string>& values) {
    seen.emplace_back(k);
    auto want = expect[std::string(k)];
    std::sort(want.begin(), want.end());
    EXPECT_EQ(values, want) << k;  // in byte order within a key, whatever the arrival
    return Status::OK();
  });
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(seen.size(), expect.size());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

TEST_F(SortTest, SmallInputsStayInMemory) {
  ExternalSorter sorter(dir.path(), "p1", 1 << 20);
  ASSERT_TRUE(sorter.add("b", "2").ok());
  ASSERT_TRUE(sorter.add("a", "1").ok());
  ASSERT_TRUE(sorter.add("b", "3").ok());
  std::string out;
  ASSERT_TRUE(sorter
                  .finish([&](std::string_view k, const std::vector<std::string>& v) {
                    out += std::string(k) + "=" + std::to_string(v.size()) + ";";
                    return Status::OK();
                  })
                  .ok());
  EXPECT_EQ(out, "a=1;b=2;");
  EXPECT_EQ(sorter.runsSpilled(), 0u);
}

TEST(JobsTest, WordCountIndexAndGrep) {
  std::vector<std::string> words;
  forEachWord("It's 2 o'clock-ish; naïve x", [&](std::string_view w) { words.emplace_back(w); });
  EXPECT_EQ(words, (std::vector<std::string>{"It", "s", "o", "clock", "ish", "na", "ve", "x"}));
  WordCount wc;
  std::vector<std::string> lines;
  wc.combine("the", {"1", "1", "3"}, [&](std::string_view k, std::string_view v) {
    EXPECT_EQ(k, "the");
    EXPECT_EQ(v, "5");
  });
  wc.reduce("the", {"5", "2"}, [&](std::string_view l) { lines.emplace_back(l); });
  InvertedIndex index;
  index.reduce("w", {"/b", "/a", "/b"}, [&](std::string_view l) { lines.emplace_back(l); });
  Grep grep("o+k");
  grep.map("/f", 42, "no match here", [&](std::string_view, std::string_view) { FAIL(); });
  grep.map("/f", 42, "a book", [&](std::string_view k, std::string_view v) {
    grep.reduce(k, {std::string(v)}, [&](std::string_view l) { lines.emplace_back(l); });
  });
  EXPECT_EQ(lines, (std::vector<std::string>{"the\t7", "w\t2\t/a,/b", "/f:42\ta book"}));
}

}  // namespace
}  // namespace cairn::mapreduce
