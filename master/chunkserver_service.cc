#include "chunkserver_service.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include "address.h"
#include "log.h"
#include "master.h"

namespace cairn {

void ChunkserverControl::setServer(uint64_t id, wire::ChunkServer::Client cap) {
  servers.insert_or_assign(id, kj::mv(cap));
}

template <typename Request>
kj::Promise<Status> ChunkserverControl::send(uint64_t server, Request&& request,
                                             int timeoutMultiple) {
  return timer.timeoutAfter(timeout * timeoutMultiple, request.send())
      .then([](auto response) { return fromWire(response.getStatus()); },
            [server](kj::Exception&& e) {
              return Status::unavailable(
                  fmt::format("chunkserver {}: {}", server, e.getDescription().cStr()));
            });
}

kj::Promise<Status> ChunkserverControl::setVersion(uint64_t server, uint64_t handle,
                                                   uint64_t version, bool create,
                                                   uint32_t leaseMs) {
  auto it = servers.find(server);
  if (it == servers.end()) return Status::unavailable("chunkserver not connected");
  auto req = it->second.setVersionRequest();
  req.setHandle(handle);
  req.setVersion(version);
  req.setCreate(create);
  req.setLeaseMs(leaseMs);
  return send(server, kj::mv(req));
}

kj::Promise<Status> ChunkserverControl::grantLease(uint64_t server, uint64_t handle,
                                                   uint64_t version, uint32_t durationMs) {
  auto it = servers.find(server);
  if (it == servers.end()) return Status::unavailable("chunkserver not connected");
  auto req = it->second.grantLeaseRequest();
  req.setHandle(handle);
  req.setVersion(version);
  req.setDurationMs(durationMs);
  return send(server, kj::mv(req));
}

kj::Promise<Status> ChunkserverControl::truncate(uint64_t server, uint64_t handle, uint64_t version,
                                                 uint32_t length) {
  auto it = servers.find(server);
  if (it == servers.end()) return Status::unavailable("chunkserver not connected");
  auto req = it->second.truncateRequest();
  req.setHandle(handle);
  req.setVersion(version);
  req.setLength(length);
  return send(server, kj::mv(req));
}

kj::Promise<Status> ChunkserverControl::replicate(uint64_t server, uint64_t handle,
                                                  uint64_t version, const std::string& source) {
  auto it = servers.find(server);
  if (it == servers.end()) return Status::unavailable("chunkserver not connected");
  auto req = it->second.replicateRequest();
  req.setHandle(handle);
  req.setVersion(version);
  req.setSource(source);
  // A copy of a whole chunk takes longer than a control call.
  return send(server, kj::mv(req), 12);
}

kj::Promise<Status> ChunkserverControl::copyChunk(uint64_t server, uint64_t handle,
                                                  uint64_t version, uint64_t newHandle,
                                                  uint64_t newVersion) {
  auto it = servers.find(server);
  if (it == servers.end()) return Status::unavailable("chunkserver not connected");
  auto req = it->second.copyChunkRequest();
  req.setHandle(handle);
  req.setVersion(version);
  req.setNewHandle(newHandle);
  req.setNewVersion(newVersion);
  return send(server, kj::mv(req), 12);
}

namespace {

constexpr size_t MAX_REPORT = 50'000'000;

class RegistryImpl final : public wire::ChunkserverRegistry::Server {
 public:
  explicit RegistryImpl(Master& master) : master(master) {}

  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    return master.registryCalls().measure(methodId, context, [&]() {
      return wire::ChunkserverRegistry::Server::dispatchCall(interfaceId, methodId, context);
    });
  }

  kj::Promise<void> register_(RegisterContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    std::string address = params.getAddress();
    auto parsed = parseAddress(address);
    if (!parsed.ok()) {
      toWire(parsed, results.initStatus());
      return kj::READY_NOW;
    }
    auto report = params.getChunks();
    KJ_REQUIRE(report.size() <= MAX_REPORT, "chunk report too large");
    std::vector<ChunkReportEntry> entries;
    entries.reserve(report.size());
    for (auto c : report) entries.push_back({c.getHandle(), c.getVersion(), c.getSize()});
    uint64_t id = master.chunkManager().registerServer(
        address, params.getRack(), params.getCapacityBytes(), params.getUsedBytes(), entries,
        params.getAvailableBytes(), params.getFeatures());
    master.control().setServer(id, params.getServer());
    results.setId(id);
    results.setChunkSize(master.names().chunkSize());
    results.setHeartbeatMs(
        static_cast<uint32_t>(master.options().heartbeatInterval / kj::MILLISECONDS));
    toWire(master.tokenKeys(),
           results.initTokenKeys(static_cast<uint>(master.tokenKeys().all().size())));
    results.setActive(master.isActive());
    results.setEpoch(master.epoch());
    toWire(Status::OK(), results.initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    std::vector<uint64_t> deletes;
    auto corrupt = params.getCorruptHandles();
    KJ_REQUIRE(corrupt.size() <= 1'000'000, "corrupt report too large");
    if (master.isActive()) {
      for (uint64_t h : corrupt) master.chunkManager().reportCorrupt(params.getId(), h);
    }
    if (!master.chunkManager().heartbeat(params.getId(), params.getCapacityBytes(),
                                         params.getUsedBytes(), deletes,
                                         params.getAvailableBytes())) {
      toWire(Status::notFound("unknown chunkserver; register again"), results.initStatus());
      return kj::READY_NOW;
    }
    auto changes = params.getChanges();
    if (changes.size() != 0) {
      KJ_REQUIRE(changes.size() <= 1'000'000, "change report too large");  // 100k are sent
      std::vector<ChunkReportEntry> entries;
      entries.reserve(changes.size());
      for (auto c : changes) entries.push_back({c.getHandle(), c.getVersion(), 0});
      master.chunkManager().applyChanges(params.getId(), entries);
    }
    // A standby's chunk map lags the log: it orders no deletion.
    if (!master.isActive()) deletes.clear();
    results.setActive(master.isActive());
    results.setEpoch(master.epoch());
    auto list = results.initDeleteHandles(static_cast<uint>(deletes.size()));
    for (size_t i = 0; i < deletes.size(); ++i) list.set(static_cast<uint>(i), deletes[i]);
    toWire(master.tokenKeys(),
           results.initTokenKeys(static_cast<uint>(master.tokenKeys().all().size())));
    toWire(Status::OK(), results.initStatus());
    return kj::READY_NOW;
  }

 private:
  static Status parseAddress(const std::string& address) {
    auto hp = parseHostPort(address);
    if (!hp.ok()) return hp.status;
    if (hp.value.port == 0) return Status::invalidArgument("chunkserver address needs a port");
    return Status::OK();
  }

  Master& master;
};

}  // namespace

kj::Own<wire::ChunkserverRegistry::Server> newChunkserverRegistry(Master& master) {
  return kj::heap<RegistryImpl>(master);
}

}  // namespace cairn
