// One map and one reduce as a worker runs them, over a string for the input and the local
// disk for map output: built-in jobs with the combiner and spilled sorts under tiny
// budgets, streaming commands, failing commands, and map output that cannot be fetched.

#include "tasks.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "cluster.h"
#include "partition.h"
#include "protocol.h"
#include "records.h"
#include "subprocess.h"

namespace cairn::mapreduce {
namespace {

class TasksTest : public ::testing::Test {
 protected:
  TasksTest() { signal(SIGPIPE, SIG_IGN); }
  ~TasksTest() noexcept override {}

  // Runs every split of `text` (chunks of `chunk` bytes) and every reduce; returns the
  // output lines in order of partition.
  Result<std::vector<std::string>> runJob(const JobSpec& spec, const std::string& text,
                                          uint64_t chunk, size_t mapBudget, size_t sortBudget) {
    ReadAt read = [&](uint64_t off, uint64_t len) -> Result<std::string> {
      return off >= text.size() ? std::string() : text.substr(off, len);
    };
    std::vector<MapOutputLocation> outputs;
    uint64_t splits = (text.size() + chunk - 1) / chunk;
    for (uint64_t i = 0; i < splits; ++i) {
      Split s;
      s.path = "/in/t.txt";
      s.fileSize = text.size();
      s.start = i * chunk;
      s.end = std::min<uint64_t>(text.size(), (i + 1) * chunk);
      MapStats stats;
      Status st = runMap(spec, s, read, mapOutputDir(temp.path(), 1, i, 0), mapBudget, &stats);
      if (!st.ok()) return st;
      EXPECT_GE(stats.bytesRead, s.end - s.start);
      outputs.push_back({static_cast<uint32_t>(i), 0, "self"});
    }
    std::vector<std::string> lines;
    for (uint32_t r = 0; r < spec.reducers; ++r) {
      FetchPartition fetch = [&](const MapOutputLocation& from, uint64_t offset,
                                 bool* eof) -> Result<std::string> {
        std::string data =
            testing::readFile(partitionFile(mapOutputDir(temp.path(), 1, from.task, 0), r));
        // Small pieces, so that records are cut between fetches.
        std::string piece = offset < data.size() ? data.substr(offset, 777) : "";
        *eof = offset + piece.size() >= data.size();
        return piece;
      };
      std::string out;
      ReduceStats stats;
      Status st = runReduce(
          spec, r, outputs, fetch, temp.path(), sortBudget,
          [&](std::string_view bytes) {
            out.append(bytes);
            return Status::OK();
          },
          &stats);
      if (!st.ok()) return st;
      EXPECT_EQ(stats.bytesWritten, out.size());
      size_t from = 0;
      for (size_t nl; (nl = out.find('\n', from)) != std::string::npos; from = nl + 1) {
        lines.push_back(out.substr(from, nl - from));
      }
      EXPECT_EQ(from, out.size()) << "output ends with a newline";
    }
    return lines;
  }

  testing::TempDir temp;
};

std::string words(size_t count, uint64_t seed) {
  static const char* vocab[] = {"alpha", "beta", "Gamma", "delta", "e", "zeta"};
  std::mt19937_64 rng(seed);
  std::string text;
  for (size_t i = 0; i < count; ++i) {
    text += vocab[rng() % 6];
    text += rng() % 9 == 0 ? "\n" : (rng() % 5 == 0 ? "--" : " ");
  }
  return text;  // no final newline
}

std::map<std::string, uint64_t> countWords(const std::string& text) {
  std::map<std::string, uint64_t> counts;
  forEachWord(text, [&](std::string_view w) { ++counts[std::string(w)]; });
  return counts;
}

std::map<std::string, uint64_t> parseCounts(const std::vector<std::string>& lines) {
  std::map<std::string, uint64_t> counts;
  for (auto& l : lines) {
    size_t tab = l.find('\t');
    EXPECT_NE(tab, std::string::npos) << l;
    EXPECT_EQ(counts.count(l.substr(0, tab)), 0u) << "a key in two lines: " << l;
    counts[l.substr(0, tab)] = std::stoull(l.substr(tab + 1));
  }
  return counts;
}

TEST_F(TasksTest, WordCountWithCombinerAndSpilledSortsUnderTinyBudgets) {
  std::string text = words(20000, 1);
  JobSpec spec;
  spec.kind = JobKind::WORD_COUNT;
  spec.reducers = 3;
  auto lines = runJob(spec, text, 10000, 2048, 512);
  ASSERT_TRUE(lines.ok()) << lines.status.toString();
  EXPECT_EQ(parseCounts(lines.value), countWords(text));
  // Each partition's keys come out sorted.
  for (size_t i = 1; i < lines.value.size(); ++i) {
    if (partitionOf(lines.value[i].substr(0, lines.value[i].find('\t')), 3) ==
        partitionOf(lines.value[i - 1].substr(0, lines.value[i - 1].find('\t')), 3)) {
      EXPECT_LT(lines.value[i - 1], lines.value[i]);
    }
  }
}

TEST_F(TasksTest, StreamingMapperAndReducer) {
  std::string text = words(5000, 2);
  JobSpec spec;
  spec.kind = JobKind::STREAMING;
  spec.reducers = 2;
  spec.mapper = "LC_ALL=C tr -cs 'A-Za-z' '\\n' | awk 'NF { print $0 \"\\t1\" }'";
  // The reducer sees its pairs sorted by key: count runs of equal keys.
  spec.reducer =
      "awk -F'\\t' '$1 != k { if (n) print k \"\\t\" n; k = $1; n = 0 } { n += $2 } "
      "END { if (n) print k \"\\t\" n }'";
  auto lines = runJob(spec, text, 4096, 1 << 20, 1024);
  ASSERT_TRUE(lines.ok()) << lines.status.toString();
  EXPECT_EQ(parseCounts(lines.value), countWords(text));
}

TEST_F(TasksTest, AFailingCommandFailsTheTaskWithItsMessage) {
  JobSpec spec;
  spec.kind = JobKind::STREAMING;
  spec.reducers = 1;
  spec.mapper = "cat >/dev/null; echo 'line 3: bad record' >&2; exit 3";
  spec.reducer = "cat";
  auto lines = runJob(spec, "a\nb\nc\n", 4, 1 << 20, 1 << 20);
  ASSERT_FALSE(lines.ok());
  EXPECT_NE(lines.status.message().find("exited with status 3: line 3: bad record"),
            std::string::npos)
      << lines.status.message();
  EXPECT_FALSE(std::filesystem::exists(mapOutputDir(temp.path(), 1, 0, 0)))
      << "a failed map leaves no output";
  // A mapper that reads nothing and succeeds is fine (its stdin closes under it).
  spec.mapper = "echo k; exit 0";
  lines = runJob(spec, std::string(300000, 'x'), 100000, 1 << 20, 1 << 20);
  ASSERT_TRUE(lines.ok()) << lines.status.toString();
  EXPECT_EQ(lines.value.size(), 3u);
}

TEST_F(TasksTest, MapOutputThatCannotBeFetchedIsNamed) {
  JobSpec spec;
  spec.kind = JobKind::WORD_COUNT;
  spec.reducers = 1;
  std::vector<MapOutputLocation> maps = {{0, 0, "w1:1"}, {1, 2, "w2:1"}, {2, 0, "w1:1"}};
  FetchPartition fetch = [&](const MapOutputLocation& from, uint64_t,
                             bool* eof) -> Result<std::string> {
    if (from.worker == "w2:1") return Status::unavailable("worker w2:1: connection refused");
    std::string rec;
    appendRecord(rec, "word", "1");
    *eof = true;
    return rec;
  };
  ReduceStats stats;
  Status s = runReduce(
      spec, 0, maps, fetch, temp.path(), 1 << 20, [](std::string_view) { return Status::OK(); },
      &stats);
  EXPECT_EQ(s.code(), ErrorCode::UNAVAILABLE);
  ASSERT_EQ(stats.lost.size(), 1u);
  EXPECT_EQ(stats.lost[0].task, 1u);
  EXPECT_EQ(stats.lost[0].attempt, 2u);
}

TEST(SpecTest, ValidationBoundsWhatComesFromTheNetwork) {
  JobSpec s;
  s.inputs = {"/in"};
  s.output = "/out";
  s.kind = JobKind::GREP;
  // Nested groups within the bound compile; past the bound a pattern is refused before
  // std::regex (which recurses per group) sees it.
  s.pattern = std::string(100, '(') + "ab" + std::string(100, ')');
  EXPECT_TRUE(validateSpec(s).ok()) << validateSpec(s).toString();
  s.pattern = std::string(40000, '(') + "a" + std::string(40000, ')');
  EXPECT_EQ(validateSpec(s).code(), ErrorCode::INVALID_ARGUMENT);
  s.pattern = "(unclosed";
  EXPECT_NE(validateSpec(s).message().find("grep pattern"), std::string::npos);
  s.pattern = "x";
  s.reducers = 0;
  EXPECT_FALSE(validateSpec(s).ok());
  s.reducers = 1;
  s.output = "/";
  EXPECT_FALSE(validateSpec(s).ok());
  s.output = "relative";
  EXPECT_FALSE(validateSpec(s).ok());
  s.output = "/out";
  s.kind = static_cast<JobKind>(9);
  EXPECT_FALSE(validateSpec(s).ok());
  s.kind = JobKind::STREAMING;
  s.mapper = "cat";
  EXPECT_FALSE(validateSpec(s).ok()) << "no reducer";
  s.reducer = std::string(MAX_COMMAND + 1, 'x');
  EXPECT_FALSE(validateSpec(s).ok());
  s.reducer = "cat";
  EXPECT_TRUE(validateSpec(s).ok());
  EXPECT_EQ(canonicalPath("/a//b/"), "/a/b");
}

TEST(SubprocessTest, ACancelledCommandIsKilledWithItsPipeline) {
  signal(SIGPIPE, SIG_IGN);
  auto started = std::chrono::steady_clock::now();
  std::atomic<bool> stop = false;
  std::thread later([&]() {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
  });
  Status s = runCommand(
      "sleep 30 | cat", {}, [](const WriteInput&) { return Status::OK(); },
      [](std::string_view) { return Status::OK(); }, [&]() { return stop.load(); });
  later.join();
  EXPECT_EQ(s.code(), ErrorCode::UNAVAILABLE) << s.toString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5))
      << "the pipeline's stdout closed: every process of it ended";
}

TEST(SubprocessTest, LinesWithoutFinalNewlineAndSignals) {
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> got;
  Status s = runCommand(
      "cat; printf 'last'", {"X=1"},
      [](const WriteInput& w) {
        w("one\ntwo\n");
        return Status::OK();
      },
      [&](std::string_view l) {
        got.emplace_back(l);
        return Status::OK();
      });
  EXPECT_TRUE(s.ok()) << s.toString();
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "last"}));
  s = runCommand(
      "kill -9 $$", {}, [](const WriteInput&) { return Status::OK(); },
      [](std::string_view) { return Status::OK(); });
  EXPECT_NE(s.message().find("killed by signal 9"), std::string::npos) << s.toString();
  s = runCommand(
      "echo $X", {"X=hello"}, [](const WriteInput&) { return Status::OK(); },
      [&](std::string_view l) {
        EXPECT_EQ(l, "hello");
        return Status::OK();
      });
  EXPECT_TRUE(s.ok());
}

}  // namespace
}  // namespace cairn::mapreduce
