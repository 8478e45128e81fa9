#pragma once
// The master's side of its relationship with chunkservers: registration and heartbeats
// in, version/lease/truncate calls out.

#include <map>

#include "chunk_manager.h"
#include "chunkserver.capnp.h"
#include "master.capnp.h"
#include "tls.h"

namespace cairn {

class Master;

// ReplicaControl over the capabilities chunkservers hand over when they register.
class ChunkserverControl final : public ReplicaControl {
 public:
  ChunkserverControl(kj::Timer& timer, kj::Duration timeout) : timer(timer), timeout(timeout) {}
  void setServer(uint64_t id, wire::ChunkServer::Client cap);

  kj::Promise<Status> setVersion(uint64_t server, uint64_t handle, uint64_t version, bool create,
                                 uint32_t leaseMs) override;
  kj::Promise<Status> grantLease(uint64_t server, uint64_t handle, uint64_t version,
                                 uint32_t durationMs) override;
  kj::Promise<Status> truncate(uint64_t server, uint64_t handle, uint64_t version,
                               uint32_t length) override;
  kj::Promise<Status> replicate(uint64_t server, uint64_t handle, uint64_t version,
                                const std::string& source) override;
  kj::Promise<Status> copyChunk(uint64_t server, uint64_t handle, uint64_t version,
                                uint64_t newHandle, uint64_t newVersion) override;

 private:
  // Runs `call` with a timeout; a failure or timeout becomes Status unavailable.
  template <typename Request>
  kj::Promise<Status> send(uint64_t server, Request&& request, int timeoutMultiple = 1);

  kj::Timer& timer;
  kj::Duration timeout;
  std::map<uint64_t, wire::ChunkServer::Client> servers;
};

kj::Own<wire::ChunkserverRegistry::Server> newChunkserverRegistry(Master& master);
kj::Own<wire::ClientService::Server> newClientService(Master& master, const Identity& peer);

}  // namespace cairn
