// cairn: the user and admin command line. Parses flags, builds the client, dispatches.

#include <ifaddrs.h>
#include <kj/async-io.h>
#include <netdb.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <system_error>

#include "commands.h"
#include "log.h"
#include "security.h"

namespace {

// This host's addresses, so that reads prefer a replica on the same machine.
std::vector<std::string> localHosts() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    char host[NI_MAXHOST];
    socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (getnameinfo(i->ifa_addr, len, host, sizeof(host), nullptr, 0, NI_NUMERICHOST) == 0) {
      out.push_back(host);
    }
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  CLI::App app{"cairn: use and administer a Cairn cluster"};
  app.require_subcommand(1);
  const char* envMaster = getenv("CAIRN_MASTER");
  std::string master = envMaster ? envMaster : "127.0.0.1:7700";
  std::string host;
  app.add_option("--master", master, "the master's HOST:PORT (also CAIRN_MASTER)")
      ->capture_default_str();
  app.add_option("--host", host, "this host's name as chunkservers advertise it (for locality)");

  std::string a, b;
  int replication = 0;
  bool flagR = false, flagL = false, flagP = false, flagF = false, json = false;

  auto put = app.add_subcommand("put", "copy a local file into the cluster");
  put->add_option("-r,--replication", replication,
                  "replicas of each chunk (default: the "
                  "directory's goal)");
  put->add_flag("-f,--force", flagF, "overwrite an existing file");
  put->add_option("LOCAL", a)->required();
  put->add_option("PATH", b)->required();
  auto cp = app.add_subcommand("cp", "copy a file inside the cluster (by the chunkservers)");
  cp->add_flag("-f,--force", flagF, "overwrite an existing file");
  cp->add_option("SRC", a)->required();
  cp->add_option("DST", b)->required();
  auto snapshot = app.add_subcommand(
      "snapshot", "copy a file or directory tree in moments: chunks are shared until written");
  snapshot->add_option("SRC", a)->required();
  snapshot->add_option("DST", b)->required();
  auto get = app.add_subcommand("get", "copy a file out of the cluster");
  get->add_option("PATH", a)->required();
  get->add_option("LOCAL", b)->required();
  auto cat = app.add_subcommand("cat", "write a file to standard output");
  std::vector<std::string> paths;
  cat->add_option("PATH", paths, "one or more files, written one after another")->required();
  bool records = false;
  cat->add_flag("--records", records,
                "the files hold records (cairn append): write each record's payload once, "
                "skipping padding and duplicates");
  auto append = app.add_subcommand(
      "append", "append standard input to a file as records, by atomic record append");
  size_t recordSize = 0;
  append->add_option("--record-size", recordSize,
                     "records of N bytes each (default: one record per line)");
  append->add_option("PATH", a)->required();
  auto ls = app.add_subcommand("ls", "list a directory");
  ls->add_flag("-l", flagL, "long format");
  ls->add_flag("--json", json, "JSON output");
  ls->add_option("PATH", a)->default_val("/");
  auto st = app.add_subcommand("stat", "show a file's attributes");
  st->add_flag("--json", json, "JSON output");
  st->add_option("PATH", a)->required();
  auto mkdir = app.add_subcommand("mkdir", "make a directory");
  mkdir->add_flag("-p,--parents", flagP, "make parents as needed; no error if it exists");
  mkdir->add_option("PATH", a)->required();
  auto rm = app.add_subcommand("rm", "remove a file, or a directory with -r");
  rm->add_flag("-r,-R,--recursive", flagR, "remove directories and their contents");
  rm->add_option("PATH", a)->required();
  auto mv = app.add_subcommand("mv", "rename or move a file or directory");
  mv->add_option("SRC", a)->required();
  mv->add_option("DST", b)->required();
  auto setrep = app.add_subcommand("setrep", "set a file's replication goal");
  setrep->add_option("N", replication)->required();
  setrep->add_option("PATH", a)->required();
  auto locate = app.add_subcommand("locate", "show where a file's chunks are");
  locate->add_flag("--json", json, "JSON output");
  locate->add_option("PATH", a)->required();
  auto fsck = app.add_subcommand(
      "fsck", "files under PATH whose chunks are missing, corrupt or under-replicated");
  fsck->add_flag("--json", json, "JSON output");
  fsck->add_option("PATH", a)->default_val("/");
  auto df = app.add_subcommand("df", "the cluster's size, use and room");
  df->add_flag("--json", json, "JSON output");
  auto du = app.add_subcommand("du", "bytes under each entry of PATH, and with their replicas");
  bool flagS = false, flagH = false;
  du->add_flag("-s,--summary", flagS, "one line for PATH itself");
  du->add_flag("-H,--human", flagH, "sizes as 1.5 GiB");
  du->add_flag("--json", json, "JSON output");
  du->add_option("PATH", a)->default_val("/");
  auto servers = app.add_subcommand("servers", "list the chunkservers");
  servers->add_flag("--json", json, "JSON output");
  auto trash = app.add_subcommand("trash", "deleted files, restorable until they expire");
  trash->require_subcommand(1);
  auto trashLs = trash->add_subcommand("ls", "list the trash");
  trashLs->add_flag("--json", json, "JSON output");
  auto trashRestore = trash->add_subcommand("restore", "put a deleted file back where it was");
  trashRestore->add_option("PATH", a)->required();
  auto admin = app.add_subcommand("admin", "cluster administration");
  admin->require_subcommand(1);
  bool wait = false;
  double threshold = 0.1, timeout = 3600;
  auto decom = admin->add_subcommand("decommission",
                                     "copy every chunk of a chunkserver "
                                     "elsewhere, then report it safe to remove");
  decom->add_option("ADDR", a)->required();
  decom->add_flag("--wait", wait, "wait until drained");
  decom->add_option("--timeout", timeout, "seconds to wait at most")->capture_default_str();
  auto bal = admin->add_subcommand("balance", "move replicas from fuller to emptier chunkservers");
  bal->add_option("--threshold", threshold,
                  "acceptable spread of chunk counts, as a share of "
                  "the average")
      ->capture_default_str();
  bal->add_flag("--wait", wait, "wait until balanced");
  bal->add_option("--timeout", timeout, "seconds to wait at most")->capture_default_str();
  auto report = admin->add_subcommand(
      "report", "capacity, files, chunk health, safe mode and every chunkserver");
  report->add_flag("--json", json, "JSON output");
  auto health = admin->add_subcommand("health", "safe mode and replication state");
  health->add_flag("--json", json, "JSON output");
  auto safemode = admin->add_subcommand(
      "safemode", "get, enter or leave safe mode (entered: read only until left)");
  std::string safeModeAction;
  safemode->add_option("ACTION", safeModeAction, "get, enter or leave")
      ->required()
      ->check(CLI::IsMember({"get", "enter", "leave"}));
  safemode->add_flag("--json", json, "JSON output");
  auto mastersCmd = admin->add_subcommand(
      "masters", "each master: address, role (active or standby), epoch, how far behind");
  mastersCmd->add_flag("--json", json, "JSON output");
  auto failoverCmd =
      admin->add_subcommand("failover", "the active master hands over to a standby in sync");
  auto ca = admin->add_subcommand("ca", "the cluster's certificate authority");
  ca->require_subcommand(1);
  int days = 0;
  auto caInit = ca->add_subcommand("init", "make a new cluster CA in DIR (ca.pem, ca-key.pem)");
  caInit->add_option("DIR", a)->required();
  caInit->add_option("--days", days, "validity of the CA certificate (default 3650)");
  auto cert = admin->add_subcommand("cert", "certificates of the cluster's hosts and users");
  cert->require_subcommand(1);
  auto issue = cert->add_subcommand(
      "issue", "issue a certificate into --out (cert.pem, key.pem 0600, ca.pem)");
  std::string caDir, role, name, out, gidList;
  std::vector<std::string> hosts;
  uint32_t uid = NOBODY;
  bool allowRoot = false;
  issue->add_option("--ca", caDir, "the CA's directory")->required();
  issue->add_option("--role", role, "master, chunkserver, mount, worker, admin or user")
      ->required();
  issue->add_option("--name", name, "the holder's name (a host or a user)")->required();
  issue->add_option("--uid", uid, "user and worker certificates: the uid calls are made as");
  issue->add_option("--gids", gidList, "their groups, comma-separated, the primary first");
  issue->add_option("--host", hosts, "an address or DNS name the holder serves at (repeat)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  issue->add_flag("--allow-root", allowRoot,
                  "mounts and workers: root on the holder's host is root (default: nobody)");
  issue->add_option("--days", days, "validity (default 365)");
  issue->add_option("--out", out, "directory to write into")->required();
  SecurityFlags securityFlags;
  addSecurityFlags(app, securityFlags);
  CLI11_PARSE(app, argc, argv);

  if (*caInit) return cmdCaInit(a, days > 0 ? days : 3650);
  if (*issue) {
    CertRequest request;
    auto parsed = parseRole(role);
    if (!parsed) {
      fprintf(stderr, "cairn: unknown role '%s'\n", role.c_str());
      return 2;
    }
    request.identity.role = *parsed;
    request.identity.name = name;
    request.identity.uid = uid;
    request.identity.allowRoot = allowRoot;
    for (size_t at = 0; at < gidList.size();) {
      size_t comma = gidList.find(',', at);
      if (comma == std::string::npos) comma = gidList.size();
      try {
        request.identity.gids.push_back(
            static_cast<uint32_t>(std::stoul(gidList.substr(at, comma - at))));
      } catch (const std::exception&) {
        fprintf(stderr, "cairn: --gids: '%s' is not a list of numbers\n", gidList.c_str());
        return 2;
      }
      at = comma + 1;
    }
    if (*parsed == Role::ADMIN) request.identity.uid = 0;
    request.hosts = hosts;
    request.days = days > 0 ? days : 365;
    return cmdCertIssue(caDir, request, out);
  }

  signal(SIGPIPE, SIG_IGN);
  setLogLevel(LogLevel::WARN);
  setLogComponent("cairn");
  try {
    auto io = kj::setupAsyncIo();
    auto security = loadSecurity(securityFlags);
    if (!security.ok()) {
      fprintf(stderr, "cairn: %s\n", security.status.message().c_str());
      return 2;
    }
    ClientOptions options;
    options.master = master;
    options.security = security.value;
    // With several masters a command waits out a failover; with one, a master that is down
    // is reported at once.
    if (master.find(',') == std::string::npos) options.masterRetryFor = 2 * kj::SECONDS;
    if (!security.value.tls) {
      // Plaintext on a trusted host: calls are made for whoever runs this.
      Caller me{static_cast<uint32_t>(getuid()), {static_cast<uint32_t>(getgid())}};
      gid_t groups[64];
      int n = getgroups(64, groups);
      for (int i = 0; i < n; ++i) {
        if (groups[i] != getgid()) me.gids.push_back(groups[i]);
      }
      options.defaultCaller = me;
    }
    options.localHosts = localHosts();
    if (!host.empty()) options.localHosts.push_back(host);
    if (const char* h = getenv("CAIRN_HOST")) options.localHosts.push_back(h);
    options.seed = static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ull ^
                   static_cast<uint64_t>(time(nullptr));
    Client client(options, io.provider->getNetwork(), io.provider->getTimer());
    FileCache files(client);
    CliContext c{client, files, io.waitScope};
    c.progress = isatty(STDERR_FILENO);
    auto path = [](const std::string& p) { return p.empty() || p[0] != '/' ? "/" + p : p; };
    // A command that changed the namespace is done once the change is on the masters'
    // disks (they sync by themselves within 10 ms; this waits for it).
    auto synced = [&c](int rc) {
      if (rc != 0) return rc;
      Status s = c.client.syncMetadata().wait(c.waitScope);
      if (s.ok()) return 0;
      fprintf(stderr, "cairn: the change is made but not yet on disk: %s\n", s.toString().c_str());
      return 1;
    };
    if (*put) return synced(cmdPut(c, a, path(b), static_cast<uint8_t>(replication), flagF));
    if (*get) return cmdGet(c, path(a), b);
    if (*cp) return synced(cmdCp(c, path(a), path(b), flagF));
    if (*snapshot) return synced(cmdSnapshot(c, path(a), path(b)));
    if (*cat) {
      int rc = 0;
      for (auto& p : paths)
        rc = std::max(rc, records ? cmdCatRecords(c, path(p)) : cmdCat(c, path(p)));
      return rc;
    }
    if (*append) return synced(cmdAppend(c, path(a), recordSize, stdin));
    if (*ls) return cmdLs(c, path(a), flagL, json);
    if (*st) return cmdStat(c, path(a), json);
    if (*mkdir) return synced(cmdMkdir(c, path(a), flagP));
    if (*rm) return synced(cmdRm(c, path(a), flagR));
    if (*mv) return synced(cmdMv(c, path(a), path(b)));
    if (*setrep) return synced(cmdSetrep(c, replication, path(a)));
    if (*locate) return cmdLocate(c, path(a), json);
    if (*servers) return cmdServers(c, json);
    if (*fsck) return cmdFsck(c, path(a), json);
    if (*df) return cmdDf(c, json);
    if (*du) return cmdDu(c, path(a), flagS, flagH, json);
    if (*report) return cmdReport(c, json);
    if (*trashLs) return cmdTrashList(c, json);
    if (*trashRestore) return synced(cmdTrashRestore(c, path(a)));
    if (*decom) return cmdDecommission(c, a, wait, timeout);
    if (*bal) return cmdBalance(c, threshold, wait, timeout);
    if (*health) return cmdHealth(c, json);
    if (*safemode) return cmdSafeMode(c, safeModeAction, json);
    if (*mastersCmd) return cmdMasters(c, json);
    if (*failoverCmd) return cmdFailover(c);
  } catch (const kj::Exception& e) {
    fprintf(stderr, "cairn: %s\n", e.getDescription().cStr());
    return 1;
  } catch (const std::system_error& e) {
    // A reader that went away (`cairn ls / | head`) ends the command quietly, with the
    // status a shell shows for a command that SIGPIPE ended.
    if (e.code().value() == EPIPE) return PIPE_CLOSED;
    fprintf(stderr, "cairn: %s\n", e.what());
    return 1;
  }
  return 2;
}
