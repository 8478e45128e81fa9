#include "cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <leveldb/helpers/memenv.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "address.h"

namespace cairn::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "cairn-test-XXXXXX").string();
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) throw std::runtime_error("mkdtemp failed");
  dir = made;
}

TempDir::~TempDir() {
  if (getenv("CAIRN_KEEP_TEST_DIR") != nullptr) {
    fprintf(stderr, "kept %s (CAIRN_KEEP_TEST_DIR)\n", dir.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string randomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// --- certificates ---

TestCa::TestCa() : caDir(temp.path() + "/ca") {
  Status s = initCa(caDir, 30);
  if (!s.ok()) ADD_FAILURE() << "test CA: " << s.toString();
}

std::string TestCa::issue(Role role, const std::string& name, std::vector<std::string> hosts,
                          uint32_t uid, std::vector<uint32_t> gids, bool allowRoot, int days) {
  CertRequest r;
  r.identity.role = role;
  r.identity.name = name;
  r.identity.uid = uid;
  r.identity.gids = std::move(gids);
  r.identity.allowRoot = allowRoot;
  r.hosts = std::move(hosts);
  r.days = days;
  std::string out = temp.path() + "/cert" + std::to_string(issued++) + "-" + name;
  Status s = issueCert(caDir, r, out);
  if (!s.ok()) ADD_FAILURE() << "issuing a test certificate: " << s.toString();
  return out;
}

RpcSecurity TestCa::security(Role role, const std::string& name, std::vector<std::string> hosts) {
  RpcSecurity security;
  auto tls = TlsCredentials::load(issue(role, name, std::move(hosts)));
  if (!tls.ok()) {
    ADD_FAILURE() << "loading a test certificate: " << tls.status.toString();
    return security;
  }
  security.tls = std::shared_ptr<TlsCredentials>(std::move(tls.value));
  return security;
}

// --- in-process cluster ---

InProcessCluster::InProcessCluster(kj::AsyncIoContext& io, size_t count, uint64_t chunkSize,
                                   const std::function<void(MasterOptions&)>& adjust)
    : io(io), memEnv(leveldb::NewMemEnv(leveldb::Env::Default())) {
  auto& network = io.provider->getNetwork();
  MasterOptions options;
  options.dataDir = "/master";
  options.metaEnv = memEnv.get();
  options.chunkSize = chunkSize;
  options.heartbeatInterval = 200 * kj::MILLISECONDS;
  if (adjust) adjust(options);
  masterPtr = std::make_unique<Master>(options, io.provider->getTimer(), clock);
  auto listener = network.parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  masterAddr = "127.0.0.1:" + std::to_string(listener->getPort());
  masterRpc = kj::heap<RpcServer>(
      [this](const Identity& peer) { return masterPtr->bootstrap(peer); }, kj::mv(listener),
      io.provider->getTimer(), ca.security(Role::MASTER, "master", {"127.0.0.1"}));
  for (size_t i = 0; i < count; ++i) {
    auto s = std::make_unique<Server>();
    std::string host = "127.0.0." + std::to_string(i + 2);
    auto l = network.parseAddress(host, 0).wait(io.waitScope)->listen();
    s->address = host + ":" + std::to_string(l->getPort());
    s->disk = std::make_unique<MemDisk>(uint64_t{8} << 30);
    ChunkserverOptions co;
    co.address = s->address;
    co.dataDirs = {"/data"};
    co.master = masterAddr;
    co.reconnectDelay = 100 * kj::MILLISECONDS;
    co.clock = &clock;  // the master's: tokens expire by it
    co.security = ca.security(Role::CHUNKSERVER, "cs" + std::to_string(i), {host});
    s->node = std::make_unique<Chunkserver>(co, *s->disk, io.provider->getTimer(), network);
    Chunkserver* node = s->node.get();
    s->rpc = kj::heap<RpcServer>([node](const Identity& peer) { return node->capabilityFor(peer); },
                                 kj::mv(l), io.provider->getTimer(), co.security);
    s->node->start().wait(io.waitScope);
    servers.push_back(std::move(s));
  }
  for (int i = 0; i < 500; ++i) {
    size_t live = 0;
    for (auto& v : masterPtr->chunkManager().servers()) live += v.live;
    if (live == count) break;
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  clientPtr = newClient();
}

std::unique_ptr<Client> InProcessCluster::newClient(
    const std::function<void(ClientOptions&)>& adjust) {
  ClientOptions copts;
  copts.master = masterAddr;
  copts.retryFor = 5 * kj::SECONDS;
  copts.security = ca.security(Role::ADMIN, "admin");
  if (adjust) adjust(copts);
  return std::make_unique<Client>(copts, io.provider->getNetwork(), io.provider->getTimer());
}

InProcessCluster::~InProcessCluster() {
  clientPtr.reset();
  servers.clear();
  masterRpc = nullptr;
  masterPtr.reset();
}

void InProcessCluster::stopChunkserver(size_t i) {
  servers[i]->rpc = nullptr;
  servers[i]->node.reset();
}

// --- process cluster ---

std::string ProcessCluster::binary(const std::string& name) {
  const char* dir = getenv("CAIRN_BUILD_DIR");
  // Without CAIRN_BUILD_DIR: the build directory that holds this test (build/tests/x).
  std::string base =
      dir ? dir
          : std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path().string();
  if (name == "cairn-master") return base + "/master/cairn-master";
  if (name == "cairn-chunkserver") return base + "/chunkserver/cairn-chunkserver";
  if (name == "cairn") return base + "/cli/cairn";
  if (name == "cairn-mount") return base + "/fuse/cairn-mount";
  if (name == "cairn-mapreduce") return base + "/mapreduce/cairn-mapreduce";
  return base + "/" + name;
}

static void killAndReap(pid_t& pid, int signal);

ProcessCluster::ProcessCluster(uint64_t chunkSize, std::vector<std::string> masterFlags)
    : chunkSize(chunkSize), masterFlags(std::move(masterFlags)) {
  // Tools started by tests (workers, coordinators) serve on loopback addresses too.
  std::vector<std::string> loopback;
  for (int i = 1; i <= 16; ++i) loopback.push_back("127.0.0." + std::to_string(i));
  adminCreds = ca.issue(Role::ADMIN, "admin", loopback, 0, {0});
  masterCreds = ca.issue(Role::MASTER, "master", {"127.0.0.1"});
  mountCreds = ca.issue(Role::MOUNT, "mount", {}, NOBODY, {}, /*allowRoot=*/true);
  // Tools run by tests (cairn, cairn-mapreduce, workers) act as an admin.
  setenv("CAIRN_CREDENTIALS", adminCreds.c_str(), 1);
}

ProcessCluster::~ProcessCluster() {
  while (!mounts.empty()) unmount(mounts.back().address);
  for (auto& [name, proc] : daemons) killAndReap(proc.pid, SIGKILL);
  for (size_t i = 0; i < chunkservers.size(); ++i) killChunkserver(i);
  killMaster();
  for (size_t i = 0; i < haMasters.size(); ++i) killMasterAt(i);
  killZooKeeper();
}

// Forks and execs argv with stdout and stderr to files (appended or truncated); the child
// dies with this process.
static pid_t forkExec(const std::vector<std::string>& argv, const std::string& outFile,
                      const std::string& errFile, bool append) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC);
    int o = open(outFile.c_str(), flags, 0644);
    int e = errFile == outFile ? o : open(errFile.c_str(), flags, 0644);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

pid_t ProcessCluster::spawn(const std::vector<std::string>& argv, const std::string& logFile) {
  return forkExec(argv, logFile, logFile, true);
}

std::string ProcessCluster::scratchFile(const std::string& what) {
  static std::atomic<int> counter = 0;
  return dir() + "/" + what + std::to_string(++counter);
}

std::string ProcessCluster::waitForPortFile(const std::string& path, pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    std::string text = readFile(path);
    if (!text.empty() && text.back() == '\n') {
      text.pop_back();
      return text;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "process " << pid << " did not write " << path;
  return "";
}

std::vector<std::string> ProcessCluster::masterArgv(const std::string& name,
                                                    const std::string& listen) {
  std::string portFile = dir() + "/" + name + ".port";
  unlink(portFile.c_str());
  std::vector<std::string> argv = {binary("cairn-master"),
                                   "--listen",
                                   listen,
                                   "--data",
                                   dir() + "/" + name,
                                   "--chunk-size",
                                   std::to_string(chunkSize),
                                   "--port-file",
                                   portFile,
                                   "--heartbeat",
                                   "0.5",
                                   "--credentials",
                                   masterCreds,
                                   "--http",
                                   "127.0.0.1:0",
                                   "--http-port-file",
                                   dir() + "/" + name + ".http"};
  argv.insert(argv.end(), masterFlags.begin(), masterFlags.end());
  return argv;
}

void ProcessCluster::startMaster() {
  auto argv = masterArgv("master", masterAddr.empty() ? "127.0.0.1:0" : masterAddr);
  masterProc.pid = spawn(argv, dir() + "/master.log");
  masterAddr = waitForPortFile(dir() + "/master.port", masterProc.pid);
  masterProc.address = masterAddr;
}

void ProcessCluster::startChunkserver(size_t i) {
  if (chunkservers.size() <= i) chunkservers.resize(i + 1);
  if (chunkservers[i].credentials.empty()) {
    chunkservers[i].credentials =
        ca.issue(Role::CHUNKSERVER, "cs" + std::to_string(i), {"127.0.0." + std::to_string(i + 2)});
  }
  std::string portFile = dir() + "/cs" + std::to_string(i) + ".port";
  unlink(portFile.c_str());
  std::string listen = chunkservers[i].address.empty() ? "127.0.0." + std::to_string(i + 2) + ":0"
                                                       : chunkservers[i].address;
  std::vector<std::string> argv = {binary("cairn-chunkserver"),
                                   "--listen",
                                   listen,
                                   "--data",
                                   chunkserverDataDir(i),
                                   "--master",
                                   masterAddr,
                                   "--port-file",
                                   portFile,
                                   "--credentials",
                                   chunkservers[i].credentials,
                                   "--http",
                                   "127.0.0." + std::to_string(i + 2) + ":0",
                                   "--http-port-file",
                                   dir() + "/cs" + std::to_string(i) + ".http"};
  argv.insert(argv.end(), chunkserverFlags.begin(), chunkserverFlags.end());
  chunkservers[i].pid = spawn(argv, dir() + "/cs" + std::to_string(i) + ".log");
  chunkservers[i].address = waitForPortFile(portFile, chunkservers[i].pid);
}

std::string ProcessCluster::chunkserverDataDir(size_t i) const {
  return dir() + "/cs" + std::to_string(i);
}

static void killAndReap(pid_t& pid, int signal) {
  if (pid <= 0) return;
  kill(pid, signal);
  int status;
  waitpid(pid, &status, 0);
  pid = 0;
}

void ProcessCluster::killMaster(int signal) { killAndReap(masterProc.pid, signal); }

void ProcessCluster::startZooKeeper() {
  std::string zkDir = dir() + "/zk";
  std::filesystem::create_directories(zkDir + "/data");
  if (zkAddr.empty()) {
    // A free port: bound and released (ZooKeeper takes its port from its configuration).
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    zkAddr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    close(fd);
    writeFile(zkDir + "/zoo.cfg", "tickTime=500\ndataDir=" + zkDir +
                                      "/data\nclientPort=" + std::to_string(ntohs(a.sin_port)) +
                                      "\nclientPortAddress=127.0.0.1\nminSessionTimeout=1000\n"
                                      "maxSessionTimeout=60000\nadmin.enableServer=false\n");
  }
  zk.pid = spawn(
      {"/usr/bin/java", "-Xmx256m", "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
       "org.apache.zookeeper.server.quorum.QuorumPeerMain", zkDir + "/zoo.cfg"},
      zkDir + "/zk.log");
  // Ready once it accepts connections.
  int port = std::stoi(zkAddr.substr(zkAddr.rfind(':') + 1));
  for (int i = 0; i < 600; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    bool up = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    if (up) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "ZooKeeper did not start: " << readFile(zkDir + "/zk.log");
}

void ProcessCluster::killZooKeeper(int signal) { killAndReap(zk.pid, signal); }

void ProcessCluster::startHaMasters(size_t n, std::vector<std::string> flags) {
  haFlags = std::move(flags);
  if (zk.pid == 0) startZooKeeper();
  haMasters.resize(n);
  for (size_t i = 0; i < n; ++i) startMasterAt(i);
}

void ProcessCluster::startMasterAt(size_t i) {
  std::string name = "master" + std::to_string(i);
  Proc& p = haMasters.at(i);
  auto argv = masterArgv(name, p.address.empty() ? "127.0.0.1:0" : p.address);
  argv.push_back("--zookeeper");
  argv.push_back(zkAddr);
  argv.insert(argv.end(), haFlags.begin(), haFlags.end());
  p.pid = spawn(argv, dir() + "/" + name + ".log");
  p.address = waitForPortFile(dir() + "/" + name + ".port", p.pid);
  masterAddr.clear();
  for (auto& m : haMasters) {
    if (m.address.empty()) continue;
    masterAddr += (masterAddr.empty() ? "" : ",") + m.address;
  }
}

void ProcessCluster::killMasterAt(size_t i, int signal) {
  killAndReap(haMasters.at(i).pid, signal);
}

void ProcessCluster::signalMasterAt(size_t i, int signal) { kill(haMasters.at(i).pid, signal); }

int ProcessCluster::waitForActiveMaster(int timeoutMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  do {
    std::string out;
    cli({"admin", "masters", "--json"}, &out);
    for (size_t i = 0; i < haMasters.size(); ++i) {
      // Each object lists address before role (keys sorted).
      size_t at = out.find("\"" + haMasters[i].address + "\"");
      size_t end = out.find('}', at);
      if (at != std::string::npos &&
          out.substr(at, end - at).find("\"role\": \"active\"") != std::string::npos) {
        return static_cast<int>(i);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  return -1;
}

std::string ProcessCluster::startDaemon(const std::string& name,
                                        const std::vector<std::string>& argv,
                                        const std::string& portFile) {
  unlink(portFile.c_str());
  Proc& p = daemons[name];
  killAndReap(p.pid, SIGKILL);
  p.pid = spawn(argv, dir() + "/" + name + ".log");
  p.address = portFile.empty() ? "" : waitForPortFile(portFile, p.pid);
  return p.address;
}

void ProcessCluster::killDaemon(const std::string& name, int signal) {
  killAndReap(daemons.at(name).pid, signal);
}

void ProcessCluster::killChunkserver(size_t i, int signal) {
  killAndReap(chunkservers.at(i).pid, signal);
}

void ProcessCluster::waitForLiveChunkservers(size_t n) {
  for (int i = 0; i < 300; ++i) {
    std::string out;
    if (cli({"servers", "--json"}, &out) == 0) {
      size_t live = 0;
      for (size_t pos = 0; (pos = out.find("\"live\": true", pos)) != std::string::npos; ++pos) {
        ++live;
      }
      if (live >= n) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "fewer than " << n << " live chunkservers";
}

int ProcessCluster::cli(const std::vector<std::string>& args, std::string* out, std::string* err) {
  std::vector<std::string> argv = {binary("cairn"), "--master", masterAddr};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, out, err);
}

namespace {
std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

std::string ProcessCluster::masterHttp() { return firstLine(readFile(dir() + "/master.http")); }

std::string ProcessCluster::chunkserverHttp(size_t i) {
  return firstLine(readFile(dir() + "/cs" + std::to_string(i) + ".http"));
}

std::string ProcessCluster::fetch(const std::string& address, const std::string& path) {
  std::string out, err;
  run({"/usr/bin/curl", "-sSk", "--max-time", "10", "https://" + address + path}, &out, &err);
  return out;
}

double ProcessCluster::sample(const std::string& metrics, const std::string& series) {
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

int ProcessCluster::run(const std::vector<std::string>& argv, std::string* out, std::string* err) {
  std::string outFile = scratchFile("run") + ".out";
  std::string errFile = outFile + ".err";
  pid_t pid = forkExec(argv, outFile, errFile, false);
  int status = 0;
  waitpid(pid, &status, 0);
  if (out) *out = readFile(outFile);
  if (err) *err = readFile(errFile);
  unlink(outFile.c_str());
  unlink(errFile.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void ProcessCluster::put(const std::string& data, const std::string& path,
                         const std::vector<std::string>& flags) {
  std::string local = scratchFile("put");
  writeFile(local, data);
  std::vector<std::string> args = {"put"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back(local);
  args.push_back(path);
  std::string err;
  EXPECT_EQ(cli(args, nullptr, &err), 0) << "put " << path << ": " << err;
  unlink(local.c_str());
}

std::string ProcessCluster::get(const std::string& path) {
  std::string local = scratchFile("get");
  std::string err;
  EXPECT_EQ(cli({"get", path, local}, nullptr, &err), 0) << "get " << path << ": " << err;
  std::string data = readFile(local);
  unlink(local.c_str());
  return data;
}

}  // namespace cairn::testing

namespace cairn::testing {

static bool isMountPoint(const std::string& path) {
  std::string mounts = readFile("/proc/mounts");
  return mounts.find(" " + path + " ") != std::string::npos;
}

std::string ProcessCluster::mount(const std::string& options) {
  std::string path = dir() + "/mnt" + std::to_string(mounts.size());
  std::filesystem::create_directories(path);
  std::vector<std::string> argv = {binary("cairn-mount"), "--master", masterAddr, path, "-f",
                                   "--credentials",       mountCreds};
  argv.insert(argv.end(), mountFlags.begin(), mountFlags.end());
  if (!options.empty()) {
    argv.push_back("-o");
    argv.push_back(options);
  }
  pid_t pid = spawn(argv, path + ".log");
  mounts.push_back({pid, path, ""});
  for (int i = 0; i < 500 && !isMountPoint(path); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(isMountPoint(path)) << "cairn-mount did not mount " << path << ": "
                                  << readFile(path + ".log");
  return path;
}

void ProcessCluster::unmount(const std::string& path) {
  for (size_t i = 0; i < mounts.size(); ++i) {
    if (mounts[i].address != path) continue;
    if (isMountPoint(path)) {
      pid_t p = fork();
      if (p == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-z", path.c_str(), nullptr);
        _exit(127);
      }
      int status;
      waitpid(p, &status, 0);
    }
    // cairn-mount exits once unmounted; make sure of it.
    for (int k = 0; k < 300 && mounts[i].pid > 0 && waitpid(mounts[i].pid, nullptr, WNOHANG) == 0;
         ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_t pid = mounts[i].pid;
    if (pid > 0 && kill(pid, 0) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (isMountPoint(path)) umount2(path.c_str(), MNT_DETACH);
    mounts.erase(mounts.begin() + static_cast<long>(i));
    return;
  }
}

}  // namespace cairn::testing
