#include "master.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include <nlohmann/json.hpp>

#include "chunkserver_service.h"
#include "log.h"

namespace cairn {
namespace {

class ReplicationImpl final : public wire::Replication::Server {
 public:
  explicit ReplicationImpl(Master& master) : master(master) {}
  kj::Promise<void> follow(FollowContext context) override {
    auto p = context.getParams();
    return master.follow(p.getId(), p.getLastEpoch(), p.getLastLsn(), p.getSink())
        .then([this, context](Status s) mutable {
          auto results = context.getResults();
          toWire(s, results.initStatus());
          results.setEpoch(master.epoch());
        });
  }

 private:
  Master& master;
};

// What one connection is served: the services its peer's role may use.
class MasterImpl final : public wire::Master::Server {
 public:
  MasterImpl(Master& master, Identity peer) : master(master), peer(std::move(peer)) {}

  kj::Promise<void> client(ClientContext context) override {
    // One service per call: each is a client session, which holds that client's opens.
    // Peers whose role makes no namespace calls get one that refuses every call.
    context.getResults().setService(newClientService(master, peer));
    return kj::READY_NOW;
  }
  kj::Promise<void> replication(ReplicationContext context) override {
    if (peer.authenticated && peer.role != Role::MASTER) {
      return KJ_EXCEPTION(FAILED, "permission denied: only a master certificate follows the log",
                          roleName(peer.role), peer.name);
    }
    context.getResults().setService(kj::heap<ReplicationImpl>(master));
    return kj::READY_NOW;
  }
  kj::Promise<void> state(StateContext context) override {
    master.describeState(context.getResults().initState());
    return kj::READY_NOW;
  }
  kj::Promise<void> chunkserver(ChunkserverContext context) override {
    if (peer.authenticated && peer.role != Role::CHUNKSERVER) {
      return KJ_EXCEPTION(FAILED,
                          "permission denied: only a chunkserver certificate registers "
                          "as a chunkserver",
                          roleName(peer.role), peer.name);
    }
    context.getResults().setService(newChunkserverRegistry(master));
    return kj::READY_NOW;
  }

 private:
  Master& master;
  Identity peer;
};

}  // namespace

Master::Master(MasterOptions options, kj::Timer& timer, const kj::Clock& clock)
    : opts(std::move(options)),
      timer_(timer),
      clock_(clock),
      startedAt(timer.now()),
      rotatedAt(timer.now()),
      background(*this) {
  signingKey = keys.rotate();
  store = std::make_unique<NamespaceStore>(opts.dataDir + "/meta", opts.metaEnv, opts.syncDelay);
  store->setSyncEveryMutation(opts.syncEveryMutation);
  if (opts.onStoreFailure) store->setFailureHandler(opts.onStoreFailure);
  // One of several masters starts as a standby: its store changes only by the active's log.
  active_ = !haEnabled();
  store->setWritable(active_);
  store->setObserver([this](const Mutation& m) { watchers_.committed(m); });
  ns = std::make_unique<Namespace>(*store, clock, opts.chunkSize);
  if (ns->chunkSize() != opts.chunkSize) {
    logWarn("chunk size is {} (fixed when {} was created), not {}", ns->chunkSize(), opts.dataDir,
            opts.chunkSize);
  }
  control_ = kj::heap<ChunkserverControl>(timer, opts.chunks.rpcTimeout);
  chunks = std::make_unique<ChunkManager>(*ns, *control_, timer, opts.chunks);
  ns->setTrashPeriod(opts.trashPeriod);
  chunks->loadFromNamespace();
  chunks->setMirroring(!active_);
  describeMetrics();
  ticker = tickLoop().eagerlyEvaluate([](kj::Exception&& e) {
    logError("background work stopped: {}", e.getDescription().cStr());
  });
}

Master::~Master() = default;

wire::Master::Client Master::bootstrap(const Identity& peer) {
  return kj::heap<MasterImpl>(*this, peer);
}

int64_t Master::nowMs() const { return (clock_.now() - kj::UNIX_EPOCH) / kj::MILLISECONDS; }

ChunkToken Master::issueToken(uint64_t handle, uint64_t version, TokenMode mode) {
  return keys.issue(handle, version, mode, nowMs() + opts.tokenLifetime / kj::MILLISECONDS,
                    signingKey);
}

void Master::rotateTokenKeys() {
  // The key made at the last rotation has long reached every chunkserver.
  signingKey = keys.newest();
  keys.rotate();
  // Tokens last a lifetime; the key before the signing one may have signed some that
  // still live. Older ones retire.
  keys.keepNewest(3);
  rotatedAt = timer_.now();
}

void Master::taskFailed(kj::Exception&& exception) {
  logError("master task failed: {}", exception.getDescription().cStr());
}

kj::Promise<void> Master::tickLoop() {
  return timer_.afterDelay(kj::SECONDS)
      .then([this]() {
        if (timer_.now() - rotatedAt >= opts.tokenLifetime) rotateTokenKeys();
        // A standby changes nothing: the chunk map, trash and orphans are the active's.
        if (!active_) return kj::Promise<void>(kj::READY_NOW);
        // A new key signs once every live chunkserver has heard of it.
        if (signingKey != keys.newest() && timer_.now() - rotatedAt >= 3 * opts.heartbeatInterval) {
          signingKey = keys.newest();
        }
        chunks->tick();
        // Outcomes kept for retries: ten minutes outlasts any client's retrying.
        background.add(ns->expireOutcomes(600 * kj::SECONDS));
        if (chunks->inSafeMode()) return kj::Promise<void>(kj::READY_NOW);
        // Trashed files past their period: their chunks go at the next heartbeats.
        auto trash =
            ns->indexTrash()
                .then([this]() { return ns->expireTrash(); })
                .then([this](MutationResult r) {
                  if (!r.releasedHandles.empty()) {
                    logInfo("trash: {} chunks of expired files released", r.releasedHandles.size());
                  }
                  finish(std::move(r));
                });
        if (timer_.now() - startedAt < opts.orphanGrace) return trash;
        // Unlinked files that were open before a restart and that nobody opened again.
        return trash.then([this]() { return ns->expireOrphans(); }).then([this](MutationResult r) {
          finish(std::move(r));
        });
      })
      .then([this]() { return tickLoop(); });
}

MutationResult Master::finish(MutationResult r) {
  if (r.releasedHandles.empty()) return r;
  // The replicas go once the entry that released them is on this master's disk: after a
  // power loss the file must not come back without its chunks. (The standbys in sync hold
  // the entry in their logs, synced within their own delay: deletes go out at the next
  // heartbeat, seconds later.)
  background.add(store->syncedHere().then(
      [this, handles = r.releasedHandles]() { chunks->release(handles); }));
  return r;
}

kj::Promise<MutationResult> Master::setattr(uint64_t inode, SetAttrArgs args) {
  auto current = ns->getattr(inode);
  bool cuts = args.size && current.ok() && current.value.type == InodeType::REGULAR &&
              *args.size < current.value.size && *args.size % ns->chunkSize() != 0;
  bool grows = args.size && current.ok() && current.value.type == InodeType::REGULAR &&
               *args.size > current.value.size;
  if (grows) {
    return settleCutBeforeGrowth(inode, *args.size)
        .then([this, inode, args](Status s) -> kj::Promise<MutationResult> {
          if (!s.ok()) return MutationResult{s, {}, {}};
          return ns->setattr(inode, args).then([this](MutationResult r) {
            return finish(std::move(r));
          });
        });
  }
  if (!cuts) {
    return ns->setattr(inode, args).then([this](MutationResult r) { return finish(std::move(r)); });
  }
  if (chunks->inSafeMode()) return MutationResult{chunks->safeModeRefusal(), {}, {}};
  // The new size first (Namespace::setattr syncs a size that ends within a chunk), then
  // the cut: a crash between leaves the old bytes past the end, never a file of the old
  // size with its end cut away.
  // Shared with the commit, which runs within the chunk's step (it may outlive this call).
  auto result = std::make_shared<MutationResult>();
  return chunks
      ->truncateChunk(inode, *args.size,
                      [this, inode, args, result]() {
                        // Chunks the new size released go once it is on disk, whether or
                        // not the cut succeeds; from within the chunk's step (a cut, not a
                        // hole), also when the caller stopped waiting.
                        return ns->setattr(inode, args).then([this, result](MutationResult r) {
                          *result = finish(std::move(r));
                          return result->status;
                        });
                      })
      .then([](Status cut) { return cut; },
            [](kj::Exception&& e) {
              return Status::unavailable(fmt::format("truncate: {}", e.getDescription().cStr()));
            })
      .then([result](Status cut) {
        MutationResult r = std::move(*result);
        if (!cut.ok()) r.status = cut;
        return r;
      });
}

kj::Promise<MutationResult> Master::snapshot(kj::Own<SnapshotRequest> request) {
  // The request's id is taken now: the snapshot is recorded after waits.
  return snapshotAttempt(kj::mv(request), store->takeRequestKey(), 0);
}

kj::Promise<MutationResult> Master::snapshotAttempt(kj::Own<SnapshotRequest> request,
                                                    std::optional<std::string> requestKey,
                                                    int attempt) {
  if (chunks->inSafeMode()) return MutationResult{chunks->safeModeRefusal(), {}, {}};
  auto files = ns->filesUnder(request->source, MAX_SNAPSHOT_ENTRIES);
  if (!files.ok()) return MutationResult{files.status, {}, {}};
  std::vector<uint64_t> frozen = std::move(files.value);
  auto thaw = kj::defer([this, frozen]() { chunks->thaw(frozen); });
  auto& ref = *request;
  return chunks->freeze(frozen)
      .then([this, &ref, requestKey](Status s) -> kj::Promise<MutationResult> {
        if (!s.ok()) return MutationResult{s, {}, {}};
        ref.quiet = [this](uint64_t inode) { return chunks->quiet(inode); };
        if (requestKey) store->beginRequest(*requestKey);
        KJ_DEFER(store->endRequest());
        return ns->snapshot(ref);
      })
      .attach(kj::mv(thaw))
      .then([this, request = kj::mv(request), requestKey,
             attempt](MutationResult r) mutable -> kj::Promise<MutationResult> {
        // A file joined the tree (or was written) after the files were frozen: freeze again.
        if (r.status.code() == ErrorCode::BUSY && attempt < 4) {
          return snapshotAttempt(kj::mv(request), requestKey, attempt + 1);
        }
        return finish(std::move(r));
      });
}

kj::Promise<Status> Master::syncMetadata() {
  if (!active_) return Status(ErrorCode::NOT_ACTIVE, "this master is not active");
  return store->sync().then(
      []() { return Status::OK(); },
      [](kj::Exception&& e) {
        return Status::unavailable(fmt::format("metadata sync: {}", e.getDescription().cStr()));
      });
}

kj::Promise<Status> Master::settleCutBeforeGrowth(uint64_t inode, uint64_t newSize) {
  auto current = ns->getattr(inode);
  if (!current.ok() || current.value.type != InodeType::REGULAR || newSize <= current.value.size) {
    return Status::OK();
  }
  // Bytes a truncate removed must not come back past the old end: an owed cut first.
  return chunks->settleCut(inode, current.value.size);
}

kj::Promise<MutationResult> Master::commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs) {
  return settleCutBeforeGrowth(inode, size)
      .then([this, inode, size, mtimeNs](Status s) -> kj::Promise<MutationResult> {
        if (!s.ok()) return MutationResult{s, {}, {}};
        return ns->commitSize(inode, size, mtimeNs);
      });
}

kj::Promise<Namespace::ShareResult> Master::shareChunks(uint64_t src, uint64_t srcOffset,
                                                        uint64_t dst, uint64_t dstOffset,
                                                        uint64_t length) {
  if (chunks->inSafeMode()) return Namespace::ShareResult{{chunks->safeModeRefusal(), {}, {}}};
  return settleCutBeforeGrowth(dst, dstOffset + length)
      .then([this, src, srcOffset, dst, dstOffset,
             length](Status s) -> kj::Promise<Namespace::ShareResult> {
        if (!s.ok()) return Namespace::ShareResult{{s, {}, {}}};
        return shareSettled(src, srcOffset, dst, dstOffset, length);
      });
}

kj::Promise<Namespace::ShareResult> Master::shareSettled(uint64_t src, uint64_t srcOffset,
                                                         uint64_t dst, uint64_t dstOffset,
                                                         uint64_t length) {
  uint64_t chunkSize = ns->chunkSize();
  if (src == dst || srcOffset % chunkSize != dstOffset % chunkSize) {
    // Nothing can be shared (the caller copies it all): no lease is revoked for it.
    return ns->shareChunks(src, srcOffset, dst, dstOffset, length, [](uint64_t) { return false; });
  }
  // The destination too: a write under way to a chunk it drops would be lost.
  std::vector<uint64_t> frozen{src, dst};
  auto thaw = kj::defer([this, frozen]() { chunks->thaw(frozen); });
  return chunks->freeze(frozen)
      .then([this, src, srcOffset, dst, dstOffset,
             length](Status s) -> kj::Promise<Namespace::ShareResult> {
        if (!s.ok()) return Namespace::ShareResult{{s, {}, {}}};
        return ns->shareChunks(src, srcOffset, dst, dstOffset, length,
                               [this](uint64_t inode) { return chunks->quiet(inode); });
      })
      .attach(kj::mv(thaw))
      .then([this, src](Namespace::ShareResult r) {
        finish(MutationResult{Status::OK(), {}, r.mutation.releasedHandles});
        if (r.mutation.status.ok() && r.sharedLength > 0) {
          // The source's chunks have one owner more: a shared chunk takes its files' highest
          // goal.
          uint64_t chunkSize = ns->chunkSize();
          chunks->ownersChanged(
              src, static_cast<uint32_t>(r.sharedOffset / chunkSize),
              static_cast<uint32_t>((r.sharedLength + chunkSize - 1) / chunkSize));
        }
        return r;
      });
}

kj::Promise<MutationResult> Master::setReplication(uint64_t inode, uint8_t goal) {
  return ns->setReplication(inode, goal).then([this, inode, goal](MutationResult r) {
    if (r.status.ok() && r.inode.type == InodeType::REGULAR) chunks->goalChanged(inode, goal);
    return r;
  });
}

namespace {
constexpr const char* REPLICATION_XATTR = "user.cairn.replication";
constexpr const char* CHUNKS_XATTR = "user.cairn.chunks";

Status checkXattrName(const std::string& name) {
  if (name.rfind("user.", 0) != 0) {
    return Status(ErrorCode::NOT_SUPPORTED, "only user.* attributes are supported");
  }
  if (name.size() > 255) return Status::nameTooLong("attribute name over 255 bytes");
  return Status::OK();
}
}  // namespace

kj::Promise<Status> Master::setxattr(uint64_t inode, const std::string& name,
                                     const std::string& value, uint32_t flags) {
  Status s = checkXattrName(name);
  if (!s.ok()) return s;
  if (name == REPLICATION_XATTR) {
    int goal = 0;
    try {
      size_t used = 0;
      goal = std::stoi(value, &used);
      if (used != value.size() && value.find_first_not_of(" \n", used) != std::string::npos) {
        goal = 0;
      }
    } catch (...) {
      goal = 0;
    }
    if (goal < 1 || goal > MAX_REPLICATION) {
      return Status::invalidArgument(
          fmt::format("replication must be a number from 1 to {}", MAX_REPLICATION));
    }
    return setReplication(inode, static_cast<uint8_t>(goal)).then([](MutationResult r) {
      return r.status;
    });
  }
  if (name == CHUNKS_XATTR)
    return Status(ErrorCode::NOT_PERMITTED, "user.cairn.chunks is read-only");
  return ns->setxattr(inode, name, value, flags);
}

Result<std::string> Master::getxattr(uint64_t inode, const std::string& name) {
  Status s = checkXattrName(name);
  if (!s.ok()) return s;
  if (name != REPLICATION_XATTR && name != CHUNKS_XATTR) return ns->getxattr(inode, name);
  auto n = ns->getattr(inode);
  if (!n.ok()) return n.status;
  if (name == REPLICATION_XATTR) return std::to_string(n.value.replication);
  if (n.value.type != InodeType::REGULAR) return Status(ErrorCode::NO_ATTRIBUTE, name);
  // The chunk map with the replicas' addresses, for schedulers that place work by data.
  nlohmann::json chunksJson = nlohmann::json::array();
  uint64_t chunkSize = ns->chunkSize();
  uint32_t count = static_cast<uint32_t>((n.value.size + chunkSize - 1) / chunkSize);
  for (auto& v : chunks->locate(inode, 0, count)) {
    auto replicas = nlohmann::json::array();
    for (auto& r : v.replicas) replicas.push_back({{"address", r.address}, {"rack", r.rack}});
    uint64_t start = uint64_t{v.record.index} * chunkSize;
    chunksJson.push_back(
        {{"index", v.record.index},
         {"handle", fmt::format("{:x}", v.record.handle)},
         {"version", v.record.version},
         {"offset", start},
         {"size", n.value.size > start ? std::min(chunkSize, n.value.size - start) : uint64_t{0}},
         {"replicas", replicas}});
  }
  nlohmann::json j = {{"size", n.value.size}, {"chunk_size", chunkSize}, {"chunks", chunksJson}};
  return j.dump();
}

Result<std::vector<std::string>> Master::listxattr(uint64_t inode) {
  auto r = ns->listxattr(inode);
  if (!r.ok()) return r;
  r.value.push_back(REPLICATION_XATTR);
  if (ns->getattr(inode).value.type == InodeType::REGULAR) r.value.push_back(CHUNKS_XATTR);
  return r;
}

kj::Promise<Status> Master::removexattr(uint64_t inode, const std::string& name) {
  Status s = checkXattrName(name);
  if (!s.ok()) return s;
  if (name == REPLICATION_XATTR || name == CHUNKS_XATTR) {
    return Status(ErrorCode::NOT_PERMITTED, "cannot remove " + name);
  }
  return ns->removexattr(inode, name);
}

void Master::close(uint64_t inode) {
  if (!active_) return;  // a standby holds no opens; a deposed master changes nothing
  background.add(ns->closed(inode).then([this](MutationResult r) { finish(std::move(r)); }));
}

void Master::endSession(const std::set<uint64_t>& inodes) {
  if (inodes.empty()) return;
  background.add(timer_.afterDelay(opts.orphanGrace).then([this, inodes]() {
    for (uint64_t inode : inodes) close(inode);
  }));
}

static_assert(static_cast<int>(wire::FileType::BLOCK_DEVICE) ==
              static_cast<int>(InodeType::BLOCK_DEVICE));
static_assert(static_cast<int>(wire::FileType::SYMLINK) == static_cast<int>(InodeType::SYMLINK));

void fillAttr(const Inode& n, uint64_t chunkSize, wire::Attr::Builder out) {
  out.setInode(n.inode);
  // The two enums share their values (checked below), so the type converts directly.
  out.setType(static_cast<wire::FileType>(n.type));
  out.setRdev(n.rdev);
  out.setMode(n.mode);
  out.setUid(n.uid);
  out.setGid(n.gid);
  out.setNlink(n.nlink);
  out.setSize(n.size);
  out.setAtimeNs(n.atimeNs);
  out.setMtimeNs(n.mtimeNs);
  out.setCtimeNs(n.ctimeNs);
  out.setReplication(n.replication);
  out.setChunkCount(static_cast<uint32_t>((n.size + chunkSize - 1) / chunkSize));
}

void Master::describeMetrics() {
  clientCalls_ = std::make_unique<CallMetrics>(metrics_, "cairn_master",
                                               capnp::Schema::from<wire::ClientService>(), timer_);
  registryCalls_ = std::make_unique<CallMetrics>(
      metrics_, "cairn_master_registry", capnp::Schema::from<wire::ChunkserverRegistry>(), timer_);
  store->setMetrics(&metrics_);
  using T = Metrics::Type;
  auto& m = metrics_;
  m.describe("cairn_chunkservers", T::GAUGE, "chunkservers known, by state");
  m.describe("cairn_chunks", T::GAUGE, "chunks in the namespace, by replication state");
  m.describe("cairn_chunk_copies_in_flight", T::GAUGE, "re-replication and balancing copies now");
  m.describe("cairn_chunk_copies_total", T::COUNTER, "copies made by the master, by result");
  m.describe("cairn_replicas_dropped_total", T::COUNTER,
             "replicas dropped as corrupt or after a failed write");
  m.describe("cairn_balancer_chunks_looked_total", T::COUNTER,
             "chunks the balancer looked at for a move");
  m.describe("cairn_capacity_bytes", T::GAUGE, "disk of live chunkservers");
  m.describe("cairn_used_bytes", T::GAUGE, "disk used on live chunkservers");
  m.describe("cairn_available_bytes", T::GAUGE, "room for new chunks on live chunkservers");
  m.describe("cairn_chunkserver_capacity_bytes", T::GAUGE, "disk of each chunkserver");
  m.describe("cairn_chunkserver_used_bytes", T::GAUGE, "disk used on each chunkserver");
  m.describe("cairn_chunkserver_available_bytes", T::GAUGE,
             "room for new chunks on each chunkserver");
  m.describe("cairn_chunkserver_chunks", T::GAUGE, "replicas on each chunkserver");
  m.describe("cairn_chunkserver_heartbeat_age_seconds", T::GAUGE,
             "time since each chunkserver's last heartbeat");
  m.describe("cairn_inodes", T::GAUGE, "files, directories and other entries");
  m.describe("cairn_safe_mode", T::GAUGE, "1 in safe mode (manual: entered by an admin)");
  m.describe("cairn_leases", T::GAUGE, "chunks with a valid write lease");
  m.describe("cairn_master_active", T::GAUGE, "1 while this master is the active one");
  m.describe("cairn_master_epoch", T::GAUGE, "the newest epoch this master knows of");
  m.describe("cairn_master_log_entry", T::GAUGE, "the last metadata log entry applied here");
  m.describe("cairn_master_standbys", T::GAUGE,
             "standbys following this (active) master, by whether they are in sync");
  m.collect([this](const Metrics::GaugeSink& set) {
    auto h = chunks->health();
    set("cairn_chunks", {{"state", "total"}}, static_cast<double>(h.chunks));
    set("cairn_chunks", {{"state", "under_replicated"}}, static_cast<double>(h.underReplicated));
    set("cairn_chunks", {{"state", "missing"}}, static_cast<double>(h.missing));
    set("cairn_chunks", {{"state", "over_replicated"}}, static_cast<double>(h.overReplicated));
    set("cairn_chunks", {{"state", "corrupt"}}, static_cast<double>(h.corrupt));
    set("cairn_chunks", {{"state", "unchecked"}}, static_cast<double>(h.unchecked));
    set("cairn_chunks", {{"state", "on_one_rack"}}, static_cast<double>(h.onOneRack));
    set("cairn_chunk_copies_in_flight", {}, static_cast<double>(h.copiesInFlight));
    auto& r = chunks->repairs();
    set("cairn_chunk_copies_total", {{"result", "ok"}}, static_cast<double>(r.copiesDone));
    set("cairn_chunk_copies_total", {{"result", "failed"}}, static_cast<double>(r.copiesFailed));
    set("cairn_replicas_dropped_total", {}, static_cast<double>(r.replicasDropped));
    set("cairn_balancer_chunks_looked_total", {}, static_cast<double>(r.balancerLooks));
    double live = 0, dead = 0, draining = 0, capacity = 0, used = 0, available = 0;
    for (auto& s : chunks->servers()) {
      Labels at = {{"chunkserver", s.address}};
      set("cairn_chunkserver_capacity_bytes", at, static_cast<double>(s.capacityBytes));
      set("cairn_chunkserver_used_bytes", at, static_cast<double>(s.usedBytes));
      set("cairn_chunkserver_available_bytes", at, static_cast<double>(s.availableBytes));
      set("cairn_chunkserver_chunks", at, static_cast<double>(s.chunkCount));
      set("cairn_chunkserver_heartbeat_age_seconds", at,
          static_cast<double>(s.sinceHeartbeat / kj::MILLISECONDS) / 1000);
      if (!s.live) {
        ++dead;
        continue;
      }
      ++live;
      draining += s.decommissioning;
      capacity += static_cast<double>(s.capacityBytes);
      used += static_cast<double>(s.usedBytes);
      available += static_cast<double>(s.availableBytes);
    }
    set("cairn_chunkservers", {{"state", "live"}}, live);
    set("cairn_chunkservers", {{"state", "dead"}}, dead);
    set("cairn_chunkservers", {{"state", "decommissioning"}}, draining);
    set("cairn_capacity_bytes", {}, capacity);
    set("cairn_used_bytes", {}, used);
    set("cairn_available_bytes", {}, available);
    set("cairn_inodes", {}, static_cast<double>(ns->inodeCount()));
    set("cairn_safe_mode", {{"manual", chunks->inManualSafeMode() ? "true" : "false"}},
        chunks->inSafeMode() ? 1 : 0);
    set("cairn_leases", {}, static_cast<double>(chunks->leasesHeld()));
    set("cairn_master_active", {}, active_ ? 1 : 0);
    set("cairn_master_epoch", {}, static_cast<double>(store->currentEpoch()));
    set("cairn_master_log_entry", {}, static_cast<double>(store->lastLsn()));
    double inSync = 0, behind = 0;
    for (auto& f : standbys()) (f.inSync ? inSync : behind) += 1;
    set("cairn_master_standbys", {{"in_sync", "true"}}, inSync);
    set("cairn_master_standbys", {{"in_sync", "false"}}, behind);
  });
}

}  // namespace cairn
