// What an operator reaches for, on a real cluster: the status pages and /metrics (checked
// by promtool, scraped by a real Prometheus, rendered by a real browser), `cairn fsck`,
// `cairn admin report`, safe mode, `df` and `du`, and plain manners on a closed pipe.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "chunk_store.h"
#include "cluster.h"
#include "fixture.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::randomBytes;
using testing::readFile;
using testing::writeFile;

constexpr uint64_t MIB = 1 << 20;

class OperatorTest : public testing::ClusterFixture {
 protected:
  // A free TCP port on 127.0.0.1 (for daemons that cannot write the port they bound).
  static int freePort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
  }
};

TEST_F(OperatorTest, TheStatusPageAndMetricsFollowAChunkserversDeathAndRepair) {
  start(4);
  ASSERT_EQ(cluster->cli({"mkdir", "/data"}), 0);
  for (int f = 0; f < 3; ++f) {
    cluster->put(randomBytes(3 * MIB, f), "/data/secretname" + std::to_string(f));
  }
  ASSERT_TRUE(waitFor(20, [&]() { return healthy(); }));

  std::string page = cluster->fetch(cluster->masterHttp(), "/");
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NE(page.find("<td>" + cluster->chunkserverAddress(i) + "</td>"), std::string::npos)
        << page;
  }
  EXPECT_EQ(page.find("secretname"), std::string::npos) << "no file names on the page";
  EXPECT_NE(page.find("http-equiv=\"refresh\""), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);

  std::string metrics = cluster->fetch(cluster->masterHttp(), "/metrics");
  EXPECT_EQ(ProcessCluster::sample(metrics, "cairn_chunkservers{state=\"live\"}"), 4) << metrics;
  EXPECT_GT(ProcessCluster::sample(metrics,
                                   "cairn_master_requests_total{method=\"create\",result=\"ok\"}"),
            0);
  EXPECT_EQ(ProcessCluster::sample(metrics, "cairn_chunks{state=\"under_replicated\"}"), 0);
  // promtool reads the exposition format as Prometheus does.
  std::string file = local("metrics.txt");
  writeFile(file, metrics);
  std::string out, err;
  EXPECT_EQ(cluster->run({"/bin/sh", "-c", "promtool check metrics < " + file}, &out, &err), 0)
      << out << err;
  std::string http = readFile(cluster->dir() + "/cs0.http");
  std::string csMetrics = cluster->fetch(http.substr(0, http.find('\n')), "/metrics");
  EXPECT_GT(ProcessCluster::sample(csMetrics, "cairn_chunkserver_stored_chunks"), 0) << csMetrics;
  writeFile(file, csMetrics);
  EXPECT_EQ(cluster->run({"/bin/sh", "-c", "promtool check metrics < " + file}, &out, &err), 0)
      << out << err;

  // A chunkserver dies: the page says so, the under-replicated count rises, and falls back
  // to 0 once the others have copied its chunks.
  std::string victim = cluster->chunkserverAddress(1);
  cluster->killChunkserver(1);
  std::regex dead("<td>" + std::regex_replace(victim, std::regex("\\."), "\\.") +
                  "</td><td>[^<]*</td><td class=\"dead\">dead</td>");
  EXPECT_TRUE(waitFor(15, [&]() {
    return std::regex_search(cluster->fetch(cluster->masterHttp(), "/"), dead);
  })) << cluster->fetch(cluster->masterHttp(), "/");
  bool rose = false;
  EXPECT_TRUE(waitFor(60, [&]() {
    auto m = cluster->fetch(cluster->masterHttp(), "/metrics");
    double under = ProcessCluster::sample(m, "cairn_chunks{state=\"under_replicated\"}");
    rose = rose || under > 0 ||
           ProcessCluster::sample(m, "cairn_chunk_copies_total{result=\"ok\"}") > 0;
    return rose && under == 0 && ProcessCluster::sample(m, "cairn_chunk_copies_in_flight") == 0;
  })) << cluster->fetch(cluster->masterHttp(), "/metrics");
  EXPECT_TRUE(rose);
  EXPECT_NE(cluster->fetch(cluster->masterHttp(), "/").find(victim + " is dead"), std::string::npos)
      << "the death is among the recent events";
  std::string code;
  cluster->run({"/usr/bin/curl", "-sk", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                "https://" + cluster->masterHttp() + "/nope"},
               &code, &err);
  EXPECT_EQ(code, "404") << err;
  EXPECT_NE(cluster->fetch(cluster->masterHttp(), "/").find("Cairn master"), std::string::npos);
}

TEST_F(OperatorTest, PrometheusScrapesTheMasterAndCountsLiveChunkservers) {
  if (access("/usr/bin/prometheus", X_OK) != 0) GTEST_SKIP() << "prometheus is not installed";
  start(3);
  int port = freePort();
  std::string config = local("prometheus.yml");
  writeFile(config,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: cairn-master\n    scheme: https\n"
            "    tls_config:\n      insecure_skip_verify: true\n"
            "    static_configs:\n      - targets: ['" +
                cluster->masterHttp() + "']\n");
  std::string data = local("prometheus-data");
  std::string address = "127.0.0.1:" + std::to_string(port);
  cluster->startDaemon("prometheus",
                       {"/usr/bin/prometheus", "--config.file=" + config,
                        "--storage.tsdb.path=" + data, "--web.listen-address=" + address},
                       "");
  double live = -1;
  std::string last;
  EXPECT_TRUE(waitFor(60, [&]() {
    std::string out, err;
    cluster->run(
        {"/usr/bin/curl", "-sS", "--max-time", "5", "-G", "http://" + address + "/api/v1/query",
         "--data-urlencode", "query=cairn_chunkservers{state=\"live\"}"},
        &out, &err);
    last = out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    if (j.is_discarded() || j["status"] != "success" || j["data"]["result"].empty()) return false;
    live = std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
    return live == 3;
  })) << last;
  EXPECT_EQ(live, 3);
}

TEST_F(OperatorTest, AHeadlessBrowserRendersTheStatusPage) {
  std::string chromium;
  for (auto c : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (access(c, X_OK) == 0) chromium = c;
  }
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed";
  start(3);
  cluster->put(randomBytes(2 * MIB, 3), "/f");
  std::string url = "https://" + cluster->masterHttp() + "/";
  std::vector<std::string> common = {chromium,
                                     "--headless",
                                     "--no-sandbox",
                                     "--disable-gpu",
                                     "--disable-dev-shm-usage",
                                     "--ignore-certificate-errors",
                                     "--user-data-dir=" + local("chromium-profile"),
                                     "--window-size=1100,900"};
  // The DOM as the browser built it: the tables are there, one row per chunkserver.
  std::vector<std::string> dump = common;
  dump.push_back("--dump-dom");
  dump.push_back(url);
  std::string dom, err;
  ASSERT_EQ(cluster->run(dump, &dom, &err), 0) << err;
  EXPECT_NE(dom.find("<table id=\"summary\">"), std::string::npos) << dom;
  size_t rows = 0;
  for (size_t at = 0; (at = dom.find("<tr class=\"server\">", at)) != std::string::npos; ++at) {
    ++rows;
  }
  EXPECT_EQ(rows, 3u) << dom;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NE(dom.find(cluster->chunkserverAddress(i)), std::string::npos);
  }
  // A screenshot, kept beside the test binary (CAIRN_SCREENSHOT names another place).
  const char* keep = getenv("CAIRN_SCREENSHOT");
  std::string shot = keep ? keep
                          : std::filesystem::read_symlink("/proc/self/exe").parent_path().string() +
                                "/status-page.png";
  std::vector<std::string> snap = common;
  snap.push_back("--screenshot=" + shot);
  snap.push_back("--hide-scrollbars");
  snap.push_back(url);
  std::string out;
  ASSERT_EQ(cluster->run(snap, &out, &err), 0) << err;
  std::string png = readFile(shot);
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  RecordProperty("screenshot", shot);
}

TEST_F(OperatorTest, FsckNamesAFileWhoseOnlyReplicaIsCorrupt) {
  start(3);
  std::string data = randomBytes(MIB, 5);
  cluster->put(data, "/lonely", {"-r", "1"});
  cluster->put(randomBytes(MIB, 6), "/fine");
  std::string out, err;
  EXPECT_EQ(cluster->cli({"fsck", "/"}, &out, &err), 0) << out << err;
  EXPECT_NE(out.find("is HEALTHY"), std::string::npos) << out;

  auto l = json({"locate", "--json", "/lonely"});
  std::string handle = l["chunks"][0]["handle"];
  size_t holder = indexOf(l["chunks"][0]["replicas"][0]["address"]);
  std::string path = chunkFile(holder, handle);
  {
    int fd = open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char b;
    ASSERT_EQ(pread(fd, &b, 1, CHUNK_DATA_OFFSET + 1234), 1);
    b ^= 0x40;
    ASSERT_EQ(pwrite(fd, &b, 1, CHUNK_DATA_OFFSET + 1234), 1);
    close(fd);
  }
  // The scrubber (every 0.2 s here) finds it; the master keeps the last copy, as corrupt.
  nlohmann::json report;
  EXPECT_TRUE(waitFor(30, [&]() {
    report = json({"fsck", "--json", "/"});
    // fsck exits 1 on a corrupt file system; json() gives null then.
    if (!report.is_null()) return false;
    std::string o, e;
    cluster->cli({"fsck", "--json", "/"}, &o, &e);
    report = nlohmann::json::parse(o, nullptr, false);
    return !report.is_discarded() && report["corrupt"] == 1;
  })) << report.dump();
  ASSERT_FALSE(report.is_discarded());
  EXPECT_EQ(report["status"], "CORRUPT");
  ASSERT_EQ(report["problems"].size(), 1u) << report.dump();
  EXPECT_EQ(report["problems"][0]["path"], "/lonely");
  EXPECT_EQ(report["problems"][0]["verdict"], "corrupt");
  EXPECT_EQ(report["problems"][0]["replicas"][0]["state"], "corrupt");
  EXPECT_EQ(cluster->cli({"fsck", "/"}, &out, &err), 1);
  EXPECT_NE(out.find("/lonely: chunk 0"), std::string::npos) << out;
  EXPECT_NE(out.find("is CORRUPT"), std::string::npos) << out;
  EXPECT_EQ(out.find("/fine"), std::string::npos) << out;

  auto r = json({"admin", "report", "--json"});
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["live_chunkservers"], 3);
  EXPECT_EQ(r["chunkservers"].size(), 3u);
  EXPECT_EQ(r["corrupt"], 1);
  EXPECT_GT(r["capacity"].get<uint64_t>(), 0u);
  for (auto& s : r["chunkservers"]) EXPECT_EQ(s["state"], "live");
}

TEST_F(OperatorTest, FsckChecksEveryChunkOfASparseFileInPages) {
  start(3);
  // Chunks 0, 5000 (past the master's 4096 per call) and 8000 (past the end of the file,
  // as fallocate with KEEP_SIZE leaves it), with holes between.
  std::string mnt = cluster->mount();
  int fd = open((mnt + "/sparse").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "a", 1, 0), 1);
  ASSERT_EQ(pwrite(fd, "b", 1, 5000 * MIB), 1);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 8000 * MIB, 4096), 0);
  ASSERT_EQ(close(fd), 0);
  cluster->unmount(mnt);
  auto report = json({"fsck", "--json", "/sparse"});
  ASSERT_FALSE(report.is_null());
  EXPECT_EQ(report["files"], 1);
  EXPECT_EQ(report["chunks"], 3) << report.dump();
  EXPECT_EQ(report["healthy"], 3) << report.dump();
}

TEST_F(OperatorTest, SafeModeByAnAdminMakesTheClusterReadOnlyUntilLeft) {
  start(3);
  std::string data = randomBytes(MIB + 7, 9);
  cluster->put(data, "/kept");
  std::string out, err;
  ASSERT_EQ(cluster->cli({"admin", "safemode", "enter"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("read only"), std::string::npos) << out;
  EXPECT_NE(cluster->cli({"mkdir", "/new"}, &out, &err), 0);
  EXPECT_NE(err.find("Read-only file system"), std::string::npos) << err;
  writeFile(local("x"), "x");
  EXPECT_NE(cluster->cli({"put", local("x"), "/x"}, &out, &err), 0);
  EXPECT_NE(err.find("Read-only file system"), std::string::npos) << err;
  EXPECT_NE(cluster->cli({"rm", "/kept"}, &out, &err), 0);
  EXPECT_TRUE(cluster->get("/kept") == data) << "reads go on";
  // Through a mount: EROFS, at once.
  std::string mnt = cluster->mount();
  errno = 0;
  EXPECT_LT(::mkdir((mnt + "/d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(readFile(mnt + "/kept"), data);
  // Only an admin enters or leaves it.
  std::string alice = cluster->certificates().issue(Role::USER, "alice", {}, 1000, {1000});
  EXPECT_NE(
      cluster->run({"/usr/bin/env", "CAIRN_CREDENTIALS=" + alice, ProcessCluster::binary("cairn"),
                    "--master", cluster->masterAddress(), "admin", "safemode", "leave"},
                   &out, &err),
      0);
  EXPECT_NE(err.find("Operation not permitted"), std::string::npos) << err;
  auto state = json({"admin", "safemode", "get", "--json"});
  EXPECT_EQ(state["safe_mode"], true);
  EXPECT_EQ(state["manual"], true);
  ASSERT_EQ(cluster->cli({"admin", "safemode", "leave"}, &out, &err), 0) << err;
  EXPECT_EQ(cluster->cli({"mkdir", "/new"}, &out, &err), 0) << err;
  EXPECT_EQ(::mkdir((mnt + "/d").c_str(), 0755), 0);
  cluster->unmount(mnt);
}

TEST_F(OperatorTest, DfDuAndAClosedPipe) {
  start(3);
  ASSERT_EQ(cluster->cli({"mkdir", "-p", "/a/b"}), 0);
  cluster->put(randomBytes(3 * MIB, 1), "/a/one");
  cluster->put(randomBytes(MIB, 2), "/a/b/two", {"-r", "2"});
  cluster->put(randomBytes(2 * MIB, 3), "/c");
  auto du = json({"du", "--json", "/"});
  ASSERT_FALSE(du.is_null());
  ASSERT_EQ(du.size(), 2u) << du.dump();
  EXPECT_EQ(du[0]["path"], "/a");
  EXPECT_EQ(du[0]["bytes"], 4 * MIB);
  EXPECT_EQ(du[0]["with_replicas"], 3 * 3 * MIB + 2 * MIB);
  EXPECT_EQ(du[1]["path"], "/c");
  auto sum = json({"du", "-s", "--json", "/"});
  EXPECT_EQ(sum[0]["bytes"], 6 * MIB);
  auto df = json({"df", "--json"});
  ASSERT_FALSE(df.is_null());
  EXPECT_GT(df["size"].get<uint64_t>(), 0u);
  EXPECT_GE(df["files"].get<uint64_t>(), 5u);

  // `cairn ... | head` ends quietly when head has read enough: no message, SIGPIPE's status.
  std::string mnt = cluster->mount();
  ASSERT_EQ(::mkdir((mnt + "/many").c_str(), 0755), 0);
  for (int i = 0; i < 1500; ++i) {
    int fd = open((mnt + "/many/" + std::string(120, 'n') + std::to_string(i)).c_str(),
                  O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    close(fd);
  }
  cluster->unmount(mnt);
  std::string cli = ProcessCluster::binary("cairn") + " --master " + cluster->masterAddress();
  for (std::string command : {"ls -l /many", "cat /a/one"}) {
    std::string out, err;
    ASSERT_EQ(
        cluster->run({"/bin/bash", "-c",
                      cli + " " + command + " | head -c 100 >/dev/null; echo ${PIPESTATUS[0]}"},
                     &out, &err),
        0);
    EXPECT_EQ(out, "141\n") << command;
    EXPECT_EQ(err, "") << command;
  }
  std::string out, err;
  EXPECT_NE(cluster->cli({"cat", "/nope"}, &out, &err), 0);
  EXPECT_EQ(err, "cairn: /nope: No such file or directory\n");
}

}  // namespace
}  // namespace cairn
