// cairn-master: parses flags, builds the real environment, serves until killed.

#include <kj/async-io.h>
#include <kj/exception.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "address.h"
#include "log.h"
#include "master.h"
#include "rpc.h"
#include "security.h"
#include "status_http.h"

namespace {

// Runs this program again in place, listening on `bound` (the port it had), so that a
// deposed master comes back as a standby with nothing of its old state in memory.
[[noreturn]] void restartAsStandby(int argc, char** argv, const std::string& bound) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--listen" && i + 1 < args.size()) args[i + 1] = bound;
    if (args[i].rfind("--listen=", 0) == 0) args[i] = "--listen=" + bound;
  }
  // The others get a head start.
  bool set = false;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--election-hold-off-ms") {
      args[i + 1] = "5000";
      set = true;
    }
  }
  if (!set) {
    args.push_back("--election-hold-off-ms");
    args.push_back("5000");
  }
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  fflush(nullptr);
  close_range(3, ~0U, 0);  // sockets, LevelDB's files and lock
  execv("/proc/self/exe", cargs.data());
  _exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  // A crash leaves its stack in the log.
  kj::printStackTraceOnCrash();
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
  std::string zookeeper, masterId, zkRoot = "/cairn", standbyAck = "written";
  int sessionTimeoutMs = 4000;
  uint32_t minSyncStandbys = 0;
  double standbyTimeout = 5;
  app.add_option("--zookeeper", zookeeper,
                 "ZooKeeper HOST:PORT[,...]: run as one of several masters (active or standby)");
  app.add_option("--id", masterId,
                 "this master's HOST:PORT as clients and the other masters reach it "
                 "(default: the bound --listen address)");
  app.add_option("--zk-root", zkRoot, "ZooKeeper node under which the masters meet")
      ->capture_default_str();
  app.add_option("--zk-session-timeout-ms", sessionTimeoutMs,
                 "ZooKeeper session timeout: an active master that cannot reach ZooKeeper for "
                 "two thirds of it stops; a dead one is replaced after it")
      ->capture_default_str()
      ->check(CLI::Range(1000, 60000));
  app.add_option("--min-sync-standbys", minSyncStandbys,
                 "acknowledge mutations only while at least this many standbys are in sync "
                 "(every standby in sync is always waited for)")
      ->capture_default_str();
  app.add_option("--standby-ack", standbyAck,
                 "when a standby acknowledges a log entry: written (to its log) or applied; "
                 "an fsync's entry is acknowledged once synced either way")
      ->capture_default_str()
      ->check(CLI::IsMember({"written", "applied"}));
  app.add_option("--standby-timeout", standbyTimeout,
                 "seconds without an acknowledgement before a standby leaves the in-sync set")
      ->capture_default_str();
  int holdOffMs = 0;
  app.add_option("--election-hold-off-ms", holdOffMs,
                 "stay out of the election this long after starting (a deposed master "
                 "restarting sets it, so that the standby it handed over to wins)")
      ->capture_default_str();
  size_t logKeepEntries = 100000;
  app.add_option("--log-keep-entries", logKeepEntries,
                 "log entries the active keeps in memory for standbys that reconnect (one away "
                 "for longer copies a snapshot)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{100'000'000}));
  size_t logKeepMib = 16;
  app.add_option("--log-keep-mib", logKeepMib,
                 "at most this many MiB of those entries' keys and values (the memory they "
                 "take is about twice that)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{65536}));
  bool syncEveryMutation = false;
  app.add_flag("--sync-every-mutation", syncEveryMutation,
               "sync every metadata change to disk (here and on the standbys) before "
               "answering it, as HDFS does; by default a change is answered once it is in "
               "the log of the active and its standbys in sync, synced within "
               "--sync-delay-ms, and fsync waits for a sync");
  int syncDelayMs = 10;
  app.add_option("--sync-delay-ms", syncDelayMs,
                 "an answered metadata change is on disk within this many milliseconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
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
    auto listener = io.provider->getNetwork()
                        .parseAddress(addr.value.host, addr.value.port)
                        .wait(io.waitScope)
                        ->listen();
    uint16_t port = listener->getPort();
    std::string bound = HostPort{addr.value.host, port}.toString();
    options.election.servers = zookeeper;
    options.election.id = masterId.empty() ? bound : masterId;
    options.election.root = zkRoot;
    options.election.sessionTimeoutMs = sessionTimeoutMs;
    options.election.startHoldOffMs = holdOffMs;
    options.replication.minSyncStandbys = minSyncStandbys;
    options.replication.standbyTimeout =
        static_cast<int64_t>(standbyTimeout * 1000) * kj::MILLISECONDS;
    options.standbyAckWritten = standbyAck == "written";
    options.replication.keepEntries = logKeepEntries;
    options.syncEveryMutation = syncEveryMutation;
    options.syncDelay = std::chrono::milliseconds(syncDelayMs);
    options.replication.keepBytes = logKeepMib << 20;
    // A deposed master may hold entries no standby acknowledged: it starts afresh as a
    // standby (same port), and the active's snapshot replaces what differs.
    options.onDeposed = [argc, argv, bound](const std::string& why) {
      logWarn("restarting as a standby ({})", why);
      restartAsStandby(argc, argv, bound);
    };
    options.onStoreFailure = [](const std::string& error) {
      logError(
          "stopping: the metadata store failed ({}), so this master's memory may be ahead "
          "of its disk",
          error);
      std::fflush(nullptr);
      std::_Exit(EXIT_FAILURE);
    };
    if (!zookeeper.empty() && (addr.value.host == "0.0.0.0" || addr.value.host == "::") &&
        masterId.empty()) {
      logError("--zookeeper needs --id HOST:PORT when listening on every address");
      return 2;
    }
    Master master(options, io.provider->getTimer(), kj::systemPreciseCalendarClock());
    RpcServer server([&master](const Identity& peer) { return master.bootstrap(peer); },
                     kj::mv(listener), io.provider->getTimer(), security.value);
    server.exportMetrics(master.metrics());
    auto pages = startStatusPages(
        io, httpFlags, security.value.tls, [&master]() { return master.statusPage(); },
        master.metrics());
    auto reloader = reloadOnSighup(io.unixEventPort, security.value.tls).eagerlyEvaluate(nullptr);
    master.startHa(io.provider->getNetwork(), security.value);
    logInfo("listening on {} (data {}, chunk size {})", bound, dataDir, master.names().chunkSize());
    if (!portFile.empty()) std::ofstream(portFile) << bound << "\n";
    kj::NEVER_DONE.wait(io.waitScope);
  } catch (const kj::Exception& e) {
    logError("fatal: {}", e.getDescription().cStr());
    return 1;
  }
}
