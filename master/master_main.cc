// cairn-master: parses flags, builds the real environment, serves until killed.

#include <kj/async-io.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>

#include "address.h"
#include "log.h"
#include "master.h"
#include "rpc.h"
#include "security.h"
#include "status_http.h"

int main(int argc, char** argv) {
  using namespace cairn;
  CLI::App app{"Cairn master: namespace, chunk map, leases"};
  std::string listen = "0.0.0.0:7700";
  std::string dataDir;
  std::string portFile;
  uint64_t chunkSize = 64ull << 20;
  double deadAfter = 30;
  double heartbeat = 3;
  app.add_option("--listen", listen, "HOST:PORT to serve RPC on")->capture_default_str();
  app.add_option("--data", dataDir, "metadata directory")->required();
  app.add_option("--chunk-size", chunkSize, "chunk size in bytes, fixed at first start")
      ->capture_default_str();
  app.add_option("--dead-after", deadAfter,
                 "seconds without heartbeat before a chunkserver "
                 "is dead")
      ->capture_default_str();
  app.add_option("--heartbeat", heartbeat, "chunkserver heartbeat interval, seconds")
      ->capture_default_str();
  double trashSeconds = 86400;
  double safeModeSeconds = 60;
  app.add_option("--trash-seconds", trashSeconds,
                 "how long deleted files stay restorable "
                 "(0: delete at once)")
      ->capture_default_str();
  app.add_option("--safe-mode-timeout", safeModeSeconds,
                 "leave safe mode after this long even "
                 "if chunks are missing")
      ->capture_default_str();
  app.add_option("--port-file", portFile, "write the bound HOST:PORT here once listening");
  double tokenLifetime = 3600;
  app.add_option("--token-lifetime", tokenLifetime,
                 "seconds a chunk token is valid; its signing "
                 "key is replaced as often")
      ->capture_default_str()
      ->check(CLI::Range(2.0, 86400.0 * 7));
  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags, /*server=*/true);
  HttpFlags httpFlags;
  addHttpFlags(app, httpFlags, "0.0.0.0:7780");
  CLI11_PARSE(app, argc, argv);
  setLogComponent("master");
  signal(SIGPIPE, SIG_IGN);
  captureSighup();
  auto security = loadSecurity(securityFlags);
  if (!security.ok()) {
    logError("{}", security.status.message());
    return 2;
  }

  auto addr = parseHostPort(listen);
  if (!addr.ok()) {
    logError("{}", addr.status.toString());
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(dataDir, ec);
  if (ec) {
    logError("cannot create {}: {}", dataDir, ec.message());
    return 1;
  }
  try {
    auto io = kj::setupAsyncIo();
    MasterOptions options;
    options.dataDir = dataDir;
    options.chunkSize = chunkSize;
    options.chunks.deadAfter = static_cast<int64_t>(deadAfter * 1000) * kj::MILLISECONDS;
    options.heartbeatInterval = static_cast<int64_t>(heartbeat * 1000) * kj::MILLISECONDS;
    options.chunks.seed = static_cast<uint64_t>(getpid());
    options.trashPeriod = static_cast<int64_t>(trashSeconds * 1000) * kj::MILLISECONDS;
    options.chunks.safeModeTimeout =
        static_cast<int64_t>(safeModeSeconds * 1000) * kj::MILLISECONDS;
    options.chunks.minFreeBytes = chunkSize;
    options.tokenLifetime = static_cast<int64_t>(tokenLifetime * 1000) * kj::MILLISECONDS;
    Master master(options, io.provider->getTimer(), kj::systemPreciseCalendarClock());
    auto listener = io.provider->getNetwork()
                        .parseAddress(addr.value.host, addr.value.port)
                        .wait(io.waitScope)
                        ->listen();
    uint16_t port = listener->getPort();
    RpcServer server([&master](const Identity& peer) { return master.bootstrap(peer); },
                     kj::mv(listener), io.provider->getTimer(), security.value);
    server.exportMetrics(master.metrics());
    auto pages = startStatusPages(
        io, httpFlags, security.value.tls, [&master]() { return master.statusPage(); },
        master.metrics());
    auto reloader = reloadOnSighup(io.unixEventPort, security.value.tls).eagerlyEvaluate(nullptr);
    std::string bound = HostPort{addr.value.host, port}.toString();
    logInfo("listening on {} (data {}, chunk size {})", bound, dataDir, master.names().chunkSize());
    if (!portFile.empty()) std::ofstream(portFile) << bound << "\n";
    kj::NEVER_DONE.wait(io.waitScope);
  } catch (const kj::Exception& e) {
    logError("fatal: {}", e.getDescription().cStr());
    return 1;
  }
}
