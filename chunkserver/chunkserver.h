#pragma once
// A chunkserver: the chunk store, the data service that clients, peers and the master
// call, and the link that registers with the master and heartbeats. Everything here runs
// on one event loop; disk work goes to a DiskPool.

#include <kj/async-io.h>
#include <kj/timer.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "chunk_store.h"
#include "chunkserver.capnp.h"
#include "disk_pool.h"
#include "master.capnp.h"
#include "metrics.h"
#include "rpc.h"
#include "tokens.h"

namespace cairn {

struct ChunkserverOptions {
  std::string address;  // HOST:PORT as the master and clients reach this server
  std::string rack = "default";
  std::vector<std::string> dataDirs;
  std::string master;  // HOST:PORT, or several separated by commas (one per master)
  size_t diskThreads = 4;
  uint64_t bufferLimitBytes = 512ull << 20;  // pushed data waiting for a write
  kj::Duration bufferIdleLimit = 60 * kj::SECONDS;
  // Calls to other chunkservers; shorter than a client's (15 s), so that a slow replica
  // down the chain is named as such before the client gives up on the one it called.
  kj::Duration rpcTimeout = 10 * kj::SECONDS;
  kj::Duration reconnectDelay = kj::SECONDS;
  kj::Duration scrubInterval = 10 * kj::SECONDS;  // one idle chunk re-verified per interval
  // Free space per data directory below which no new chunk or copy is taken; unset: the
  // smaller of 1 GiB and 2 % of the directory's file system.
  std::optional<uint64_t> reserveBytes;
  RpcSecurity security;              // of connections to the master and to other chunkservers
  const kj::Clock* clock = nullptr;  // for chunk tokens' expiry; null: the system's
};

class ChunkServerImpl;

class Chunkserver {
 public:
  Chunkserver(ChunkserverOptions options, Disk& disk, kj::Timer& timer, kj::Network& network);
  ~Chunkserver();

  // Opens the store, then keeps registered with the master until destroyed.
  kj::Promise<void> start();
  // The capability served to a peer: what its certificate's role allows (see
  // schema/chunkserver.capnp).
  wire::ChunkServer::Client capabilityFor(const Identity& peer);
  // Checks a chunk token with the keys the masters sent.
  Status checkToken(wire::ChunkToken::Reader token, uint64_t handle, uint64_t version,
                    TokenMode mode);
  // Whether the master on link `link` may give orders (versions, leases, truncation, copies,
  // deletes): it says it is active, and no master has shown a higher epoch. A deposed
  // master that does not know it yet is refused (notActive).
  Status ordersFrom(size_t link) const;
  // An order from the master on link `link` was refused: its next heartbeat goes at once,
  // since that master may just have become active (its answer says so).
  void ordersRefused(size_t link);

  ChunkStore& store() { return chunkStore; }
  DiskPool& pool() { return diskPool; }
  PeerPool& peers() { return peerPool; }
  kj::Timer& timer() { return timer_; }
  const ChunkserverOptions& options() const { return opts; }
  // Registered with some master.
  bool registered() const;
  // The store's replicas changed: masters that take no orders from here (standbys) hear of
  // it at once rather than at the next heartbeat.
  void replicasChanged();

  // What /metrics shows, and the calls counted into it.
  Metrics& metrics() { return metrics_; }
  CallMetrics& calls() { return *calls_; }
  // The status page (chunkserver/status_page.cc): this chunkserver's disk, chunks, link
  // to the master. Read only; no file name.
  std::string statusPage();

 private:
  friend class ChunkServerImpl;
  struct SpaceReport {
    uint64_t capacityBytes = 0;
    uint64_t freeBytes = 0;
    uint64_t availableBytes = 0;  // above the reserve
  };
  // This chunkserver's relationship with one master (master_link.cc).
  struct MasterLink {
    std::string address;
    uint64_t registrationId = 0;
    bool active = false;  // as of its last answer
    uint64_t epoch = 0;
    TokenKeys tokenKeys;
    std::vector<uint64_t> corruptFound;        // reported with the next heartbeat
    uint64_t reportedChange = 0;               // the store's last change this master has heard of
    kj::Own<kj::PromiseFulfiller<void>> wake;  // brings the next heartbeat forward
    kj::TimePoint lastReply = kj::origin<kj::TimePoint>();
    kj::Maybe<kj::Promise<void>> loop;
  };
  SpaceReport spaceNow();  // on the disk pool
  kj::Promise<void> linkLoop(size_t link);
  kj::Promise<void> registerWithMaster(size_t link);
  kj::Promise<void> heartbeatLoop(size_t link, wire::ChunkserverRegistry::Client registry,
                                  uint32_t ms);
  // What a master's answer says of it: active or not, and its epoch.
  void heardFrom(MasterLink& link, bool active, uint64_t epoch);
  // The capability a master calls back on, tied to its link.
  wire::ChunkServer::Client capabilityForMaster(size_t link);
  kj::Promise<void> deleteChunks(kj::Array<uint64_t> handles);
  // Forgets the store's changes that every registered master has heard of.
  void trimChanges();
  kj::Promise<void> scrubLoop(uint64_t after);

  ChunkserverOptions opts;
  kj::Timer& timer_;
  Metrics metrics_;  // first in, last out: everything below may record into it
  DiskPool diskPool;
  ChunkStore chunkStore;
  PeerPool peerPool;
  ChunkServerImpl* impl = nullptr;  // owned by `cap`
  wire::ChunkServer::Client cap;
  std::vector<std::unique_ptr<MasterLink>> links;
  uint64_t highestEpoch = 0;  // the highest any master has shown
  kj::Maybe<kj::Promise<void>> scrubber;
  std::unique_ptr<CallMetrics> calls_;
  SpaceReport lastSpace;  // as of the last heartbeat
  kj::TimePoint startedAt;
  uint64_t scrubbed = 0, corruptTotal = 0;
};

}  // namespace cairn
