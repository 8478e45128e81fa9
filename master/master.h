#pragma once
// The master: namespace, chunk map and the RPC services over them. main() builds one with
// real dependencies; tests build one on an in-memory LevelDB and a fake timer.

#include <kj/async.h>
#include <kj/timer.h>

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "chunk_manager.h"
#include "election.h"
#include "master.capnp.h"
#include "metrics.h"
#include "namespace.h"
#include "namespace_store.h"
#include "replication.h"
#include "rpc.h"
#include "tls.h"
#include "tokens.h"
#include "watchers.h"

namespace cairn {

struct MasterOptions {
  std::string dataDir;
  // After a start, orphans (unlinked files that were open) that no client opens again
  // within this time are deleted; the opens of a session that ends last this long.
  kj::Duration orphanGrace = 60 * kj::SECONDS;
  leveldb::Env* metaEnv = nullptr;  // null: the real disk
  uint64_t chunkSize = 64ull << 20;
  ChunkManagerOptions chunks;
  kj::Duration heartbeatInterval = 3 * kj::SECONDS;
  kj::Duration trashPeriod = 86400 * kj::SECONDS;  // 0: unlink deletes at once
  // Chunk tokens live this long; their keys are replaced as often, and a key is kept
  // until every token it signed has expired.
  kj::Duration tokenLifetime = 3600 * kj::SECONDS;
  // High availability. With ZooKeeper servers named, this master is one of several: it
  // starts as a standby, follows the active one's log, and becomes active when elected.
  // Without, it is the only master and always active.
  ElectionOptions election;
  ReplicationOptions replication;
  // A standby acknowledges entries once in its log (else once applied); either way, those
  // marked sync once synced.
  bool standbyAckWritten = true;
  // Every mutation is synced (here and on the standbys) before its reply: HDFS's rule. Else
  // a mutation is acknowledged once in the log of the active and the standbys in sync, and
  // synced within syncDelay; fsync, and every finished command, wait for a sync.
  bool syncEveryMutation = false;
  std::chrono::milliseconds syncDelay{10};
  // A master that loses the active role holds state no other master may share (entries it
  // wrote that no standby acknowledged): main() starts it afresh, as a standby. Called
  // with the election stopped and the metadata store's writes stopped: the master is done.
  std::function<void(const std::string& why)> onDeposed;
  // A metadata write or sync that failed leaves this master's memory ahead of its disk:
  // main() ends the process, as HDFS's NameNode does. A standby in sync holds every
  // acknowledged entry and takes over; a restart reopens the store at its last whole entry.
  // Unset (tests): the store refuses every later change.
  std::function<void(const std::string& error)> onStoreFailure;
};

class ChunkserverControl;

// The master's core: the namespace, the chunk map, and the rules that span both, which
// every service calls (so that each rule is written once, where tests reach it).
class Master final : private kj::TaskSet::ErrorHandler {
 public:
  Master(MasterOptions options, kj::Timer& timer, const kj::Clock& clock);
  ~Master();

  // The bootstrap capability served to a peer: what its certificate's role allows.
  wire::Master::Client bootstrap(const Identity& peer);

  // High availability (master/master_ha.cc). startHa() joins the election; before, and
  // without ZooKeeper, nothing changes. `network` reaches the other masters.
  void startHa(kj::Network& network, RpcSecurity security);
  bool haEnabled() const { return !opts.election.servers.empty(); }
  bool isActive() const { return active_; }
  // A standby answers read-only namespace calls (stat, lookup, readdir, locations) while
  // it follows the active and ZooKeeper names it in sync: every mutation the active
  // acknowledged is then applied here. It stops as soon as it hears that it was left out.
  bool servesReads() const { return !active_ && inSync_ && sink != nullptr; }
  uint64_t epoch() const { return store->currentEpoch(); }
  void describeState(wire::MasterState::Builder out);
  // The active master's side of a standby's follow call.
  kj::Promise<Status> follow(std::string id, uint64_t lastEpoch, uint64_t lastLsn,
                             wire::LogSink::Client sink);
  // Hands the active role to a standby (cairn admin failover).
  Status resign();
  // The followers of this (active) master.
  std::vector<FollowerView> standbys() const;

  // Chunks a mutation released (no file refers to them) are deleted from the
  // chunkservers; every mutation's result passes through here.
  MutationResult finish(MutationResult r);
  // Attributes. A smaller size first cuts the chunk holding the new end on its replicas,
  // then records the size: a crash in between leaves zeros where the file was being
  // shortened, never old bytes inside a later extension.
  kj::Promise<MutationResult> setattr(uint64_t inode, SetAttrArgs args);
  // A snapshot of a file or tree (see Namespace::snapshot): the files' leases are revoked
  // first and no new one is granted until the copy is recorded, so that it holds every
  // write acknowledged before it and none after. The next write to a shared chunk copies it.
  kj::Promise<MutationResult> snapshot(kj::Own<SnapshotRequest> request);
  // Every change answered so far is synced (NamespaceStore::sync).
  kj::Promise<Status> syncMetadata();
  // A client's new size for a file it wrote (never smaller than the size now).
  kj::Promise<MutationResult> commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs);
  // Copies by whole chunks (see Namespace::shareChunks), with the same care.
  kj::Promise<Namespace::ShareResult> shareChunks(uint64_t src, uint64_t srcOffset, uint64_t dst,
                                                  uint64_t dstOffset, uint64_t length);
  // The replication goal of a file (its chunks gain or lose replicas at the next ticks)
  // or the default goal of new files in a directory. Every way of setting it comes here.
  kj::Promise<MutationResult> setReplication(uint64_t inode, uint8_t goal);
  // Extended attributes: user.cairn.replication is the goal (setReplication), and
  // user.cairn.chunks the chunk map as JSON (read-only); other user.* ones are stored.
  kj::Promise<Status> setxattr(uint64_t inode, const std::string& name, const std::string& value,
                               uint32_t flags);
  Result<std::string> getxattr(uint64_t inode, const std::string& name);
  Result<std::vector<std::string>> listxattr(uint64_t inode);
  kj::Promise<Status> removexattr(uint64_t inode, const std::string& name);
  // A client session ended with `inodes` open: they are closed `orphanGrace` later, so
  // that a client that reconnects (and holds them again) keeps its unlinked files.
  void endSession(const std::set<uint64_t>& inodes);
  // One session closes one file.
  void close(uint64_t inode);

  // Chunk tokens: one for a chunk location handed out, and the keys chunkservers check them
  // with (sent with every heartbeat reply). A new key signs only once chunkservers have had
  // it for a few heartbeats.
  ChunkToken issueToken(uint64_t handle, uint64_t version, TokenMode mode);
  const TokenKeys& tokenKeys() const { return keys; }
  // A new signing key now (tests; the tick does it every tokenLifetime).
  void rotateTokenKeys();

  Namespace& names() { return *ns; }
  NamespaceStore& metaStore() { return *store; }
  ChunkManager& chunkManager() { return *chunks; }
  const MasterOptions& options() const { return opts; }
  kj::Timer& timer() { return timer_; }
  ChunkserverControl& control() { return *control_; }
  // The sessions that cache names and attributes, told of every change (watchers.h).
  Watchers& watchers() { return watchers_; }

  // What /metrics shows, and the calls of each service counted into it.
  Metrics& metrics() { return metrics_; }
  CallMetrics& clientCalls() { return *clientCalls_; }
  CallMetrics& registryCalls() { return *registryCalls_; }
  // The status page: the cluster's state at a glance (master/status_page.cc). Read only,
  // and no file name on it.
  std::string statusPage();

 private:
  // Before `inode` grows to `newSize`: a cut owed at its end is made (ChunkManager::settleCut).
  kj::Promise<Status> settleCutBeforeGrowth(uint64_t inode, uint64_t newSize);
  kj::Promise<Namespace::ShareResult> shareSettled(uint64_t src, uint64_t srcOffset, uint64_t dst,
                                                   uint64_t dstOffset, uint64_t length);
  void describeMetrics();
  // One try of a snapshot; `requestKey` names its outcome in the retry cache.
  kj::Promise<MutationResult> snapshotAttempt(kj::Own<SnapshotRequest> request,
                                              std::optional<std::string> requestKey, int attempt);
  void promote(uint64_t epoch);
  void deposed(const std::string& why);
  void activeChanged(const std::string& address);
  kj::Promise<void> followLoop(std::string address);
  kj::Promise<void> tickLoop();
  int64_t nowMs() const;
  void taskFailed(kj::Exception&& exception) override;

  MasterOptions opts;
  kj::Timer& timer_;
  const kj::Clock& clock_;
  // Before the store: its committer thread records into it until the store is gone.
  Metrics metrics_;
  kj::TimePoint startedAt;
  TokenKeys keys;
  uint32_t signingKey = 0;
  kj::TimePoint rotatedAt;
  Watchers watchers_;  // before the store, which tells it of every commit
  std::unique_ptr<NamespaceStore> store;
  std::unique_ptr<Namespace> ns;
  kj::Own<ChunkserverControl> control_;
  std::unique_ptr<ChunkManager> chunks;
  kj::Promise<void> ticker = nullptr;
  kj::TaskSet background;
  std::unique_ptr<CallMetrics> clientCalls_, registryCalls_;
  // High availability: the election, the log sent to standbys (active) or the one followed
  // (standby).
  bool active_ = true;
  bool inSync_ = false;       // as ZooKeeper says
  std::string activeAddress;  // as ZooKeeper names it
  std::unique_ptr<PeerPool> masters;
  std::unique_ptr<LogShipper> shipper;
  LogSinkImpl* sink = nullptr;                // the session followed now, owned by its capability
  kj::Maybe<wire::LogSink::Client> sinkHold;  // a reference to it: it lives while followed
  kj::Maybe<kj::Promise<void>> following;
  std::unique_ptr<Election> election;  // last in: its events reach everything above
};

// Converts the namespace's attributes to the wire form.
void fillAttr(const Inode& inode, uint64_t chunkSize, wire::Attr::Builder out);

}  // namespace cairn
