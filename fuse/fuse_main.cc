// cairn-mount: mounts a Cairn cluster. Parses flags, checks the master, mounts,
// daemonizes, serves the FUSE session on the client's event loop, and unmounts on
// SIGTERM/SIGINT or `fusermount3 -u`.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "blocking_client.h"
#include "cairn_fs.h"
#include "log.h"
#include "security.h"

namespace {

const char* USAGE =
    "usage: cairn-mount --master HOST:PORT MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION…]]\n"
    "  [--host NAME]   this host as chunkservers advertise it (reads prefer its replicas)\n"
    "  [--credentials DIR]  the mount's certificate (default: $CAIRN_CREDENTIALS); SIGHUP\n"
    "                  reloads it\n"
    "  [--insecure]    plaintext, for one trusted host (or CAIRN_INSECURE=1)\n"
    "options (-o): entry_timeout=SECONDS, attr_timeout=SECONDS (default 1),\n"
    "  negative_timeout=SECONDS (how long a name's absence may be cached; default\n"
    "  entry_timeout),\n"
    "  cache_timeout=SECONDS (how long the kernel may keep names and attributes while the\n"
    "  master tells this mount of other clients' changes; default 60, 0: never; a timeout\n"
    "  above set to 0 stays 0),\n"
    "  close_delay=SECONDS (0 to 10, default 0.02: releases of that time go to the master\n"
    "  in one call), standby_reads\n"
    "  (stat, lookup, readdir and locations from a standby master in sync; also\n"
    "  CAIRN_STANDBY_READS=1), and any FUSE mount option. The mount always has allow_other and "
    "default_permissions.\n";

struct Args {
  std::string master;
  std::string host;
  std::string mountpoint;
  bool foreground = false;
  bool debug = false;
  std::optional<bool> standbyReads;
  std::optional<double> negativeTimeout;  // as entry_timeout unless given
  std::vector<std::string> fuseOptions;
  cairn::MountOptions mount;
  cairn::SecurityFlags security;
};

bool parseOptions(const std::string& list, Args& a) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string opt =
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (opt.rfind("entry_timeout=", 0) == 0) {
      a.mount.entryTimeout = atof(opt.c_str() + 14);
    } else if (opt.rfind("attr_timeout=", 0) == 0) {
      a.mount.attrTimeout = atof(opt.c_str() + 13);
    } else if (opt.rfind("negative_timeout=", 0) == 0) {
      a.negativeTimeout = atof(opt.c_str() + 17);
    } else if (opt.rfind("cache_timeout=", 0) == 0) {
      a.mount.watchedTimeout = atof(opt.c_str() + 14);
    } else if (opt.rfind("close_delay=", 0) == 0) {
      a.mount.closeDelay = atof(opt.c_str() + 12);
    } else if (opt == "standby_reads") {
      a.standbyReads = true;
    } else if (!opt.empty()) {
      a.fuseOptions.push_back(opt);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  a.mount.negativeTimeout = a.negativeTimeout.value_or(a.mount.entryTimeout);
  return a.mount.entryTimeout >= 0 && a.mount.attrTimeout >= 0 && a.mount.negativeTimeout >= 0 &&
         a.mount.closeDelay >= 0 && a.mount.closeDelay <= 10 && a.mount.watchedTimeout >= 0;
}

bool parseArgs(int argc, char** argv, Args& a) {
  if (const char* m = getenv("CAIRN_MASTER")) a.master = m;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--master") {
      const char* v = next();
      if (!v) return false;
      a.master = v;
    } else if (arg == "--host") {
      const char* v = next();
      if (!v) return false;
      a.host = v;
    } else if (arg == "--credentials") {
      const char* v = next();
      if (!v) return false;
      a.security.credentials = v;
    } else if (arg == "--insecure") {
      a.security.insecure = true;
    } else if (arg == "-f") {
      a.foreground = true;
    } else if (arg == "-d") {
      a.debug = a.foreground = true;
    } else if (arg == "-o") {
      const char* v = next();
      if (!v || !parseOptions(v, a)) return false;
    } else if (arg == "-h" || arg == "--help") {
      return false;
    } else if (a.mountpoint.empty() && arg[0] != '-') {
      a.mountpoint = arg;
    } else {
      return false;
    }
  }
  return !a.master.empty() && !a.mountpoint.empty();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  Args args;
  if (!parseArgs(argc, argv, args)) {
    fputs(USAGE, stderr);
    return 2;
  }
  setLogComponent("cairn-mount");
  auto security = loadSecurity(args.security);
  if (!security.ok()) {
    fprintf(stderr, "cairn-mount: %s\n", security.status.message().c_str());
    return 2;
  }
  ClientOptions clientOptions;
  clientOptions.master = args.master;
  clientOptions.security = security.value;
  if (!args.host.empty()) clientOptions.localHosts.push_back(args.host);
  clientOptions.localHosts.push_back("127.0.0.1");
  clientOptions.seed = static_cast<uint64_t>(getpid());
  clientOptions.standbyReads = args.standbyReads;
  // A directory's attributes as this mount's last change in it left them, for as long as
  // the kernel may cache attributes.
  clientOptions.dirAttrTtl = static_cast<int64_t>(args.mount.attrTimeout * 1e9) * kj::NANOSECONDS;
  // The kernel's releases of close_delay go to the master in one call: a file created and
  // closed costs two master calls (the lookup of its name and the create), not three.
  clientOptions.closeDelay = static_cast<int64_t>(args.mount.closeDelay * 1e9) * kj::NANOSECONDS;

  // SIGTERM and SIGINT end the session on the loop that serves it; SIGHUP reloads the
  // certificate (waited for by a thread). All three stay blocked in every thread, which
  // is why this comes before the first thread starts.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Refuse to mount a cluster that cannot be reached: say so now, not as EIO later.
  {
    BlockingClient probe(clientOptions);
    auto stats = probe.run([](Client& c, FileCache&) { return c.statfs(); });
    if (!stats.ok()) {
      fprintf(stderr, "cairn-mount: %s\n", stats.status.toString().c_str());
      return 1;
    }
  }

  // Several masters are named with '+' between them: FUSE splits its options at commas.
  std::string fsname = args.master;
  std::replace(fsname.begin(), fsname.end(), ',', '+');
  std::string fuseOpts =
      "fsname=cairn:" + fsname + ",subtype=cairn,allow_other,default_permissions";
  for (auto& o : args.fuseOptions) fuseOpts += "," + o;
  std::vector<std::string> fuseArgv = {argv[0], "-o", fuseOpts};
  if (args.debug) fuseArgv.push_back("-d");
  std::vector<char*> cargv;
  for (auto& s : fuseArgv) cargv.push_back(s.data());
  fuse_args fa = FUSE_ARGS_INIT(static_cast<int>(cargv.size()), cargv.data());

  CairnFs fs;
  fs.options = args.mount;
  fuse_lowlevel_ops ops = cairnOperations();
  fuse_session* se = fuse_session_new(&fa, &ops, sizeof(ops), &fs);
  if (se == nullptr) return 1;
  int rc = 1;
  if (fuse_session_mount(se, args.mountpoint.c_str()) == 0) {
    fuse_daemonize(args.foreground ? 1 : 0);
    // The client's loop thread starts after daemonizing: fork keeps no threads.
    std::thread([hup, tls = security.value.tls]() {
      for (int sig = 0; sigwait(&hup, &sig) == 0;) {
        if (!tls) continue;
        Status s = tls->reload();
        if (s.ok()) {
          logInfo("SIGHUP: credentials in {} reloaded", tls->directory());
        } else {
          logError("SIGHUP: credentials not reloaded, the old ones stay: {}", s.message());
        }
      }
    }).detach();
    // Before the client, which tells it of changes until it is gone.
    std::unique_ptr<KernelCache> kernelCache;
    if (args.mount.watchedTimeout > 0) kernelCache = std::make_unique<KernelCache>(se);
    {
      BlockingClient client(clientOptions);
      fs.session = se;
      fs.kernelCache = kernelCache.get();
      logInfo("mounted {} at {}", args.master, args.mountpoint);
      try {
        client.run([&](Client& c, FileCache& fc) {
          if (kernelCache) c.watchNamespace(kernelCache.get());
          return serveSession(fs, c, fc, client.eventPort()).then([&c]() {
            return c.sendCloses();  // the last releases: the master ends those opens now
          });
        });
        rc = 0;
      } catch (const kj::Exception& e) {
        logError("serving the mount: {}", e.getDescription().cStr());
      }
      // Every request was answered (those under way with EIO), so no notification waits
      // for one; one that still hangs leaves the cache alive, as the process ends.
      if (kernelCache && !kernelCache->stop(std::chrono::seconds(2))) {
        logWarn("a kernel cache notification did not finish; leaving it");
        (void)kernelCache.release();
      }
      fuse_session_unmount(se);
    }
    logInfo("unmounted {}", args.mountpoint);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&fa);
  return rc;
}
