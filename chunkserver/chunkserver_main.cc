// cairn-chunkserver: parses flags, builds the real environment, serves until killed.

#include <kj/async-io.h>
#include <kj/exception.h>
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstring>
#include <fstream>

#include "address.h"
#include "chunkserver.h"
#include "log.h"
#include "security.h"
#include "status_http.h"
#include "units.h"

namespace {

// Raises the soft limit on open files to the hard one (often 1024 against 524288): a
// descriptor refused would fail a chunk's read as if the disk had.
void raiseOpenFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
    cairn::logWarn("cannot raise the open-file limit: {}", strerror(errno));
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  // A crash leaves its stack in the log.
  kj::printStackTraceOnCrash();
  CLI::App app{"Cairn chunkserver: stores and serves replicated chunks"};
  std::string listen = "0.0.0.0:7710";
  std::string advertise;
  std::vector<std::string> dataDirs;
  std::string master;
  std::string rack = "default";
  std::string portFile;
  app.add_option("--listen", listen, "HOST:PORT to serve RPC on")->capture_default_str();
  app.add_option("--advertise", advertise,
                 "HOST:PORT the master and clients use "
                 "(default: the listen address)");
  app.add_option("--data", dataDirs, "data directory (repeat for several disks)")
      ->required()
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--master", master, "the master's HOST:PORT")->required();
  app.add_option("--rack", rack, "rack name, for placement")->capture_default_str();
  double scrubSeconds = 10;
  app.add_option("--scrub-interval", scrubSeconds, "seconds between re-verifying one idle chunk")
      ->capture_default_str();
  app.add_option("--port-file", portFile, "write the bound HOST:PORT here once listening");
  std::string reserve;
  app.add_option("--reserve", reserve,
                 "free space kept per data directory: no new chunks or "
                 "copies below it (bytes, or with K/M/G suffix; default: 1G or 2% of the disk, "
                 "whichever is smaller)");
  bool keepWritten = false;
  app.add_flag("--keep-written-in-cache", keepWritten,
               "keep chunk data this chunkserver writes in the page cache (default: dropped "
               "once on disk, where the kernel can)");
  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags, /*server=*/true);
  HttpFlags httpFlags;
  addHttpFlags(app, httpFlags, "0.0.0.0:7790");
  CLI11_PARSE(app, argc, argv);
  setLogComponent("chunkserver");
  signal(SIGPIPE, SIG_IGN);
  captureSighup();
  auto security = loadSecurity(securityFlags);
  if (!security.ok()) {
    logError("{}", security.status.message());
    return 2;
  }

  auto addr = parseHostPort(listen);
  auto masterAddr = parseHostPort(master);
  Result<uint64_t> reserveBytes = reserve.empty() ? Result<uint64_t>(0) : parseByteSize(reserve);
  if (!reserveBytes.ok()) {
    logError("--reserve: {}", reserveBytes.status.message());
    return 2;
  }
  for (auto* r : {&addr, &masterAddr}) {
    if (!r->ok()) {
      logError("{}", r->status.toString());
      return 2;
    }
  }
  try {
    auto io = kj::setupAsyncIo();
    auto& network = io.provider->getNetwork();
    auto listener =
        network.parseAddress(addr.value.host, addr.value.port).wait(io.waitScope)->listen();
    uint16_t port = listener->getPort();
    std::string bound = HostPort{addr.value.host, port}.toString();
    if (advertise.empty()) {
      if (addr.value.host == "0.0.0.0" || addr.value.host == "::") {
        logError("--advertise is needed when listening on a wildcard address");
        return 2;
      }
      advertise = bound;
    }
    setLogComponent("chunkserver " + advertise);
    raiseOpenFileLimit();  // the disk keeps chunk files open, beside every connection
    PosixDisk disk(/*dropBehind=*/!keepWritten);
    ChunkserverOptions options;
    options.address = advertise;
    options.rack = rack;
    options.dataDirs = dataDirs;
    options.master = master;
    options.scrubInterval = static_cast<int64_t>(scrubSeconds * 1000) * kj::MILLISECONDS;
    if (!reserve.empty()) options.reserveBytes = reserveBytes.value;
    options.security = security.value;
    Chunkserver chunkserver(options, disk, io.provider->getTimer(), network);
    RpcServer server(
        [&chunkserver](const Identity& peer) { return chunkserver.capabilityFor(peer); },
        kj::mv(listener), io.provider->getTimer(), security.value);
    server.exportMetrics(chunkserver.metrics());
    auto pages = startStatusPages(
        io, httpFlags, security.value.tls, [&chunkserver]() { return chunkserver.statusPage(); },
        chunkserver.metrics());
    auto reloader = reloadOnSighup(io.unixEventPort, security.value.tls).eagerlyEvaluate(nullptr);
    chunkserver.start().wait(io.waitScope);
    logInfo("listening on {} (master {}, rack '{}')", bound, master, rack);
    if (!portFile.empty()) std::ofstream(portFile) << advertise << "\n";
    kj::NEVER_DONE.wait(io.waitScope);
  } catch (const kj::Exception& e) {
    logError("fatal: {}", e.getDescription().cStr());
    return 1;
  }
}
