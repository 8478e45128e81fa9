// The chunkserver's side of its relationship with the masters: register with each with a
// full chunk report, heartbeat, delete what the active master says is garbage, and
// register again whenever a master is lost. Orders are taken only from the active master
// with the highest epoch seen (a deposed one may not know yet that it is).

#include <kj/debug.h>

#include "chunkserver.h"
#include "log.h"

namespace cairn {

namespace {
constexpr kj::Duration REPORT_DELAY = 20 * kj::MILLISECONDS;
constexpr size_t MAX_CHANGES_SENT = 100'000;  // per heartbeat; more go with the next
}  // namespace

wire::ChunkServer::Client newChunkServerImpl(Chunkserver& cs, ChunkServerImpl*& raw);

Chunkserver::Chunkserver(ChunkserverOptions options, Disk& disk, kj::Timer& timer,
                         kj::Network& network)
    : opts(std::move(options)),
      timer_(timer),
      diskPool(opts.diskThreads),
      chunkStore(disk, opts.dataDirs, uint64_t{1} << 31, opts.reserveBytes),
      peerPool(network, timer, opts.security),
      cap(newChunkServerImpl(*this, impl)),
      startedAt(timer.now()) {
  std::string list = opts.master;
  for (size_t start = 0; start <= list.size();) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) {
      auto link = std::make_unique<MasterLink>();
      link->address = list.substr(start, comma - start);
      link->lastReply = timer.now();
      links.push_back(std::move(link));
    }
    start = comma + 1;
  }
  calls_ = std::make_unique<CallMetrics>(metrics_, "cairn_chunkserver",
                                         capnp::Schema::from<wire::ChunkServer>(), timer);
  using T = Metrics::Type;
  auto& m = metrics_;
  m.describe("cairn_chunkserver_read_bytes_total", T::COUNTER, "chunk bytes served to readers");
  m.describe("cairn_chunkserver_reads_from_memory_total", T::COUNTER,
             "reads answered on the event loop from the page cache, without a disk thread");
  m.describe("cairn_chunkserver_received_bytes_total", T::COUNTER,
             "bytes pushed to this chunkserver for writes");
  m.describe("cairn_chunkserver_stored_chunks", T::GAUGE, "chunk replicas on this chunkserver");
  m.describe("cairn_chunkserver_disk_capacity_bytes", T::GAUGE, "size of the data disks");
  m.describe("cairn_chunkserver_disk_free_bytes", T::GAUGE, "free space on the data disks");
  m.describe("cairn_chunkserver_disk_available_bytes", T::GAUGE,
             "room for new chunks (free space above the reserve)");
  m.describe("cairn_chunkserver_scrubbed_chunks_total", T::COUNTER, "replicas the scrubber read");
  m.describe("cairn_chunkserver_corrupt_chunks_total", T::COUNTER,
             "replicas the scrubber found corrupt");
  m.describe("cairn_chunkserver_registered", T::GAUGE, "1 while registered with the master");
  m.collect([this](const Metrics::GaugeSink& set) {
    set("cairn_chunkserver_stored_chunks", {}, static_cast<double>(chunkStore.count()));
    set("cairn_chunkserver_disk_capacity_bytes", {}, static_cast<double>(lastSpace.capacityBytes));
    set("cairn_chunkserver_disk_free_bytes", {}, static_cast<double>(lastSpace.freeBytes));
    set("cairn_chunkserver_disk_available_bytes", {},
        static_cast<double>(lastSpace.availableBytes));
    set("cairn_chunkserver_scrubbed_chunks_total", {}, static_cast<double>(scrubbed));
    set("cairn_chunkserver_corrupt_chunks_total", {}, static_cast<double>(corruptTotal));
    set("cairn_chunkserver_registered", {}, registered() ? 1 : 0);
  });
}

Chunkserver::~Chunkserver() = default;

kj::Promise<void> Chunkserver::start() {
  return diskPool.run([this]() { return chunkStore.open(); }).then([this](Status s) {
    KJ_REQUIRE(s.ok(), "cannot open the chunk store", s.toString());
    for (size_t i = 0; i < links.size(); ++i) {
      links[i]->loop = linkLoop(i).eagerlyEvaluate([](kj::Exception&& e) {
        logError("master link stopped: {}", e.getDescription().cStr());
      });
    }
    scrubber = scrubLoop(0).eagerlyEvaluate(
        [](kj::Exception&& e) { logError("scrubber stopped: {}", e.getDescription().cStr()); });
  });
}

bool Chunkserver::registered() const {
  for (auto& link : links) {
    if (link->registrationId != 0) return true;
  }
  return false;
}

void Chunkserver::heardFrom(MasterLink& link, bool active, uint64_t epoch) {
  link.lastReply = timer_.now();
  if (epoch > highestEpoch) {
    if (active) logInfo("master {} is active at epoch {}", link.address, epoch);
    highestEpoch = epoch;
  }
  link.active = active;
  link.epoch = epoch;
}

Status Chunkserver::ordersFrom(size_t index) const {
  auto& link = *links.at(index);
  if (!link.active) {
    return Status(ErrorCode::NOT_ACTIVE, fmt::format("master {} is not active", link.address));
  }
  if (link.epoch < highestEpoch) {
    return Status(ErrorCode::NOT_ACTIVE, fmt::format("master {} is at epoch {}, deposed at {}",
                                                     link.address, link.epoch, highestEpoch));
  }
  return Status::OK();
}

kj::Promise<void> Chunkserver::linkLoop(size_t index) {
  return registerWithMaster(index).then(
      [this, index]() { return linkLoop(index); },
      [this, index](kj::Exception&& e) {
        auto& link = *links[index];
        if (link.registrationId != 0) {
          logWarn("lost the master at {}: {}", link.address, e.getDescription().cStr());
        } else if (e.getType() == kj::Exception::Type::FAILED) {
          // Reached, but refused (this certificate is not a chunkserver's, say).
          logError("master {} refused this chunkserver: {}", link.address,
                   e.getDescription().cStr());
        } else {
          logDebug("master {} not reachable: {}", link.address, e.getDescription().cStr());
        }
        link.registrationId = 0;
        link.active = false;
        peerPool.drop(link.address);
        return timer_.afterDelay(opts.reconnectDelay).then([this, index]() {
          return linkLoop(index);
        });
      });
}

kj::Promise<void> Chunkserver::registerWithMaster(size_t index) {
  // Changes numbered after `since` may be missing from the report: the heartbeats send them.
  uint64_t since = chunkStore.lastChange();
  return diskPool.run([this]() { return std::make_pair(chunkStore.list(), spaceNow()); })
      .then([this, index, since](std::pair<std::vector<StoredChunk>, SpaceReport> state) {
        auto& link = *links[index];
        link.reportedChange = since;
        lastSpace = state.second;
        auto registry = peerPool.get<wire::Master>(link.address, Role::MASTER)
                            .chunkserverRequest()
                            .send()
                            .getService();
        auto req = registry.registerRequest();
        req.setAddress(opts.address);
        req.setRack(opts.rack);
        req.setCapacityBytes(state.second.capacityBytes);
        req.setUsedBytes(state.second.capacityBytes - state.second.freeBytes);
        req.setAvailableBytes(state.second.availableBytes);
        req.setFeatures(wire::FEATURES_ALL);
        auto list = req.initChunks(static_cast<uint>(state.first.size()));
        for (size_t i = 0; i < state.first.size(); ++i) {
          list[i].setHandle(state.first[i].handle);
          list[i].setVersion(state.first[i].version);
          list[i].setSize(state.first[i].length);
        }
        // The master calls back over this connection, which reached the master's certificate.
        req.setServer(capabilityForMaster(index));
        return timer_.timeoutAfter(opts.rpcTimeout, req.send())
            .then([this, index, registry](auto response) mutable -> kj::Promise<void> {
              auto& link = *links[index];
              Status s = fromWire(response.getStatus());
              KJ_REQUIRE(s.ok(), "registration refused", s.toString());
              link.registrationId = response.getId();
              if (response.getChunkSize() != 0) chunkStore.setChunkSize(response.getChunkSize());
              fromWire(response.getTokenKeys(), link.tokenKeys);
              heardFrom(link, response.getActive(), response.getEpoch());
              logInfo("registered with master {} as id {}{}", link.address, link.registrationId,
                      link.active ? " (active)" : " (standby)");
              uint32_t ms = std::max<uint32_t>(response.getHeartbeatMs(), 100);
              return heartbeatLoop(index, kj::mv(registry), ms);
            });
      });
}

Chunkserver::SpaceReport Chunkserver::spaceNow() {
  DiskSpace space = chunkStore.space();
  return {space.capacityBytes, space.freeBytes, chunkStore.available()};
}

void Chunkserver::replicasChanged() {
  for (size_t i = 0; i < links.size(); ++i) {
    auto& link = *links[i];
    if (link.wake && link.wake->isWaiting() && !ordersFrom(i).ok()) link.wake->fulfill();
  }
}

void Chunkserver::ordersRefused(size_t index) {
  auto& link = *links.at(index);
  if (link.wake && link.wake->isWaiting()) link.wake->fulfill();
}

void Chunkserver::trimChanges() {
  uint64_t heard = chunkStore.lastChange();
  for (auto& link : links) {
    if (link->registrationId != 0) heard = std::min(heard, link->reportedChange);
  }
  chunkStore.trimChanges(heard);
}

kj::Promise<void> Chunkserver::heartbeatLoop(size_t index,
                                             wire::ChunkserverRegistry::Client registry,
                                             uint32_t ms) {
  auto& link = *links[index];
  auto wake = kj::newPromiseAndFulfiller<void>();
  link.wake = kj::mv(wake.fulfiller);
  // Changes are sent to a standby a moment after they happen, a few at a time rather than
  // one by one (also those made while the last heartbeat was on its way).
  auto soon = wake.promise.then([this]() { return timer_.afterDelay(REPORT_DELAY); });
  bool pending = chunkStore.lastChange() > link.reportedChange && !ordersFrom(index).ok();
  return timer_.afterDelay(pending ? REPORT_DELAY : ms * kj::MILLISECONDS)
      .exclusiveJoin(kj::mv(soon))
      .then([this]() { return diskPool.run([this]() { return spaceNow(); }); })
      .then([this, index, registry, ms](SpaceReport space) mutable {
        auto& link = *links[index];
        lastSpace = space;
        auto req = registry.heartbeatRequest();
        req.setId(link.registrationId);
        req.setCapacityBytes(space.capacityBytes);
        req.setUsedBytes(space.capacityBytes - space.freeBytes);
        req.setAvailableBytes(space.availableBytes);
        // Each master hears of every corrupt replica found (a standby may be active next).
        auto found = kj::mv(link.corruptFound);
        link.corruptFound.clear();
        auto corrupt = req.initCorruptHandles(static_cast<uint>(found.size()));
        for (size_t i = 0; i < found.size(); ++i) corrupt.set(static_cast<uint>(i), found[i]);
        std::vector<ChunkStore::Change> changes;
        // Forgotten changes (a master far behind): only a full report will do.
        KJ_REQUIRE(chunkStore.changesSince(link.reportedChange, MAX_CHANGES_SENT, changes),
                   "replica changes forgotten; registering again with a full report");
        auto list = req.initChanges(static_cast<uint>(changes.size()));
        for (size_t i = 0; i < changes.size(); ++i) {
          list[i].setHandle(changes[i].handle);
          list[i].setVersion(changes[i].version);
        }
        uint64_t sentUpTo = changes.empty() ? link.reportedChange : changes.back().seq;
        return timer_.timeoutAfter(opts.rpcTimeout, req.send())
            .then(
                [this, index, registry, ms, sentUpTo](auto response) mutable -> kj::Promise<void> {
                  auto& link = *links[index];
                  Status s = fromWire(response.getStatus());
                  if (s.code() == ErrorCode::NOT_FOUND) {
                    logWarn("master {} forgot this chunkserver; registering again", link.address);
                    return kj::READY_NOW;  // linkLoop registers again
                  }
                  KJ_REQUIRE(s.ok(), "heartbeat refused", s.toString());
                  link.reportedChange = sentUpTo;
                  trimChanges();
                  fromWire(response.getTokenKeys(), link.tokenKeys);
                  heardFrom(link, response.getActive(), response.getEpoch());
                  auto handles = response.getDeleteHandles();
                  // Deletes only on the word of the master that may give orders.
                  if (handles.size() != 0 && !ordersFrom(index).ok()) {
                    logWarn("ignored {} deletes from master {}: {}", handles.size(), link.address,
                            ordersFrom(index).toString());
                    handles = {};
                  }
                  auto copy = kj::heapArray<uint64_t>(handles.size());
                  for (uint i = 0; i < handles.size(); ++i) copy[i] = handles[i];
                  return deleteChunks(kj::mv(copy)).then([this, index, registry, ms]() mutable {
                    return heartbeatLoop(index, kj::mv(registry), ms);
                  });
                });
      });
}

kj::Promise<void> Chunkserver::scrubLoop(uint64_t after) {
  // Round-robin over the replicas, one per interval, so that the disk stays free for clients.
  return timer_.afterDelay(opts.scrubInterval)
      .then([this, after]() {
        return diskPool.run([this, after]() -> std::pair<uint64_t, Status> {
          uint64_t next = chunkStore.nextAfter(after);
          if (next == 0) return {0, Status::OK()};
          return {next, chunkStore.verify(next)};
        });
      })
      .then([this](std::pair<uint64_t, Status> r) {
        scrubbed += r.first != 0;
        if (r.second.code() == ErrorCode::REPLICA_CORRUPT) {
          logError("scrubber: chunk {:x}: {}", r.first, r.second.message());
          for (auto& link : links) link->corruptFound.push_back(r.first);
          ++corruptTotal;
        }
        return scrubLoop(r.first);
      });
}

kj::Promise<void> Chunkserver::deleteChunks(kj::Array<uint64_t> handles) {
  if (handles.size() == 0) return kj::READY_NOW;
  return diskPool
      .run([this, handles = kj::mv(handles)]() {
        for (uint64_t h : handles) {
          Status s = chunkStore.remove(h);
          if (s.ok()) {
            logInfo("deleted chunk {:x}", h);
          } else if (s.code() != ErrorCode::NOT_FOUND) {
            logWarn("cannot delete chunk {:x}: {}", h, s.toString());
          }
        }
      })
      .then([this]() { replicasChanged(); });
}

}  // namespace cairn
