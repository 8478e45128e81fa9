// cairn-appendbench: one writer of a file through libcairn, as the figures of record
// append compare against. Prints the bytes per second it reached.
//
//   cairn-appendbench --master M [--credentials DIR | --insecure] --path /FILE
//                     --mode write|append [--mb N] [--record-kb K]
//
// write: a new file of N MiB written front to back in 8 MiB buffers (FileCache, as
// `cairn put` writes), then flushed. append: N MiB appended to FILE (made if missing) in
// records of K KiB, one after another (several of these at once make the concurrent
// figure). Both sync what they wrote before the clock stops.

#include <kj/async-io.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>

#include "bench_client.h"
#include "file_cache.h"
#include "log.h"

int main(int argc, char** argv) {
  using namespace cairn;
  CLI::App app{"cairn-appendbench: sequential write or record append through libcairn"};
  const char* envMaster = getenv("CAIRN_MASTER");
  std::string master = envMaster ? envMaster : "127.0.0.1:7700";
  std::string path, mode = "append";
  uint64_t mb = 256, recordKb = 1024;
  app.add_option("--master", master, "the masters' HOST:PORT list (also CAIRN_MASTER)");
  app.add_option("--path", path, "the file")->required();
  app.add_option("--mode", mode, "write or append")->check(CLI::IsMember({"write", "append"}));
  app.add_option("--mb", mb, "MiB to write")->capture_default_str();
  app.add_option("--record-kb", recordKb, "KiB per append")->capture_default_str();
  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags);
  CLI11_PARSE(app, argc, argv);
  setLogLevel(LogLevel::WARN);
  auto io = kj::setupAsyncIo();
  auto options = benchClientOptions("cairn-appendbench", master, securityFlags);
  if (!options) return 2;
  Client client(*options, io.provider->getNetwork(), io.provider->getTimer());
  FileCache files(client);
  auto& ws = io.waitScope;
  auto fail = [&](const char* what, const Status& s) {
    fprintf(stderr, "cairn-appendbench: %s: %s\n", what, s.toString().c_str());
    return 1;
  };
  auto slash = path.rfind('/');
  auto parent = client.resolve(slash == 0 ? "/" : path.substr(0, slash)).wait(ws);
  if (!parent.ok()) return fail("parent", parent.status);
  std::string name = path.substr(slash + 1);
  uint64_t total = mb << 20;
  auto start = std::chrono::steady_clock::now();
  if (mode == "write") {
    CreateOptions o;
    o.exclusive = true;
    o.syncOnClose = true;
    auto file = files.create(parent.value.inode, name, o).wait(ws);
    if (!file.ok()) return fail("create", file.status);
    std::string block(8 << 20, 'w');
    for (uint64_t at = 0; at < total; at += block.size()) {
      Status s = file.value->write(at, block).wait(ws);
      if (!s.ok()) return fail("write", s);
    }
    Status s = file.value->close().wait(ws);
    if (!s.ok()) return fail("close", s);
  } else {
    auto attr = client.create(parent.value.inode, name, 0644, 0, false).wait(ws);
    if (!attr.ok()) return fail("create", attr.status);
    uint64_t cs = client.ensureChunkSize(attr.value.inode).wait(ws);
    std::string record(recordKb << 10, 'a');
    std::set<uint32_t> chunks;
    for (uint64_t done = 0; done < total; done += record.size()) {
      auto at =
          client
              .append(attr.value.inode,
                      kj::arrayPtr(reinterpret_cast<const kj::byte*>(record.data()), record.size()))
              .wait(ws);
      if (!at.ok()) return fail("append", at.status);
      chunks.insert(static_cast<uint32_t>(at.value / cs));
    }
    Status s = client.syncChunks(attr.value.inode, {chunks.begin(), chunks.end()}).wait(ws);
    if (!s.ok()) return fail("sync", s);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  printf("%s\t%.1f\tMB/s\t%.3f\ts\n", mode.c_str(), total / seconds / 1e6, seconds);
  return 0;
}
