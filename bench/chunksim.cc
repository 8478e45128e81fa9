// cairn-chunksim: the master's chunk manager at scale, with no disks and no network. A real
// namespace (LevelDB in a temporary directory) holds --chunks chunk records; --servers
// simulated chunkservers report three replicas of each, heartbeat every second, and answer
// every order at once. Measures, in CPU time of the master's loop:
//   - the registrations (each with a full chunk report) until safe mode ends;
//   - the first tick after safe mode (every chunk is looked at once, after a start);
//   - a heartbeat and an idle tick (nothing changed: the work a quiet cluster costs);
//   - one chunkserver's death: the tick that notices it and queues its chunks for repair,
//     then the ticks until every chunk is back at its goal (copies bounded per server).
// With --standby, the chunkservers register with a standby master instead (it keeps a
// mirror of their reports), whose memory is reported; it then takes over (timed), and the
// rest runs on the new active.
//
//   cairn-chunksim [--servers 1000] [--chunks 1000000] [--dir /var/tmp] [--standby]

#include <kj/async-io.h>
#include <kj/timer.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "chunk_manager.h"
#include "log.h"
#include "namespace.h"
#include "namespace_codec.h"
#include "namespace_store.h"

namespace {

using namespace cairn;

// Chunkservers that do whatever they are told, at once.
class Obedient final : public ReplicaControl {
 public:
  kj::Promise<Status> setVersion(uint64_t, uint64_t, uint64_t, bool, uint32_t) override {
    return Status::OK();
  }
  kj::Promise<Status> grantLease(uint64_t, uint64_t, uint64_t, uint32_t) override {
    return Status::OK();
  }
  kj::Promise<Status> truncate(uint64_t, uint64_t, uint64_t, uint32_t) override {
    return Status::OK();
  }
  kj::Promise<Status> replicate(uint64_t, uint64_t, uint64_t, const std::string&) override {
    ++copies;
    return Status::OK();
  }
  kj::Promise<Status> copyChunk(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t) override {
    return Status::OK();
  }
  uint64_t copies = 0;
};

class FixedClock final : public kj::Clock {
 public:
  kj::Date now() const override { return kj::UNIX_EPOCH + 1'700'000'000 * kj::SECONDS; }
};

double cpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

double rssMib() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// Resident memory now, in bytes.
double rssNow() {
  long pages = 0, resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  fclose(f);
  return static_cast<double>(resident) * sysconf(_SC_PAGESIZE);
}

constexpr size_t RACKS = 20;  // server s is on rack s % RACKS

std::string address(size_t server) {
  return fmt::format("10.{}.{}.{}:9400", server / 65536, server / 256 % 256, server % 256);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"the master's chunk manager at scale, with simulated chunkservers"};
  size_t servers = 1000, chunks = 1000000;
  std::string parent = "/var/tmp";
  app.add_option("--servers", servers, "simulated chunkservers")->check(CLI::Range(4, 100000));
  app.add_option("--chunks", chunks, "chunks in the namespace")
      ->check(CLI::Range(1000, 1000000000));
  app.add_option("--dir", parent, "where the namespace's LevelDB goes (removed at the end)");
  bool standby = false;
  app.add_flag("--standby", standby,
               "register with a standby (a mirror of the reports), then take over");
  CLI11_PARSE(app, argc, argv);
  setLogLevel(LogLevel::ERROR);

  std::string dir = parent + "/cairn-chunksim-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    perror("mkdtemp");
    return 1;
  }
  struct Remove {
    std::string dir;
    ~Remove() { std::filesystem::remove_all(dir); }
  } remove{dir};

  auto io = kj::setupAsyncIo();
  FixedClock clock;
  NamespaceStore store(dir, nullptr);
  Namespace ns(store, clock, 64ull << 20);

  // The namespace: files of 1,000 chunks each. Their chunk records (created, version 1)
  // are written in batches of 10,000, straight to the store: the chunk manager reads them
  // at a start as a master does, and how they came there does not matter to it (one
  // mutation per chunk would take an hour for 100 million).
  double started = cpuSeconds();
  constexpr uint32_t PER_FILE = 1000;
  std::vector<uint64_t> inodes;
  for (size_t made = 0; made < chunks; made += PER_FILE) {
    auto f = ns.create(ROOT_INODE, fmt::format("f{}", made / PER_FILE), 0644, 0, 0, 3, true)
                 .wait(io.waitScope);
    if (!f.status.ok()) {
      fprintf(stderr, "create: %s\n", f.status.toString().c_str());
      return 1;
    }
    inodes.push_back(f.inode.inode);
  }
  for (size_t made = 0; made < chunks;) {
    Mutation m;
    for (size_t i = 0; i < 10000 && made < chunks; ++i, ++made) {
      uint32_t index = static_cast<uint32_t>(made % PER_FILE);
      ChunkRecord record{index, made + 1, 1, 1, false};
      m.put(chunkKey(inodes[made / PER_FILE], index), codec::encodeChunk(record));
    }
    if (made == chunks) m.put("mnext_handle", codec::encodeU64(chunks + 1));
    store.commit(std::move(m)).wait(io.waitScope);
    // A commit is answered before LevelDB has it: the writes waiting stay bounded.
    if (made % 1000000 == 0) store.sync().wait(io.waitScope);
  }
  store.sync().wait(io.waitScope);
  printf("namespace: %zu chunks in %.1f s of CPU\n", chunks, cpuSeconds() - started);

  Obedient control;
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  ChunkManagerOptions options;
  // Three replicas of each chunk on distinct servers: each server's handles (every chunk
  // is at version 1).
  std::vector<std::vector<uint64_t>> held(servers);
  std::mt19937_64 random(1);
  // Three servers of three racks (server s is on rack s % RACKS), as placement chooses.
  ns.forEachChunk([&](uint64_t, const ChunkRecord& record) {
    size_t picked[3];
    for (size_t r = 0; r < 3;) {
      size_t s = random() % servers;
      bool sameRack = false;
      for (size_t i = 0; i < r; ++i) sameRack |= picked[i] % RACKS == s % RACKS;
      if (!sameRack) picked[r++] = s;
    }
    for (size_t s : picked) held[s].push_back(record.handle);
  });

  double rssBefore = rssNow();
  ChunkManager manager(ns, control, timer, options);
  started = cpuSeconds();
  manager.loadFromNamespace();
  printf("load: %.2f s\n", cpuSeconds() - started);
  manager.setMirroring(standby);

  std::vector<uint64_t> ids;
  double registering = 0;
  for (size_t s = 0; s < servers; ++s) {
    std::vector<ChunkReportEntry> report;
    report.reserve(held[s].size());
    for (uint64_t h : held[s]) report.push_back({h, 1, 64ull << 20});
    held[s] = {};
    started = cpuSeconds();
    ids.push_back(manager.registerServer(address(s), fmt::format("rack{}", s % RACKS), 16ull << 40,
                                         report.size() * (64ull << 20), report));
    registering += cpuSeconds() - started;
  }
  printf("registrations: %zu in %.2f s (%.2f ms each)\n", servers, registering,
         registering * 1000 / servers);
  if (standby) {
    printf("standby memory: %.0f MiB, %.0f bytes a chunk\n", (rssNow() - rssBefore) / (1 << 20),
           (rssNow() - rssBefore) / chunks);
    started = cpuSeconds();
    manager.becomeActive();
    printf("takeover: %.2f s\n", cpuSeconds() - started);
  }

  auto heartbeats = [&](size_t skip) {
    for (size_t s = 0; s < servers; ++s) {
      if (s == skip) continue;
      std::vector<uint64_t> deletes;
      manager.heartbeat(ids[s], 16ull << 40, 0, deletes);
    }
  };
  auto second = [&](size_t skip, double& heartbeatCpu, double& tickCpu) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    double t0 = cpuSeconds();
    heartbeats(skip);
    double t1 = cpuSeconds();
    manager.tick();
    double t2 = cpuSeconds();
    io.waitScope.poll();  // the copies answer
    heartbeatCpu += t1 - t0;
    tickCpu += t2 - t1;
  };

  // After safe mode every chunk is looked at once, a batch a tick.
  double hb = 0, tick = 0, firstTick = 0, slowest = 0;
  int checkTicks = 0;
  do {
    double t = 0;
    second(SIZE_MAX, hb, t);
    if (checkTicks == 0) firstTick = t;
    slowest = std::max(slowest, t);
    tick += t;
    ++checkTicks;
  } while (manager.uncheckedSinceStart() > 0);
  printf(
      "the check after the start: %d ticks, %.2f s of CPU in all, %.3f s the first (safe mode "
      "ends), %.3f s the slowest\n",
      checkTicks, tick, firstTick, slowest);
  printf("chunk manager memory: %.0f MiB, %.0f bytes a chunk\n", (rssNow() - rssBefore) / (1 << 20),
         (rssNow() - rssBefore) / chunks);
  auto health = manager.health();
  printf("health: %lu chunks, %lu under-replicated, %lu missing\n",
         static_cast<unsigned long>(health.chunks),
         static_cast<unsigned long>(health.underReplicated),
         static_cast<unsigned long>(health.missing));

  hb = tick = 0;
  constexpr int QUIET = 20;
  for (int i = 0; i < QUIET; ++i) second(SIZE_MAX, hb, tick);
  printf("quiet cluster: %.1f us per heartbeat, %.3f ms per tick\n", hb * 1e6 / (QUIET * servers),
         tick * 1000 / QUIET);
  started = cpuSeconds();
  health = manager.health();
  printf("admin health: %.3f ms\n", (cpuSeconds() - started) * 1000);

  // Server 0 stops: declared dead after deadAfter, its chunks queued for repair.
  size_t victim = 0;
  uint64_t onVictim = 0;
  for (auto& v : manager.servers()) {
    if (v.id == ids[victim]) onVictim = v.chunkCount;
  }
  auto live = [&]() {
    for (auto& v : manager.servers()) {
      if (v.id == ids[victim]) return v.live;
    }
    return false;
  };
  int seconds = 0;
  while (live() && seconds < 120) {
    timer.advanceTo(timer.now() + kj::SECONDS);
    heartbeats(victim);
    ++seconds;
    if (seconds < options.deadAfter / kj::SECONDS) {
      io.waitScope.poll();
      continue;
    }
    uint64_t copiesBefore = control.copies;
    double t0 = cpuSeconds();
    manager.tick();
    double noticed = cpuSeconds() - t0;
    if (live()) continue;
    printf(
        "death: noticed after %d s; that tick queued %lu chunks and started %lu copies in "
        "%.3f ms\n",
        seconds, static_cast<unsigned long>(manager.health().underReplicated),
        static_cast<unsigned long>(control.copies - copiesBefore), noticed * 1000);
    io.waitScope.poll();  // the copies answer
  }
  int repairTicks = 0;
  double repairCpu = 0;
  while (manager.health().underReplicated > 0 && repairTicks < 100000) {
    double h = 0, t = 0;
    second(victim, h, t);
    repairCpu += t;
    ++repairTicks;
  }
  printf(
      "repair: %lu chunks of the dead server back at their goal after %d more ticks "
      "(%.3f ms of tick CPU each, copies bounded at %u per server)\n",
      static_cast<unsigned long>(onVictim), repairTicks,
      repairTicks ? repairCpu * 1000 / repairTicks : 0.0, options.copiesPerServer);
  bool repaired = manager.health().underReplicated == 0;

  // An empty server joins and the operator asks for balance: each tick looks at a bounded
  // number of chunks (options.balanceLooksPerTick) and starts the moves its slots allow.
  ids.push_back(manager.registerServer(address(servers), "rack0", 16ull << 40, 0, {}));
  manager.balance(0.05);
  constexpr int BALANCE_TICKS = 30;
  double balanceCpu = 0, slowestBalance = 0;
  uint64_t copiesBefore = control.copies, looksBefore = manager.repairs().balancerLooks;
  for (int i = 0; i < BALANCE_TICKS; ++i) {
    double h = 0, t = 0;
    second(victim, h, t);
    balanceCpu += t;
    slowestBalance = std::max(slowestBalance, t);
  }
  printf(
      "balancing onto a new server: %.3f ms of tick CPU each (slowest %.3f), %.0f chunks looked "
      "at and %.1f moves started a tick\n",
      balanceCpu * 1000 / BALANCE_TICKS, slowestBalance * 1000,
      static_cast<double>(manager.repairs().balancerLooks - looksBefore) / BALANCE_TICKS,
      static_cast<double>(control.copies - copiesBefore) / BALANCE_TICKS);
  printf("master RSS peak: %.0f MiB\n", rssMib());
  return repaired ? 0 : 1;
}
