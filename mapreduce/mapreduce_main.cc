// cairn-mapreduce: the coordinator and worker daemons, and `run`/`jobs` for users.

#include <arpa/inet.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "address.h"
#include "commands.h"
#include "coordinator.h"
#include "log.h"
#include "protocol.h"
#include "rpc.h"
#include "security.h"
#include "status_http.h"
#include "worker.h"

namespace {

using namespace cairn;
using namespace cairn::mapreduce;

RpcSecurity security;  // of every connection this process makes and serves

// The local address this host uses to reach `target` (no packet is sent).
Result<std::string> localAddressTowards(const HostPort& target) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(target.host.c_str(), std::to_string(target.port).c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    return Status::unavailable("cannot resolve " + target.host);
  }
  int fd = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Result<std::string> out = Status::unavailable("no route to " + target.host);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    char host[NI_MAXHOST];
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        getnameinfo(reinterpret_cast<sockaddr*>(&local), len, host, sizeof(host), nullptr, 0,
                    NI_NUMERICHOST) == 0) {
      out = std::string(host);
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return out;
}

bool isIpAddress(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Listens on `at` (port 0: any); `bound` gets the HOST:PORT it listens on.
kj::Own<kj::ConnectionReceiver> listenOn(kj::AsyncIoContext& io, const HostPort& at,
                                         std::string& bound) {
  auto listener =
      io.provider->getNetwork().parseAddress(at.host, at.port).wait(io.waitScope)->listen();
  bound = HostPort{at.host, static_cast<uint16_t>(listener->getPort())}.toString();
  return listener;
}

int runCoordinator(const std::string& master, const std::string& listen,
                   const std::string& portFile, double localityWait, const HttpFlags& http) {
  setLogComponent("coordinator");
  auto addr = parseHostPort(listen);
  if (!addr.ok() || !parseHostPort(master).ok()) {
    logError("{}", (addr.ok() ? parseHostPort(master).status : addr.status).toString());
    return 2;
  }
  try {
    auto io = kj::setupAsyncIo();
    std::string bound;
    auto listener = listenOn(io, addr.value, bound);
    CoordinatorOptions options;
    options.master = master;
    options.scheduler.localityWaitMs = static_cast<int64_t>(localityWait * 1000);
    options.security = security;
    Coordinator coordinator(options, io.provider->getTimer());
    RpcServer server(
        [&coordinator](const Identity& peer) { return coordinator.capabilityFor(peer); },
        kj::mv(listener), io.provider->getTimer(), security);
    server.exportMetrics(coordinator.metrics());
    auto pages = startStatusPages(
        io, http, security.tls, [&coordinator]() { return coordinator.statusPage(); },
        coordinator.metrics());
    auto reloader = reloadOnSighup(io.unixEventPort, security.tls).eagerlyEvaluate(nullptr);
    logInfo("listening on {} (master {})", bound, master);
    if (!portFile.empty()) std::ofstream(portFile) << bound << "\n";
    coordinator.run().wait(io.waitScope);
  } catch (const kj::Exception& e) {
    logError("fatal: {}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}

int runWorker(WorkerOptions options, std::string listen, const std::string& portFile) {
  auto coord = parseHostPort(options.coordinator);
  if (!coord.ok()) {
    logError("{}", coord.status.toString());
    return 2;
  }
  if (options.host.empty() || listen.empty()) {
    auto local = localAddressTowards(coord.value);
    if (!local.ok()) {
      logError("finding this host's address: {}", local.status.toString());
      return 2;
    }
    if (options.host.empty()) options.host = local.value;
    if (listen.empty()) {
      listen = HostPort{isIpAddress(options.host) ? options.host : local.value, 0}.toString();
    }
  }
  auto addr = parseHostPort(listen);
  if (!addr.ok()) {
    logError("{}", addr.status.toString());
    return 2;
  }
  try {
    auto io = kj::setupAsyncIo();
    auto listener = listenOn(io, addr.value, options.address);
    setLogComponent("worker " + options.host);
    bool written = false;
    options.joined = [&]() {
      if (!written && !portFile.empty()) std::ofstream(portFile) << options.address << "\n";
      written = true;
    };
    options.security = security;
    Worker worker(options, io.provider->getNetwork(), io.provider->getTimer());
    RpcServer server([&worker](const Identity& peer) { return worker.capabilityFor(peer); },
                     kj::mv(listener), io.provider->getTimer(), security);
    auto reloader = reloadOnSighup(io.unixEventPort, security.tls).eagerlyEvaluate(nullptr);
    logInfo("serving map output on {}, scratch {}", options.address, options.scratch);
    worker.start().wait(io.waitScope);
    kj::NEVER_DONE.wait(io.waitScope);
  } catch (const kj::Exception& e) {
    logError("fatal: {}", e.getDescription().cStr());
    return 1;
  }
  return 0;
}

nlohmann::json reportJson(const JobReport& r) {
  double secs = static_cast<double>(r.wallMs) / 1000;
  return {{"job", r.jobId},
          {"state", jobStateName(r.state)},
          {"error", r.error},
          {"output", r.output},
          {"input_files", r.inputFiles},
          {"map_tasks", r.mapTasks},
          {"maps_done", r.mapsDone},
          {"reduce_tasks", r.reduceTasks},
          {"reduces_done", r.reducesDone},
          {"data_local_maps", r.dataLocalMaps},
          {"bytes_read", r.bytesRead},
          {"bytes_written", r.bytesWritten},
          {"shuffle_bytes", r.shuffleBytes},
          {"failed_attempts", r.failedAttempts},
          {"backup_attempts", r.backupAttempts},
          {"wall_seconds", secs},
          {"read_mb_per_s", secs > 0 ? static_cast<double>(r.bytesRead) / 1e6 / secs : 0.0}};
}

void printReport(const JobReport& r) {
  double secs = static_cast<double>(r.wallMs) / 1000;
  fmt::print("job {} {} in {:.1f} s\n", r.jobId, jobStateName(r.state), secs);
  if (!r.error.empty()) fmt::print("  error            {}\n", r.error);
  fmt::print("  map tasks        {} ({} data-local)\n", r.mapTasks, r.dataLocalMaps);
  fmt::print("  reduce tasks     {}\n", r.reduceTasks);
  fmt::print("  input            {} in {} files, {:.1f} MB/s\n",
             humanBytes(static_cast<double>(r.bytesRead)), r.inputFiles,
             secs > 0 ? static_cast<double>(r.bytesRead) / 1e6 / secs : 0.0);
  fmt::print("  shuffled         {}\n", humanBytes(static_cast<double>(r.shuffleBytes)));
  fmt::print("  output           {} in {}\n", humanBytes(static_cast<double>(r.bytesWritten)),
             r.output);
  fmt::print("  failed attempts  {} (run again)\n", r.failedAttempts);
  fmt::print("  backup attempts  {}\n", r.backupAttempts);
}

struct Session {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  PeerPool peers{io.provider->getNetwork(), io.provider->getTimer(), security};
  wire::Coordinator::Client coordinator;
  std::string address;
  explicit Session(std::string addr)
      : coordinator(peers.get<wire::Coordinator>(addr)), address(std::move(addr)) {}

  template <typename Request>
  auto call(Request&& request, kj::Duration timeout) {
    return io.provider->getTimer().timeoutAfter(timeout, request.send()).wait(io.waitScope);
  }
};

int failLine(const std::string& text) {
  fmt::print(stderr, "cairn-mapreduce: {}\n", text);
  return 1;
}

int runJob(const std::string& coordinator, JobSpec spec, bool json) {
  Session s(coordinator);
  uint64_t jobId = 0;
  try {
    auto req = s.coordinator.submitRequest();
    toWire(spec, req.initSpec());
    auto response = s.call(kj::mv(req), 300 * kj::SECONDS);
    Status st = cairn::fromWire(response.getStatus());
    if (!st.ok()) return failLine(st.message());
    jobId = response.getJobId();
  } catch (const kj::Exception& e) {
    return failLine(fmt::format("cannot reach the coordinator at {}: {}", coordinator,
                                e.getDescription().cStr()));
  }
  bool tty = isatty(2) && !json;
  auto lastContact = std::chrono::steady_clock::now();
  JobReport report;
  for (;;) {
    try {
      auto req = s.coordinator.statusRequest();
      req.setJobId(jobId);
      auto response = s.call(kj::mv(req), 10 * kj::SECONDS);
      Status st = cairn::fromWire(response.getStatus());
      if (!st.ok()) return failLine(fmt::format("job {}: {}", jobId, st.toString()));
      report = fromWire(response.getReport());
      lastContact = std::chrono::steady_clock::now();
    } catch (const kj::Exception& e) {
      s.peers.drop(coordinator);
      if (std::chrono::steady_clock::now() - lastContact > std::chrono::seconds(60)) {
        return failLine(
            fmt::format("lost the coordinator at {}: {}", coordinator, e.getDescription().cStr()));
      }
    }
    if (report.state != JobState::RUNNING) break;
    if (tty) {
      fmt::print(stderr, "\r\033[Kjob {}: maps {}/{}  reduces {}/{}  read {}  {:.0f} s", jobId,
                 report.mapsDone, report.mapTasks, report.reducesDone, report.reduceTasks,
                 humanBytes(static_cast<double>(report.bytesRead)),
                 static_cast<double>(report.wallMs) / 1000);
      fflush(stderr);
    }
    s.io.provider->getTimer().afterDelay(300 * kj::MILLISECONDS).wait(s.io.waitScope);
  }
  if (tty) fmt::print(stderr, "\r\033[K");
  if (json) {
    fmt::print("{}\n", reportJson(report).dump(2));
  } else if (report.state == JobState::SUCCEEDED) {
    printReport(report);
  }
  if (report.state != JobState::SUCCEEDED) {
    return failLine(fmt::format("job {} failed: {}", jobId, report.error));
  }
  return 0;
}

int listJobs(const std::string& coordinator, bool json) {
  Session s(coordinator);
  try {
    auto response = s.call(s.coordinator.jobsRequest(), 10 * kj::SECONDS);
    nlohmann::json all = nlohmann::json::array();
    for (auto r : response.getReports()) {
      JobReport report = fromWire(r);
      if (json) {
        all.push_back(reportJson(report));
      } else {
        fmt::print("{:>5}  {:<9}  maps {}/{}  reduces {}/{}  {:.1f} s  {}{}\n", report.jobId,
                   jobStateName(report.state), report.mapsDone, report.mapTasks, report.reducesDone,
                   report.reduceTasks, static_cast<double>(report.wallMs) / 1000, report.output,
                   report.error.empty() ? "" : "  (" + report.error + ")");
      }
    }
    if (json) fmt::print("{}\n", all.dump(2));
  } catch (const kj::Exception& e) {
    return failLine(fmt::format("cannot reach the coordinator at {}: {}", coordinator,
                                e.getDescription().cStr()));
  }
  return 0;
}

int killJob(const std::string& coordinator, uint64_t jobId) {
  Session s(coordinator);
  try {
    auto req = s.coordinator.killRequest();
    req.setJobId(jobId);
    auto response = s.call(kj::mv(req), 10 * kj::SECONDS);
    Status st = cairn::fromWire(response.getStatus());
    if (!st.ok()) return failLine(st.message());
  } catch (const kj::Exception& e) {
    return failLine(fmt::format("cannot reach the coordinator at {}: {}", coordinator,
                                e.getDescription().cStr()));
  }
  fmt::print("job {} killed\n", jobId);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn-mapreduce: MapReduce jobs over Cairn"};
  app.require_subcommand(1);
  const char* envCoordinator = getenv("CAIRN_COORDINATOR");
  std::string coordinatorAddr = envCoordinator ? envCoordinator : "127.0.0.1:7800";

  auto coordinator = app.add_subcommand("coordinator", "run the coordinator daemon");
  std::string master, listen = "127.0.0.1:7800", portFile;
  double localityWait = 3;
  coordinator->add_option("--master", master, "the master's HOST:PORT")->required();
  coordinator->add_option("--listen", listen, "HOST:PORT to serve on")->capture_default_str();
  coordinator
      ->add_option("--locality-wait", localityWait,
                   "seconds a map waits for a free worker beside its data")
      ->capture_default_str();
  coordinator->add_option("--port-file", portFile, "write the bound HOST:PORT here");
  HttpFlags http;
  addHttpFlags(*coordinator, http, "0.0.0.0:7880");

  auto worker = app.add_subcommand("worker", "run a worker daemon");
  WorkerOptions wopts;
  wopts.slots = std::max(1u, std::thread::hardware_concurrency());
  std::string workerListen;
  size_t mapMemoryMiB = 64, sortMemoryMiB = 128;
  worker->add_option("--coordinator", wopts.coordinator, "the coordinator's HOST:PORT")->required();
  worker->add_option("--scratch", wopts.scratch, "local directory for map output")->required();
  worker->add_option("--slots", wopts.slots, "tasks run at once (default: CPUs)");
  worker->add_option("--host", wopts.host,
                     "this host's name as chunkservers advertise it "
                     "(default: the address it reaches the coordinator from)");
  worker->add_option("--listen", workerListen,
                     "HOST:PORT to serve map output on "
                     "(default: this host's address, any port)");
  worker->add_option("--map-memory", mapMemoryMiB, "MiB a map buffers before writing")
      ->capture_default_str();
  worker
      ->add_option("--sort-memory", sortMemoryMiB,
                   "MiB a reduce sorts in memory before "
                   "spilling")
      ->capture_default_str();
  worker->add_option("--port-file", portFile, "write the serving HOST:PORT here once joined");

  auto run = app.add_subcommand("run", "run a job and wait for it");
  JobSpec spec;
  std::string job;
  double taskTimeout = 60;
  bool json = false;
  run->add_option("--coordinator", coordinatorAddr,
                  "the coordinator's HOST:PORT (also "
                  "CAIRN_COORDINATOR)")
      ->capture_default_str();
  run->add_option("--input", spec.inputs, "an input file or directory (repeatable)")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--output", spec.output, "output directory (must not exist)")->required();
  run->add_option("--reducers", spec.reducers, "reduce tasks")->capture_default_str();
  run->add_option("--job", job, "a built-in job")
      ->check(CLI::IsMember({"wordcount", "index", "grep"}));
  run->add_option("--pattern", spec.pattern, "grep: an ECMAScript regular expression");
  run->add_option("--mapper", spec.mapper, "streaming: shell command for maps");
  run->add_option("--reducer", spec.reducer, "streaming: shell command for reduces");
  run->add_flag("--no-locality", spec.noLocality, "place maps without regard to their data");
  run->add_flag("--append-output", spec.appendOutput,
                "every reduce appends its lines as records to OUTPUT/records (read it with "
                "`cairn cat --records`), instead of one part file each");
  run->add_option("--task-timeout", taskTimeout,
                  "seconds before a silent worker's tasks run "
                  "again")
      ->capture_default_str();
  run->add_option("--max-attempts", spec.maxAttempts, "failures of one task that fail the job")
      ->capture_default_str();
  run->add_flag("--json", json, "print the report as JSON");

  auto jobs = app.add_subcommand("jobs", "list the coordinator's recent jobs");
  jobs->add_option("--coordinator", coordinatorAddr, "the coordinator's HOST:PORT")
      ->capture_default_str();
  jobs->add_flag("--json", json, "JSON output");

  auto kill = app.add_subcommand("kill", "end a running job as failed (its output goes)");
  uint64_t killId = 0;
  kill->add_option("--coordinator", coordinatorAddr, "the coordinator's HOST:PORT")
      ->capture_default_str();
  kill->add_option("JOB", killId, "the job's number (see `jobs`)")->required();

  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags, /*server=*/true);
  CLI11_PARSE(app, argc, argv);
  captureSighup();
  auto loaded = loadSecurity(securityFlags);
  if (!loaded.ok()) {
    logError("{}", loaded.status.message());
    return 2;
  }
  security = loaded.value;

  if (coordinator->parsed()) return runCoordinator(master, listen, portFile, localityWait, http);
  if (worker->parsed()) {
    wopts.mapMemory = mapMemoryMiB << 20;
    wopts.sortMemory = sortMemoryMiB << 20;
    return runWorker(wopts, workerListen, portFile);
  }
  if (jobs->parsed()) return listJobs(coordinatorAddr, json);
  if (kill->parsed()) return killJob(coordinatorAddr, killId);

  bool streaming = !spec.mapper.empty() || !spec.reducer.empty();
  if (streaming == !job.empty()) {
    fmt::print(stderr, "cairn-mapreduce: give either --job or --mapper and --reducer\n");
    return 2;
  }
  if (job == "wordcount") spec.kind = JobKind::WORD_COUNT;
  if (job == "index") spec.kind = JobKind::INVERTED_INDEX;
  if (job == "grep") spec.kind = JobKind::GREP;
  if (streaming) spec.kind = JobKind::STREAMING;
  spec.taskTimeoutMs = static_cast<uint32_t>(std::clamp(taskTimeout, 0.0, 86400.0) * 1000);
  // Relative paths start at the root, as with `cairn`.
  auto absolute = [](const std::string& p) { return p.empty() || p[0] != '/' ? "/" + p : p; };
  spec.output = absolute(spec.output);
  for (auto& in : spec.inputs) in = absolute(in);
  spec.uid = getuid();
  spec.gid = getgid();
  Status valid = validateSpec(spec);
  if (!valid.ok()) {
    fmt::print(stderr, "cairn-mapreduce: {}\n", valid.message());
    return 2;
  }
  return runJob(coordinatorAddr, spec, json);
}
