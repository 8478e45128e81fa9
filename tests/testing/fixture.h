#pragma once
// A gtest fixture over a cluster of real processes, with the questions tests ask of it
// through the `cairn` command: liveness, health, where a chunk's replicas are.

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"

namespace cairn::testing {

// A small tmpfs (a disk that fills up) made by a test at `path`, and unmounted when the
// test ends, failed or not. Needs root: `ok` says whether it was mounted.
struct Tmpfs {
  Tmpfs(std::string p, const std::string& size) : path(std::move(p)) {
    std::filesystem::create_directories(path);
    ok = system(("mount -t tmpfs -o size=" + size + " cairn-test-tmpfs " + path).c_str()) == 0;
  }
  ~Tmpfs() {
    if (ok) (void)!system(("umount -l " + path).c_str());
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  std::string path;
  bool ok = false;
};

class ClusterFixture : public ::testing::Test {
 protected:
  // A cluster with 1 MiB chunks (or `chunkSize`) that declares chunkservers dead after 2 s.
  void start(size_t chunkservers, std::vector<std::string> masterFlags = {},
             std::vector<std::string> chunkserverFlags = {"--scrub-interval", "0.2"},
             uint64_t chunkSize = 1 << 20) {
    std::vector<std::string> flags = {"--dead-after", "2", "--safe-mode-timeout", "20"};
    flags.insert(flags.end(), masterFlags.begin(), masterFlags.end());
    cluster = std::make_unique<ProcessCluster>(chunkSize, flags);
    cluster->setChunkserverFlags(chunkserverFlags);
    cluster->startMaster();
    for (size_t i = 0; i < chunkservers; ++i) cluster->startChunkserver(i);
    cluster->waitForLiveChunkservers(chunkservers);
  }
  std::string local(const std::string& name) { return cluster->dir() + "/" + name; }
  // `cairn ARGS` with --json output parsed; null if the command failed.
  nlohmann::json json(const std::vector<std::string>& args) {
    std::string out, err;
    if (cluster->cli(args, &out, &err) != 0) return nullptr;
    return nlohmann::json::parse(out);
  }
  // Polls `done` every 200 ms until it holds or `seconds` pass.
  bool waitFor(double seconds, const std::function<bool()>& done) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return done();
  }
  bool isLive(const std::string& address) {
    auto servers = json({"servers", "--json"});
    if (servers.is_null()) return false;
    for (auto& s : servers["servers"]) {
      if (s["address"] == address) return s["live"].get<bool>();
    }
    return false;
  }
  bool healthy() {
    auto h = json({"admin", "health", "--json"});
    return !h.is_null() && h["safe_mode"] == false && h["under_replicated"] == 0 &&
           h["over_replicated"] == 0 && h["missing"] == 0 && h["copies_in_flight"] == 0;
  }
  // Addresses of the replicas of chunk `index` of `path`.
  std::set<std::string> holders(const std::string& path, size_t index) {
    std::set<std::string> out;
    auto l = json({"locate", "--json", path});
    if (l.is_null()) return out;
    for (auto& c : l["chunks"]) {
      if (c["index"] == index) {
        for (auto& r : c["replicas"]) out.insert(r["address"].get<std::string>());
      }
    }
    return out;
  }
  // The handle (hex) of chunk `index` of `path`, or "".
  std::string handleOf(const std::string& path, size_t index) {
    auto l = json({"locate", "--json", path});
    if (l.is_null()) return "";
    for (auto& c : l["chunks"]) {
      if (c["index"] == index) return c["handle"].get<std::string>();
    }
    return "";
  }
  size_t indexOf(const std::string& address) {
    for (size_t i = 0;; ++i) {
      if (cluster->chunkserverAddress(i) == address) return i;
    }
  }
  // The data file of one chunk in chunkserver i's data directory.
  std::string chunkFile(size_t i, const std::string& handleHex) {
    std::string name = handleHex.size() < 2 ? "0" + handleHex : handleHex;
    return cluster->chunkserverDataDir(i) + "/chunks/" + name.substr(0, 2) + "/" + name;
  }

  std::unique_ptr<ProcessCluster> cluster;
};

}  // namespace cairn::testing
