// cairn-metabench: namespace operations through the master API (libcairn, no mount), with
// several calls in flight, as a metadata-heavy application or a MapReduce job's output
// commit makes them. Prints the rate of each phase.
//
//   cairn-metabench --master M [--credentials DIR | --insecure] --dir /PATH
//                   [--files N] [--parallel P]
//
// Phases over N names in a new directory under --dir (which must exist): create (exclusive,
// mode 0644), stat (getattr), mkdir (N / 3 directories), then everything is removed. With
// --keep, only create and stat, and the files stay (to grow a namespace: bench/namespace.sh).

#include <kj/async-io.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "bench_client.h"
#include "log.h"

namespace {

using cairn::Client;
using cairn::Status;

// Runs op(0..n-1) with at most `parallel` in flight; the first error, or OK.
Status runAll(kj::WaitScope& ws, uint64_t n, uint64_t parallel,
              const std::function<kj::Promise<Status>(uint64_t)>& op) {
  uint64_t next = 0;
  Status first = Status::OK();
  std::function<kj::Promise<void>()> lane = [&]() -> kj::Promise<void> {
    if (next >= n || !first.ok()) return kj::READY_NOW;
    uint64_t i = next++;
    return op(i).then([&](Status s) {
      if (!s.ok() && first.ok()) first = s;
      return lane();
    });
  };
  kj::Vector<kj::Promise<void>> lanes;
  for (uint64_t l = 0; l < parallel; ++l) lanes.add(lane());
  kj::joinPromises(lanes.releaseAsArray()).wait(ws);
  return first;
}

double timed(const std::function<void()>& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  CLI::App app{"cairn-metabench: namespace operations through the master API"};
  const char* envMaster = getenv("CAIRN_MASTER");
  std::string master = envMaster ? envMaster : "127.0.0.1:7700";
  std::string dir;
  uint64_t files = 3000, parallel = 16;
  bool keep = false;
  app.add_option("--master", master, "the masters' HOST:PORT list (also CAIRN_MASTER)");
  app.add_option("--dir", dir, "an existing directory to work under")->required();
  app.add_option("--files", files, "names per phase")->capture_default_str();
  app.add_option("--parallel", parallel, "calls in flight")->capture_default_str();
  app.add_flag("--keep", keep, "create and stat only, and keep the files");
  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags);
  CLI11_PARSE(app, argc, argv);
  if (parallel == 0) parallel = 1;
  setLogLevel(LogLevel::WARN);

  auto io = kj::setupAsyncIo();
  auto options = benchClientOptions("cairn-metabench", master, securityFlags);
  if (!options) return 2;
  Client client(*options, io.provider->getNetwork(), io.provider->getTimer());
  auto& ws = io.waitScope;

  auto parent = client.resolve(dir).wait(ws);
  if (!parent.ok()) {
    fprintf(stderr, "cairn-metabench: %s: %s\n", dir.c_str(), parent.status.toString().c_str());
    return 1;
  }
  std::string name = "metabench-" + std::to_string(getpid());
  auto top = client.mkdir(parent.value.inode, name, 0755).wait(ws);
  if (!top.ok()) {
    fprintf(stderr, "cairn-metabench: mkdir: %s\n", top.status.toString().c_str());
    return 1;
  }
  uint64_t d = top.value.inode;
  std::vector<uint64_t> inodes(files);
  Status s = Status::OK();
  auto phase = [&](const char* what, uint64_t n, std::function<kj::Promise<Status>(uint64_t)> op) {
    if (!s.ok()) return;
    double seconds = timed([&]() { s = runAll(ws, n, parallel, op); });
    if (s.ok()) printf("%s\t%.1f\t/s\n", what, n / seconds);
  };
  phase("create", files, [&](uint64_t i) {
    return client.create(d, "f" + std::to_string(i), 0644, 0, true)
        .then([&inodes, i](Result<FileAttr> r) {
          if (r.ok()) inodes[i] = r.value.inode;
          return r.status;
        });
  });
  phase("stat", files, [&](uint64_t i) {
    return client.getattr(inodes[i]).then([](Result<FileAttr> r) { return r.status; });
  });
  if (keep) {
    if (!s.ok()) {
      fprintf(stderr, "cairn-metabench: %s\n", s.toString().c_str());
      return 1;
    }
    return 0;
  }
  phase("mkdir", files / 3, [&](uint64_t i) {
    return client.mkdir(d, "d" + std::to_string(i), 0755).then([](Result<FileAttr> r) {
      return r.status;
    });
  });
  // Clean up whatever the phases made, even after an error.
  Status cleanup = runAll(ws, files, parallel, [&](uint64_t i) {
    return client.unlink(d, "f" + std::to_string(i)).then([](Status) { return Status::OK(); });
  });
  cleanup = runAll(ws, files / 3, parallel, [&](uint64_t i) {
    return client.rmdir(d, "d" + std::to_string(i)).then([](Status) { return Status::OK(); });
  });
  client.rmdir(parent.value.inode, name).wait(ws);
  if (!s.ok()) {
    fprintf(stderr, "cairn-metabench: %s\n", s.toString().c_str());
    return 1;
  }
  return 0;
}
