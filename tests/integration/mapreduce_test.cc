// MapReduce on a real cluster: a master, chunkservers on 127.0.0.2.., a coordinator and a
// worker named as each chunkserver's host, all separate processes. Outputs are compared
// with a plain single-process pass over the same local files.

#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "cluster.h"
#include "partition.h"
#include "record_io.h"

namespace cairn::testing {
namespace {

constexpr uint64_t CHUNK = 1 << 20;

// Text with lines of very different lengths, so that many lines cross chunk boundaries;
// some lines are longer than a chunk.
std::string generateText(size_t bytes, uint64_t seed, bool finalNewline) {
  static const char* words[] = {"cairn", "chunk", "Master", "replica", "lease",  "stone",
                                "river", "hill",  "a",      "zebra",   "Quartz", "MapReduce",
                                "x",     "yy",    "hello",  "world",   "it's",   "e-mail"};
  std::mt19937_64 rng(seed);
  std::string out;
  while (out.size() < bytes) {
    size_t n = rng() % 100 == 0 ? 250000 : rng() % 20;  // now and then a very long line
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) out += (rng() % 7 == 0) ? ", " : " ";
      out += words[rng() % (sizeof(words) / sizeof(words[0]))];
      if (rng() % 50 == 0) out += std::to_string(rng() % 1000);
    }
    out += '\n';
  }
  if (!finalNewline) {
    while (!out.empty() && out.back() == '\n') out.pop_back();
    out += " tail words without newline";
  }
  return out;
}

struct Input {
  std::string path;  // in Cairn
  std::string text;
};

bool isLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

template <typename F>
void eachWord(const std::string& text, F&& f) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !isLetter(text[i])) ++i;
    size_t s = i;
    while (i < text.size() && isLetter(text[i])) ++i;
    if (i > s) f(text.substr(s, i - s));
  }
}

std::vector<std::string> expectedWordCount(const std::vector<Input>& inputs) {
  std::map<std::string, uint64_t> counts;
  for (auto& in : inputs) eachWord(in.text, [&](const std::string& w) { ++counts[w]; });
  std::vector<std::string> lines;
  for (auto& [w, n] : counts) lines.push_back(w + "\t" + std::to_string(n));
  return lines;
}

std::vector<std::string> expectedIndex(const std::vector<Input>& inputs) {
  std::map<std::string, std::set<std::string>> where;
  for (auto& in : inputs)
    eachWord(in.text, [&](const std::string& w) { where[w].insert(in.path); });
  std::vector<std::string> lines;
  for (auto& [w, paths] : where) {
    std::string joined;
    for (auto& p : paths) joined += (joined.empty() ? "" : ",") + p;
    lines.push_back(w + "\t" + std::to_string(paths.size()) + "\t" + joined);
  }
  return lines;
}

std::vector<std::string> expectedGrep(const std::vector<Input>& inputs, const std::string& re) {
  std::regex pattern(re, std::regex::ECMAScript);
  std::vector<std::string> lines;
  for (auto& in : inputs) {
    size_t pos = 0;
    while (pos < in.text.size()) {
      size_t nl = in.text.find('\n', pos);
      size_t end = nl == std::string::npos ? in.text.size() : nl;
      std::string line = in.text.substr(pos, end - pos);
      if (std::regex_search(line, pattern)) {
        lines.push_back(in.path + ":" + std::to_string(pos) + "\t" + line);
      }
      pos = end + 1;
    }
  }
  return lines;
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class MapReduceTest : public ::testing::Test {
 protected:
  ~MapReduceTest() noexcept override {}

  void startCluster(size_t chunkservers) {
    cluster = std::make_unique<ProcessCluster>(CHUNK);
    cluster->startMaster();
    for (size_t i = 0; i < chunkservers; ++i) cluster->startChunkserver(i);
    cluster->waitForLiveChunkservers(chunkservers);
    coordinator =
        cluster->startDaemon("coordinator",
                             {ProcessCluster::binary("cairn-mapreduce"), "coordinator", "--master",
                              cluster->masterAddress(), "--listen", "127.0.0.1:0", "--port-file",
                              cluster->dir() + "/coordinator.port", "--http", "127.0.0.1:0",
                              "--http-port-file", cluster->dir() + "/coordinator.http"},
                             cluster->dir() + "/coordinator.port");
    ASSERT_FALSE(coordinator.empty());
  }

  // Worker i beside chunkserver i (named as its host).
  void startWorker(size_t i, uint32_t slots = 1) {
    std::string name = "worker" + std::to_string(i);
    std::string port = cluster->dir() + "/" + name + ".port";
    std::string address = cluster->startDaemon(
        name,
        {ProcessCluster::binary("cairn-mapreduce"), "worker", "--coordinator", coordinator,
         "--scratch", cluster->dir() + "/" + name, "--host", "127.0.0." + std::to_string(i + 2),
         "--slots", std::to_string(slots), "--port-file", port},
        port);
    ASSERT_FALSE(address.empty()) << name << " did not join";
  }

  // Several files in /in (one empty, one with no final newline) and one more file given on
  // its own; returns them all.
  std::vector<Input> putInputs() {
    std::vector<Input> inputs = {{"/in/a.txt", generateText(2600000, 1, true)},
                                 {"/in/b.txt", generateText(1300000, 2, true)},
                                 {"/in/sub/c.txt", generateText(700000, 3, false)},
                                 {"/in/empty.txt", ""},
                                 {"/more.txt", generateText(1100000, 4, true)}};
    EXPECT_EQ(cluster->cli({"mkdir", "-p", "/in/sub"}), 0);
    for (auto& in : inputs) cluster->put(in.text, in.path);
    return inputs;
  }

  int runJob(const std::vector<std::string>& args, std::string* out, std::string* err) {
    std::vector<std::string> argv = {ProcessCluster::binary("cairn-mapreduce"), "run",
                                     "--coordinator", coordinator};
    argv.insert(argv.end(), args.begin(), args.end());
    return cluster->run(argv, out, err);
  }

  nlohmann::json runJson(const std::vector<std::string>& args) {
    std::string out, err;
    std::vector<std::string> all = args;
    all.push_back("--json");
    int rc = runJob(all, &out, &err);
    EXPECT_EQ(rc, 0) << err << out;
    try {
      return nlohmann::json::parse(out);
    } catch (const std::exception&) {
      ADD_FAILURE() << "not JSON: " << out << err;
      return {};
    }
  }

  // The job's output lines (all part files), after checking the directory's shape.
  std::vector<std::string> output(const std::string& dir, uint32_t reducers,
                                  bool checkPartitions = false) {
    std::string listing;
    EXPECT_EQ(cluster->cli({"ls", dir}, &listing), 0);
    std::vector<std::string> want = {"_SUCCESS"};
    for (uint32_t r = 0; r < reducers; ++r) {
      char name[32];
      snprintf(name, sizeof(name), "part-%05u", r);
      want.push_back(name);
    }
    EXPECT_EQ(sorted(splitLines(listing)), want) << "output directory " << dir;
    std::vector<std::string> lines;
    for (uint32_t r = 0; r < reducers; ++r) {
      std::string text, err;
      EXPECT_EQ(cluster->cli({"cat", dir + "/" + want[r + 1]}, &text, &err), 0) << err;
      for (auto& l : splitLines(text)) {
        if (checkPartitions) {
          std::string key = l.substr(0, l.find('\t'));
          EXPECT_EQ(mapreduce::partitionOf(key, reducers), r) << key << " in " << want[r + 1];
        }
        lines.push_back(l);
      }
    }
    return sorted(lines);
  }

  // The coordinator's view of job `id` (or of the only job).
  nlohmann::json jobState() {
    std::string out;
    cluster->run(
        {ProcessCluster::binary("cairn-mapreduce"), "jobs", "--coordinator", coordinator, "--json"},
        &out);
    try {
      auto all = nlohmann::json::parse(out);
      return all.empty() ? nlohmann::json() : all.back();
    } catch (const std::exception&) {
      return {};
    }
  }

  // Runs `args` in the background; calls `when` with each progress report until it returns
  // true; returns the job's JSON report.
  nlohmann::json runWhile(const std::vector<std::string>& args,
                          const std::function<bool(const nlohmann::json&)>& when) {
    std::string out, err;
    int rc = -1;
    std::thread job([&]() {
      std::vector<std::string> all = args;
      all.push_back("--json");
      rc = runJob(all, &out, &err);
    });
    bool fired = false;
    for (int i = 0; i < 600 && !fired; ++i) {
      auto state = jobState();
      if (!state.is_null() && state["state"] == "running") fired = when(state);
      if (!state.is_null() && state["state"] != "running") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    job.join();
    EXPECT_TRUE(fired) << "the job never reached the state the test waits for";
    EXPECT_EQ(rc, 0) << err << out;
    try {
      return nlohmann::json::parse(out);
    } catch (const std::exception&) {
      ADD_FAILURE() << "not JSON: " << out << err;
      return {};
    }
  }

  std::unique_ptr<ProcessCluster> cluster;
  std::string coordinator;
};

// Streaming word count: letters only, as the built-in job counts them.
const std::string MAPPER = "LC_ALL=C tr -cs 'A-Za-z' '\\n' | awk 'NF { print $0 \"\\t1\" }'";
const std::string REDUCER =
    "awk -F'\\t' '{ c[$1] += $2 } END { for (w in c) print w \"\\t\" c[w] }'";

TEST_F(MapReduceTest, BuiltInJobsMatchASingleProcessPass) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i, 2);
  auto inputs = putInputs();

  auto wc = runJson({"--input", "/in", "--input", "/more.txt", "--output", "/out/wc", "--reducers",
                     "3", "--job", "wordcount"});
  EXPECT_EQ(output("/out/wc", 3, true), sorted(expectedWordCount(inputs)));
  // One map per chunk; the empty file has none.
  uint64_t chunks = 0;
  for (auto& in : inputs) chunks += (in.text.size() + CHUNK - 1) / CHUNK;
  EXPECT_EQ(wc["map_tasks"], chunks);
  EXPECT_EQ(wc["input_files"], 5);
  EXPECT_EQ(wc["reduce_tasks"], 3);
  EXPECT_GE(wc["bytes_read"].get<uint64_t>(), 2600000u + 1300000 + 700000 + 1100000);
  EXPECT_GT(wc["bytes_written"].get<uint64_t>(), 0u);

  // Paths as users type them: relative (from the root) and with trailing slashes.
  runJson({"--input", "in/", "--input", "//more.txt", "--output", "/out/index/", "--reducers", "2",
           "--job", "index"});
  EXPECT_EQ(output("/out/index", 2), sorted(expectedIndex(inputs)));

  std::string re = "(Quartz|zebra)[0-9]+";
  runJson({"--input", "/in", "--input", "/more.txt", "--output", "/out/grep", "--reducers", "1",
           "--job", "grep", "--pattern", re});
  auto grep = output("/out/grep", 1);
  EXPECT_FALSE(grep.empty());
  EXPECT_EQ(grep, sorted(expectedGrep(inputs, re)));

  // An input directory holding earlier output: `_SUCCESS` and `_temporary` are skipped.
  runJson({"--input", "/out/wc", "--output", "/out/wc2", "--job", "wordcount"});
  auto twice = output("/out/wc2", 1);
  EXPECT_FALSE(twice.empty());
}

TEST_F(MapReduceTest, StreamingJobsAndTheirFailures) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();

  runJson({"--input", "/in", "--input", "/more.txt", "--output", "/out/s", "--reducers", "2",
           "--mapper", MAPPER, "--reducer", REDUCER});
  EXPECT_EQ(output("/out/s", 2, true), sorted(expectedWordCount(inputs)));

  // A mapper that exits 1 fails the job with its message, after --max-attempts tries.
  std::string out, err;
  int rc =
      runJob({"--input", "/in", "--output", "/out/bad", "--mapper",
              "echo 'cannot parse record' >&2; exit 1", "--reducer", "cat", "--max-attempts", "2"},
             &out, &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("failed 2 times"), std::string::npos) << err;
  EXPECT_NE(err.find("exited with status 1: cannot parse record"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
  // A failed job leaves no output behind.
  EXPECT_NE(cluster->cli({"stat", "/out/bad"}), 0);

  // Refused before any task runs: a missing input, an existing output, an empty input set.
  rc = runJob({"--input", "/nope", "--output", "/out/x", "--job", "wordcount"}, &out, &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("/nope"), std::string::npos) << err;
  rc = runJob({"--input", "/in", "--output", "/out/s", "--job", "wordcount"}, &out, &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("/out/s exists"), std::string::npos) << err;
  ASSERT_EQ(cluster->cli({"mkdir", "/nothing"}), 0);
  rc = runJob({"--input", "/nothing", "--output", "/out/y", "--job", "wordcount"}, &out, &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("no input files"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"stat", "/out/x"}), 0);
  EXPECT_NE(cluster->cli({"stat", "/out/y"}), 0);
  // A coordinator whose master does not answer refuses the job, naming the master.
  std::string lonely = cluster->startDaemon(
      "lonely",
      {ProcessCluster::binary("cairn-mapreduce"), "coordinator", "--master", "127.0.0.1:1",
       "--listen", "127.0.0.1:0", "--port-file", cluster->dir() + "/lonely.port", "--http", "none"},
      cluster->dir() + "/lonely.port");
  rc = cluster->run({ProcessCluster::binary("cairn-mapreduce"), "run", "--coordinator", lonely,
                     "--input", "/in", "--output", "/out/z", "--job", "wordcount"},
                    &out, &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("master at 127.0.0.1:1"), std::string::npos) << err;
  std::string jobs;
  cluster->run(
      {ProcessCluster::binary("cairn-mapreduce"), "jobs", "--coordinator", coordinator, "--json"},
      &jobs);
  EXPECT_EQ(nlohmann::json::parse(jobs).size(), 2u) << "refused jobs never ran: " << jobs;
}

TEST_F(MapReduceTest, EveryMapIsDataLocalWithAWorkerBesideEachChunkserver) {
  startCluster(4);
  // Free slots: every chunk's three hosts together have more slots than there are maps.
  for (size_t i = 0; i < 4; ++i) startWorker(i, 4);
  std::vector<Input> inputs = {{"/local/a.txt", generateText(6000000, 7, true)},
                               {"/local/b.txt", generateText(3000000, 8, true)}};
  ASSERT_EQ(cluster->cli({"mkdir", "/local"}), 0);
  for (auto& in : inputs) cluster->put(in.text, in.path, {"-r", "3"});
  auto report =
      runJson({"--input", "/local", "--output", "/out", "--reducers", "4", "--job", "wordcount"});
  // 6 + 3 chunks: fewer maps than the 12 slots of any chunk's three hosts, so a free worker
  // beside a replica always exists and no map has to go elsewhere.
  EXPECT_EQ(report["map_tasks"], 9);
  EXPECT_EQ(report["data_local_maps"], report["map_tasks"]);
  EXPECT_EQ(output("/out", 4), sorted(expectedWordCount(inputs)));

  // Without locality, placement ignores replicas: at goal 1 on 4 hosts most maps read a
  // remote replica; the output is the same.
  std::vector<Input> one = {{"/one/a.txt", generateText(8000000, 9, true)}};
  ASSERT_EQ(cluster->cli({"mkdir", "/one"}), 0);
  cluster->put(one[0].text, one[0].path, {"-r", "1"});
  auto anywhere =
      runJson({"--input", "/one", "--output", "/out2", "--job", "wordcount", "--no-locality"});
  EXPECT_LT(anywhere["data_local_maps"].get<int>(), anywhere["map_tasks"].get<int>());
  EXPECT_EQ(output("/out2", 1), sorted(expectedWordCount(one)));
}

TEST_F(MapReduceTest, AStragglerGetsABackupAttempt) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();
  // The first map to take the lock sleeps 30 s; every other attempt (its backup too) is
  // quick, so the job ends long before the straggler would.
  std::string lock = cluster->dir() + "/slow";
  std::string mapper = "if mkdir " + lock + " 2>/dev/null; then echo $$ >" + lock +
                       "/pgid; sleep 30; touch " + lock + "/done; fi; " + MAPPER;
  auto report = runJson({"--input", "/in", "--input", "/more.txt", "--output", "/out", "--reducers",
                         "2", "--mapper", mapper, "--reducer", REDUCER});
  EXPECT_EQ(report["state"], "succeeded");
  EXPECT_GE(report["backup_attempts"].get<int>(), 1);
  EXPECT_LT(report["wall_seconds"].get<double>(), 25) << "the backup's result counted";
  EXPECT_EQ(output("/out", 2), sorted(expectedWordCount(inputs)));
  // Once the job has ended, its worker stops the losing attempt: the straggler's process
  // group goes away without finishing its sleep.
  pid_t group = std::stoi(readFile(lock + "/pgid"));
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    gone = kill(-group, 0) != 0 && errno == ESRCH;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(gone) << "the straggler still runs";
  EXPECT_FALSE(std::filesystem::exists(lock + "/done"));
}

TEST_F(MapReduceTest, AKilledJobStopsItsTasksAndLeavesNoOutput) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  putInputs();
  // Each map marks that it started, then sleeps.
  std::string marks = cluster->dir() + "/started";
  std::filesystem::create_directories(marks);
  std::string out, err;
  int rc = 0;
  std::thread job([&]() {
    rc = runJob({"--input", "/in", "--output", "/out/slow", "--mapper",
                 "touch " + marks + "/$$; sleep 60; cat", "--reducer", "cat"},
                &out, &err);
  });
  // Wait until every worker's slot runs a sleeping map.
  auto count = [&]() {
    auto it = std::filesystem::directory_iterator(marks);
    return std::distance(begin(it), end(it));
  };
  for (int i = 0; i < 200 && count() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(count(), 3);
  nlohmann::json state = jobState();
  std::string killed;
  EXPECT_EQ(cluster->run({ProcessCluster::binary("cairn-mapreduce"), "kill", "--coordinator",
                          coordinator, std::to_string(state["job"].get<int>())},
                         &killed),
            0);
  job.join();
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("killed on request"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"stat", "/out/slow"}), 0) << "a killed job leaves no output";
  // The workers stop the killed maps (their commands die), so the next job gets the slots
  // long before the 60 s sleeps would end.
  auto started = std::chrono::steady_clock::now();
  auto next = runJson({"--input", "/in", "--output", "/out/next", "--job", "wordcount"});
  EXPECT_EQ(next["state"], "succeeded");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
}

TEST_F(MapReduceTest, AWorkerKilledInTheMapPhase) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();
  // Slow maps, so that the kill lands while maps run and some are done.
  auto report =
      runWhile({"--input", "/in", "--input", "/more.txt", "--output", "/out", "--reducers", "2",
                "--mapper", "sleep 0.7; " + MAPPER, "--reducer", REDUCER, "--task-timeout", "5"},
               [&](const nlohmann::json& s) {
                 int done = s["maps_done"].get<int>();
                 if (done < 2 || done >= s["map_tasks"].get<int>()) return false;
                 cluster->killDaemon("worker1", SIGKILL);
                 return true;
               });
  EXPECT_EQ(report["state"], "succeeded");
  EXPECT_GE(report["failed_attempts"].get<int>(), 1);
  EXPECT_EQ(output("/out", 2), sorted(expectedWordCount(inputs)));
}

TEST_F(MapReduceTest, AWorkerKilledInTheReducePhase) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();
  // Slow reduces: every map is done, reduces are running, and the killed worker holds map
  // output that reduces still have to fetch.
  auto report =
      runWhile({"--input", "/in", "--input", "/more.txt", "--output", "/out", "--reducers", "6",
                "--mapper", MAPPER, "--reducer", "sleep 1; " + REDUCER, "--task-timeout", "5"},
               [&](const nlohmann::json& s) {
                 if (s["maps_done"] != s["map_tasks"] || s["reduces_done"] == 0) {
                   return false;
                 }
                 cluster->killDaemon("worker2", SIGKILL);
                 return true;
               });
  EXPECT_EQ(report["state"], "succeeded");
  EXPECT_EQ(output("/out", 6, true), sorted(expectedWordCount(inputs)));
}

TEST_F(MapReduceTest, AppendedOutputHoldsEachLineOnceThoughAReduceRanTwice) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();
  // Every reduce appends to one file. Each writes its word counts and 60,000 lines of its
  // own; the first attempt of reduce 0 then sleeps 15 s, after it appended most of its
  // output, so that a backup attempt runs and appends all of it again.
  std::string lock = cluster->dir() + "/slow";
  std::string reducer = REDUCER + "; seq 1 60000 | sed \"s/^/pad $CAIRN_PARTITION /\"; " +
                        "if [ \"$CAIRN_PARTITION\" = 0 ] && mkdir " + lock +
                        " 2>/dev/null; then sleep 15; fi";
  auto report = runJson({"--input", "/in", "--input", "/more.txt", "--output", "/out", "--reducers",
                         "2", "--append-output", "--mapper", MAPPER, "--reducer", reducer});
  EXPECT_EQ(report["state"], "succeeded");
  EXPECT_GE(report["backup_attempts"].get<int>(), 1);
  std::string listing;
  EXPECT_EQ(cluster->cli({"ls", "/out"}, &listing), 0);
  EXPECT_EQ(sorted(splitLines(listing)), (std::vector<std::string>{"_SUCCESS", "records"}));
  auto want = expectedWordCount(inputs);
  for (int r = 0; r < 2; ++r) {
    for (int i = 1; i <= 60000; ++i)
      want.push_back("pad " + std::to_string(r) + " " + std::to_string(i));
  }
  std::string text, err;
  EXPECT_EQ(cluster->cli({"cat", "--records", "/out/records"}, &text, &err), 0) << err;
  EXPECT_EQ(sorted(splitLines(text)), sorted(want));
  // The file holds more than those records once: the attempt that lost appended too.
  uint64_t once = 0;
  for (auto& line : want) once += RECORD_HEADER + line.size() + 1;
  std::string stat;
  EXPECT_EQ(cluster->cli({"stat", "--json", "/out/records"}, &stat), 0);
  EXPECT_GT(nlohmann::json::parse(stat)["size"].get<uint64_t>(), once);
}

TEST_F(MapReduceTest, AStoppedWorkerIsDeclaredLostAfterTheTaskTimeout) {
  startCluster(3);
  for (size_t i = 0; i < 3; ++i) startWorker(i);
  auto inputs = putInputs();
  pid_t stopped = 0;
  auto report =
      runWhile({"--input", "/in", "--input", "/more.txt", "--output", "/out", "--reducers", "2",
                "--mapper", "sleep 0.5; " + MAPPER, "--reducer", REDUCER, "--task-timeout", "3"},
               [&](const nlohmann::json& s) {
                 if (s["maps_done"].get<int>() < 1) return false;
                 stopped = cluster->daemonPid("worker0");
                 kill(stopped, SIGSTOP);
                 return true;
               });
  if (stopped > 0) kill(stopped, SIGCONT);
  EXPECT_EQ(report["state"], "succeeded");
  EXPECT_EQ(output("/out", 2), sorted(expectedWordCount(inputs)));
}

}  // namespace
}  // namespace cairn::testing
