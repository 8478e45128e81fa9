#include "worker.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "log.h"
#include "tasks.h"

namespace cairn::mapreduce {
namespace {

constexpr uint32_t MAX_FETCH = 4 << 20;
constexpr size_t OUTPUT_BATCH = 8 << 20;
// A healthy worker serves 4 MiB far faster; a stopped one should not hold a reduce long.
const kj::Duration FETCH_TIMEOUT = 10 * kj::SECONDS;

// Reads up to `length` bytes at `offset` of `path`; a missing file reads as empty.
Result<std::string> readPiece(const std::string& path, uint64_t offset, uint32_t length,
                              bool* eof) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *eof = true;
      return std::string();
    }
    return Status::ioError(fmt::format("{}: {}", path, strerror(errno)));
  }
  struct stat st;
  fstat(fd, &st);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string data(offset < size ? std::min<uint64_t>(length, size - offset) : 0, '\0');
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = pread(fd, data.data() + got, data.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  if (got < data.size()) return Status::ioError(fmt::format("{}: short read", path));
  *eof = offset + got >= size;
  return data;
}

}  // namespace

// Serves map output to reducers.
class Worker::Service final : public wire::Worker::Server {
 public:
  Service(Worker& w, Identity peer) : w(w), peer(std::move(peer)) {}

  kj::Promise<void> fetchPartition(FetchPartitionContext context) override {
    auto p = context.getParams();
    // Map output is job data: only other workers (and admins) fetch it.
    if (peer.authenticated && peer.role != Role::WORKER && peer.role != Role::ADMIN) {
      cairn::toWire(Status::notPermitted(fmt::format("map output is for workers, not a {} "
                                                     "certificate",
                                                     roleName(peer.role))),
                    context.getResults().initStatus());
      return kj::READY_NOW;
    }
    if (p.getPartition() >= MAX_REDUCERS) {
      cairn::toWire(Status::invalidArgument("partition out of range"),
                    context.getResults().initStatus());
      return kj::READY_NOW;
    }
    std::string dir = mapOutputDir(w.opts.scratch, p.getJobId(), p.getTask(), p.getAttempt());
    std::string path = partitionFile(dir, p.getPartition());
    uint64_t offset = p.getOffset();
    uint32_t length = std::min(p.getLength(), MAX_FETCH);
    uint64_t jobId = p.getJobId();
    uint32_t task = p.getTask(), attempt = p.getAttempt();
    return w.servePool
        .run([dir, path, offset, length, jobId, task,
              attempt]() -> std::pair<Result<std::string>, bool> {
          bool eof = false;
          if (!std::filesystem::is_directory(dir)) {
            return {Status::notFound(fmt::format("no output of job {} map {} attempt {} here",
                                                 jobId, task, attempt)),
                    false};
          }
          auto r = readPiece(path, offset, length, &eof);
          return {std::move(r), eof};
        })
        .then([context](std::pair<Result<std::string>, bool> r) mutable {
          auto results = context.getResults();
          if (!r.first.ok()) {
            cairn::toWire(r.first.status, results.initStatus());
            return;
          }
          auto& data = r.first.value;
          results.setData(
              capnp::Data::Reader(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
          results.setEof(r.second);
        });
  }

 private:
  Worker& w;
  Identity peer;
};

Worker::Worker(WorkerOptions options, kj::Network& network, kj::Timer& timer)
    : opts(std::move(options)),
      timer(timer),
      executor(kj::getCurrentThreadExecutor()),
      peers(network, timer, opts.security),
      taskPool(std::max(opts.slots, 1u)),
      tasks(*this) {
  std::error_code ec;
  std::filesystem::create_directories(opts.scratch, ec);
  for (auto& e : std::filesystem::directory_iterator(opts.scratch, ec)) {
    if (e.path().filename().string().rfind("job-", 0) == 0)
      std::filesystem::remove_all(e.path(), ec);
  }
}

Worker::~Worker() noexcept(false) {}

wire::Worker::Client Worker::capabilityFor(const Identity& peer) {
  return kj::heap<Service>(*this, peer);
}

void Worker::taskFailed(kj::Exception&& e) {
  logError("worker task failed: {}", e.getDescription().cStr());
}

kj::Promise<void> Worker::start() {
  return join().then([this]() {
    uint64_t gen = ++generation;
    for (uint32_t i = 0; i < opts.slots; ++i) tasks.add(slotLoop(gen));
    tasks.add(heartbeatLoop(gen));
  });
}

kj::Promise<void> Worker::join() {
  peers.drop(opts.coordinator);
  auto req = peers.get<wire::Coordinator>(opts.coordinator).joinRequest();
  req.setHost(opts.host);
  req.setAddress(opts.address);
  req.setSlots(opts.slots);
  return timer.timeoutAfter(10 * kj::SECONDS, req.send())
      .then(
          [this](auto&& response) -> kj::Promise<void> {
            Status s = cairn::fromWire(response.getStatus());
            if (!s.ok()) {
              logError("the coordinator refused this worker: {}", s.toString());
              return timer.afterDelay(5 * kj::SECONDS).then([this]() { return join(); });
            }
            std::string m = response.getMaster().cStr();
            if (!io || m != master) {
              master = m;
              ClientOptions o;
              o.master = master;
              o.localHosts = {opts.host};
              o.security = opts.security;
              io = std::make_shared<CairnIo>(o);
            }
            session = response.getSession();
            logInfo("joined coordinator {} as host {} ({} slots, master {})", opts.coordinator,
                    opts.host, opts.slots, master);
            if (opts.joined) opts.joined();
            return kj::READY_NOW;
          },
          [this](kj::Exception&& e) -> kj::Promise<void> {
            logWarn("cannot join coordinator {}: {}", opts.coordinator, e.getDescription().cStr());
            peers.drop(opts.coordinator);
            return timer.afterDelay(1 * kj::SECONDS).then([this]() { return join(); });
          });
}

void Worker::rejoin(uint64_t gen, const std::string& why) {
  if (gen != generation) return;
  ++generation;  // the loops of this session end
  session = nullptr;
  logWarn("rejoining the coordinator: {}", why);
  tasks.add(start());
}

kj::Promise<void> Worker::slotLoop(uint64_t gen) {
  if (gen != generation) return kj::READY_NOW;
  KJ_IF_MAYBE (s, session) {
    auto current = *s;
    return current.nextTaskRequest().send().then(
        [this, gen, current](auto&& response) mutable -> kj::Promise<void> {
          if (!response.getHas()) {
            if (response.getStatus().getCode() != wire::ErrorCode::OK) {
              return timer.afterDelay(opts.heartbeat).then([this, gen]() { return slotLoop(gen); });
            }
            return slotLoop(gen);
          }
          TaskOrder order = fromWire(response.getTask());
          return taskPool.run([this, order, fs = io]() { return execute(order, *fs); })
              .then([current](AttemptResult r) mutable {
                auto req = current.finishRequest();
                toWire(r, req.initResult());
                return req.send().ignoreResult();
              })
              .catch_([](kj::Exception&&) {})  // a lost coordinator: rejoin handles it
              .then([this, gen]() { return slotLoop(gen); });
        },
        [this, gen](kj::Exception&&) {
          return timer.afterDelay(opts.heartbeat).then([this, gen]() { return slotLoop(gen); });
        });
  }
  return kj::READY_NOW;
}

kj::Promise<void> Worker::heartbeatLoop(uint64_t gen) {
  return timer.afterDelay(opts.heartbeat).then([this, gen]() -> kj::Promise<void> {
    if (gen != generation) return kj::READY_NOW;
    KJ_IF_MAYBE (s, session) {
      return timer.timeoutAfter(10 * kj::SECONDS, s->heartbeatRequest().send())
          .then(
              [this, gen](auto&& response) -> kj::Promise<void> {
                Status st = cairn::fromWire(response.getStatus());
                if (!st.ok()) {
                  rejoin(gen, st.message());
                  return kj::READY_NOW;
                }
                dropJobs(response.getDropJobs());
                return heartbeatLoop(gen);
              },
              [this, gen](kj::Exception&& e) { rejoin(gen, e.getDescription().cStr()); });
    }
    return kj::READY_NOW;
  });
}

void Worker::dropJobs(capnp::List<uint64_t>::Reader jobs) {
  for (uint64_t id : jobs) {
    {
      std::lock_guard<std::mutex> lock(endedMutex);
      if (!ended.insert(id).second) continue;
    }
    std::string dir = jobScratchDir(opts.scratch, id);
    tasks.add(servePool.run([dir]() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }));
  }
}

bool Worker::jobEnded(uint64_t jobId) const {
  std::lock_guard<std::mutex> lock(endedMutex);
  return ended.count(jobId) > 0;
}

AttemptResult Worker::execute(const TaskOrder& order, CairnIo& fs) {
  AttemptResult result;
  result.jobId = order.jobId;
  result.task = order.task;
  result.attempt = order.attempt;
  result.isMap = order.isMap;
  auto started = std::chrono::steady_clock::now();
  std::error_code ec;
  std::filesystem::create_directories(jobScratchDir(opts.scratch, order.jobId), ec);
  if (order.isMap) {
    MapStats stats;
    ReadAt read = [&](uint64_t offset, uint64_t length) {
      return fs.read(order.split.inode, offset, length);
    };
    result.status = runMap(order.spec, order.split, read,
                           mapOutputDir(opts.scratch, order.jobId, order.task, order.attempt),
                           opts.mapMemory, &stats, [&]() { return jobEnded(order.jobId); });
    result.bytesRead = stats.bytesRead;
  } else {
    result.status = runReduceTask(order, fs, result);
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (result.status.ok()) {
    logInfo("job {} {} {} attempt {} done in {:.2f} s", order.jobId, order.isMap ? "map" : "reduce",
            order.task, order.attempt, seconds);
  } else {
    logWarn("job {} {} {} attempt {} failed: {}", order.jobId, order.isMap ? "map" : "reduce",
            order.task, order.attempt, result.status.toString());
  }
  return result;
}

Status Worker::runReduceTask(const TaskOrder& order, CairnIo& fs, AttemptResult& result) {
  const JobSpec& spec = order.spec;
  auto out = fs.resolve(spec.output);
  if (!out.ok()) return out.status;
  if (spec.appendOutput) return runAppendingReduce(order, fs, out.value.inode, result);
  auto temp = fs.lookup(out.value.inode, "_temporary");
  if (!temp.ok()) return temp.status;
  std::string name = fmt::format("part-{:05}", order.task);
  std::string tempName = fmt::format("{}.attempt-{}", name, order.attempt);
  auto file =
      fs.createAtomically(out.value.inode, name, temp.value.inode, tempName, spec.uid, spec.gid);
  if (!file.ok()) return file.status;
  auto& writer = *file.value;

  std::string batch;
  auto flush = [&]() {
    if (batch.empty()) return Status::OK();
    return writer.append(std::exchange(batch, std::string()));
  };
  Status s = reduceInto(order, result, [&](std::string_view bytes) {
    batch.append(bytes);
    return batch.size() >= OUTPUT_BATCH ? flush() : Status::OK();
  });
  if (s.ok()) s = flush();
  if (s.ok()) {
    s = writer.commit();
    if (s.code() == ErrorCode::ALREADY_EXISTS) {
      // Another attempt of this reduce (a backup) finished first with the same output.
      s = Status::OK();
    }
  }
  result.bytesWritten = writer.written();
  return s;
}

Status Worker::reduceInto(const TaskOrder& order, AttemptResult& result,
                          const std::function<Status(std::string_view)>& out) {
  std::string sortDir = fmt::format("{}/reduce-{}-{}", jobScratchDir(opts.scratch, order.jobId),
                                    order.task, order.attempt);
  std::error_code ec;
  std::filesystem::create_directories(sortDir, ec);
  ReduceStats stats;
  Status s = runReduce(
      order.spec, order.task, order.mapOutputs,
      [&](const MapOutputLocation& from, uint64_t offset, bool* eof) {
        return fetch(from, order, offset, eof);
      },
      sortDir, opts.sortMemory, out, &stats, [&]() { return jobEnded(order.jobId); });
  std::filesystem::remove_all(sortDir, ec);
  result.lostMaps = stats.lost;
  result.shuffleBytes = stats.shuffleBytes;
  return s;
}

Status Worker::runAppendingReduce(const TaskOrder& order, CairnIo& fs, uint64_t outputDir,
                                  AttemptResult& result) {
  auto file = fs.lookup(outputDir, APPENDED_OUTPUT);
  if (!file.ok()) return file.status;
  // Every attempt of this reduce names its records alike (the job and the partition, then
  // the line's number), and the sorted input makes its lines alike: what an attempt that
  // failed or lost to a backup appended is dropped as duplicates when read.
  uint64_t writerId = (order.jobId * 0x9E3779B97F4A7C15ull) ^ (uint64_t{order.task} + 1);
  auto appender = fs.appendRecords(file.value.inode, writerId);
  if (!appender.ok()) return appender.status;
  auto& records = *appender.value;
  // One record per output line (with its newline, as `cairn append` makes them).
  Status s = reduceInto(order, result, [&](std::string_view line) { return records.add(line); });
  if (s.ok()) s = records.close();
  result.bytesWritten = records.written();
  return s;
}

Result<std::string> Worker::fetch(const MapOutputLocation& from, const TaskOrder& order,
                                  uint64_t offset, bool* eof) {
  Result<std::string> r;
  // One retry: a dropped connection may be a blip; twice means the output is lost.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    r = executor.executeSync(
        [&]() { return fetchOnce(from, order.jobId, order.task, offset, eof); });
    if (r.ok() || r.status.code() != ErrorCode::UNAVAILABLE) break;
  }
  return r;
}

kj::Promise<Result<std::string>> Worker::fetchOnce(MapOutputLocation from, uint64_t jobId,
                                                   uint32_t partition, uint64_t offset, bool* eof) {
  auto req = peers.get<wire::Worker>(from.worker).fetchPartitionRequest();
  req.setJobId(jobId);
  req.setTask(from.task);
  req.setAttempt(from.attempt);
  req.setPartition(partition);
  req.setOffset(offset);
  req.setLength(MAX_FETCH);
  return timer.timeoutAfter(FETCH_TIMEOUT, req.send())
      .then(
          [eof](auto&& response) -> Result<std::string> {
            Status s = cairn::fromWire(response.getStatus());
            if (!s.ok()) return s;
            *eof = response.getEof();
            auto data = response.getData();
            return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
          },
          [this, from](kj::Exception&& e) -> Result<std::string> {
            peers.drop(from.worker);
            return Status::unavailable(
                fmt::format("worker {}: {}", from.worker, e.getDescription().cStr()));
          });
}

}  // namespace cairn::mapreduce
