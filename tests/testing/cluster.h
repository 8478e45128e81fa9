#pragma once
// Test helpers: an async fixture, a settable clock, a whole cluster in one process (one
// event loop, loopback sockets, in-memory disks), and a cluster of real processes.

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <leveldb/env.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "certs.h"
#include "chunkserver.h"
#include "client.h"
#include "test_disks.h"
#include "master.h"

namespace cairn::testing {

class FakeClock final : public kj::Clock {
 public:
  kj::Date now() const override { return current; }
  void set(int64_t secondsSinceEpoch) {
    current = kj::UNIX_EPOCH + secondsSinceEpoch * kj::SECONDS;
  }
  kj::Date current = kj::UNIX_EPOCH + 1'700'000'000 * kj::SECONDS;
};

// A unique, empty temporary directory removed (recursively) when this dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return dir; }

 private:
  std::string dir;
};

// A cluster CA in a temporary directory, and certificates it issues (TLS is on in every
// test, as it is by default).
class TestCa {
 public:
  TestCa();
  const std::string& dir() const { return caDir; }
  // Issues a certificate into a new directory under the CA's and returns the directory.
  std::string issue(Role role, const std::string& name, std::vector<std::string> hosts = {},
                    uint32_t uid = NOBODY, std::vector<uint32_t> gids = {}, bool allowRoot = false,
                    int days = 30);
  // RpcSecurity with a new certificate.
  RpcSecurity security(Role role, const std::string& name, std::vector<std::string> hosts = {});

 private:
  TempDir temp;
  std::string caDir;
  int issued = 0;
};

// Master and chunkservers on one event loop, talking over real loopback sockets.
class InProcessCluster {
 public:
  // `adjust` may change the master's options.
  InProcessCluster(kj::AsyncIoContext& io, size_t chunkservers, uint64_t chunkSize,
                   const std::function<void(MasterOptions&)>& adjust = nullptr);
  ~InProcessCluster();

  Client& client() { return *clientPtr; }
  // Another client of the cluster (an admin's), on the same loop; `adjust` may change its
  // options.
  std::unique_ptr<Client> newClient(const std::function<void(ClientOptions&)>& adjust = nullptr);
  Master& master() { return *masterPtr; }
  std::string masterAddress() const { return masterAddr; }
  // The cluster's CA: tests issue certificates of other roles with it.
  TestCa& certificates() { return ca; }
  Chunkserver& chunkserver(size_t i) { return *servers[i]->node; }
  MemDisk& disk(size_t i) { return *servers[i]->disk; }
  std::string chunkserverAddress(size_t i) const { return servers[i]->address; }
  // Stops serving chunkserver i (its connections drop; the master notices later).
  void stopChunkserver(size_t i);

 private:
  struct Server {
    std::string address;
    std::unique_ptr<MemDisk> disk;
    std::unique_ptr<Chunkserver> node;
    kj::Own<RpcServer> rpc;
  };
  kj::AsyncIoContext& io;
  TestCa ca;
  std::unique_ptr<leveldb::Env> memEnv;
  FakeClock clock;
  std::unique_ptr<Master> masterPtr;
  kj::Own<RpcServer> masterRpc;
  std::string masterAddr;
  std::vector<std::unique_ptr<Server>> servers;
  std::unique_ptr<Client> clientPtr;
};

// Real cairn-master / cairn-chunkserver processes on loopback, in a temp directory.
// Every process is killed when this dies (and, through PR_SET_PDEATHSIG, if the test
// process itself dies).
class ProcessCluster {
 public:
  explicit ProcessCluster(uint64_t chunkSize, std::vector<std::string> masterFlags = {});
  ~ProcessCluster();

  void startMaster();
  // Extra flags for every chunkserver started from now on.
  void setChunkserverFlags(std::vector<std::string> flags) { chunkserverFlags = std::move(flags); }
  // Starts chunkserver i on 127.0.0.<i+2>; waits until it is listening.
  void startChunkserver(size_t i);
  void killMaster(int signal = SIGKILL);
  void killChunkserver(size_t i, int signal = SIGKILL);
  // Waits until the master lists `n` live chunkservers.
  void waitForLiveChunkservers(size_t n);

  const std::string& masterAddress() const { return masterAddr; }
  std::string chunkserverAddress(size_t i) const { return chunkservers.at(i).address; }
  std::string chunkserverDataDir(size_t i) const;
  const std::string& dir() const { return temp.path(); }
  // The cluster's CA: tests issue certificates of other roles with it. Daemons, mounts and
  // cli() use their own certificates; tools started with run() inherit an admin's (through
  // CAIRN_CREDENTIALS).
  TestCa& certificates() { return ca; }
  const std::string& adminCredentials() const { return adminCreds; }
  const std::string& masterCredentials() const { return masterCreds; }
  pid_t masterPid() const { return masterProc.pid; }

  // High availability: a ZooKeeper server (Debian's, run from its jar in dir()/zk) and `n`
  // masters that elect one active. masterAddress() then names them all, comma separated,
  // and the chunkservers, mounts and cli() use them all.
  void startHaMasters(size_t n, std::vector<std::string> flags = {});
  void startZooKeeper();
  void killZooKeeper(int signal = SIGKILL);
  const std::string& zooKeeperAddress() const { return zkAddr; }
  // Master i of several: (re)started on its address, killed, signalled.
  void startMasterAt(size_t i);
  void killMasterAt(size_t i, int signal = SIGKILL);
  void signalMasterAt(size_t i, int signal);
  pid_t masterPidAt(size_t i) const { return haMasters.at(i).pid; }
  std::string masterAddressAt(size_t i) const { return haMasters.at(i).address; }
  // The index of the master that says it is active, waiting up to `timeoutMs`; -1 if none.
  int waitForActiveMaster(int timeoutMs);
  // Mount flags (after the mount point) for every mount made from now on.
  void setMountFlags(std::vector<std::string> flags) { mountFlags = std::move(flags); }

  // Runs `cairn --master ADDR args...`; returns its exit status, with its output.
  int cli(const std::vector<std::string>& args, std::string* out = nullptr,
          std::string* err = nullptr);

  // `cairn put [flags] LOCAL path` of `data` (through a temporary local file); a failure is
  // a test failure. From any thread.
  void put(const std::string& data, const std::string& path,
           const std::vector<std::string>& flags = {});
  // `cairn get` of `path`; a failure is a test failure and returns "". From any thread.
  std::string get(const std::string& path);

  // Runs a program to its end (from any thread); returns its exit status, with its output.
  int run(const std::vector<std::string>& argv, std::string* out = nullptr,
          std::string* err = nullptr);

  static std::string binary(const std::string& name);

  // The master's status page address (HOST:PORT), from the file it wrote at start.
  std::string masterHttp();
  // Chunkserver i's (HOST:PORT).
  std::string chunkserverHttp(size_t i);
  // GET https://ADDRESS/PATH with curl (the cluster's CA is not the system's: -k); "" when
  // it fails.
  std::string fetch(const std::string& address, const std::string& path);
  // The value of one sample (`name{labels}`) in /metrics text, or -1.
  static double sample(const std::string& metrics, const std::string& series);
  // That sample from the master's /metrics now.
  double masterSample(const std::string& series) {
    return sample(fetch(masterHttp(), "/metrics"), series);
  }

  // Starts another daemon (e.g. a MapReduce coordinator or worker) under `name`: `argv`
  // must make it write its address to `portFile` (unless that is ""). Returns that address. The
  // cluster ends it with the rest.
  std::string startDaemon(const std::string& name, const std::vector<std::string>& argv,
                          const std::string& portFile);
  void killDaemon(const std::string& name, int signal = SIGKILL);
  pid_t daemonPid(const std::string& name) const { return daemons.at(name).pid; }

  // Mounts the cluster with `cairn-mount -f` at a new directory; returns its path.
  std::string mount(const std::string& options = "");
  // Unmounts and ends the mount's process.
  void unmount(const std::string& path);

 private:
  struct Proc {
    pid_t pid = 0;
    std::string address;
    std::string credentials;  // chunkservers: their certificate's directory
  };
  pid_t spawn(const std::vector<std::string>& argv, const std::string& logFile);
  // A master's command line: its files under dir() are named `name` (.port, .http, data).
  std::vector<std::string> masterArgv(const std::string& name, const std::string& listen);
  // A new local file name in dir(), unique across threads.
  std::string scratchFile(const std::string& what);
  std::string waitForPortFile(const std::string& path, pid_t pid);

  TempDir temp;
  TestCa ca;
  std::string adminCreds;
  std::string masterCreds;
  std::string mountCreds;
  std::vector<std::string> mountFlags;
  uint64_t chunkSize;
  std::vector<std::string> masterFlags;
  std::vector<std::string> chunkserverFlags;
  Proc masterProc;
  std::string masterAddr;
  std::vector<Proc> haMasters;
  std::vector<std::string> haFlags;
  Proc zk;
  std::string zkAddr;
  std::vector<Proc> chunkservers;
  std::vector<Proc> mounts;  // address holds the mount point
  std::map<std::string, Proc> daemons;
};

// Reads a whole local file.
std::string readFile(const std::string& path);
void writeFile(const std::string& path, const std::string& data);
std::string randomBytes(size_t n, uint64_t seed);

}  // namespace cairn::testing
