// The master's service for clients: reads capnp parameters, calls the namespace and the
// chunk manager, fills in results. No policy lives here.

#include <fmt/format.h>
#include <kj/debug.h>

#include <nlohmann/json.hpp>

#include "chunkserver_service.h"
#include "log.h"
#include "master.h"

namespace cairn {
namespace {

constexpr uint32_t MAX_READDIR = 4096;
constexpr uint32_t MAX_CHUNKS_PER_CALL = 4096;

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

void fillChunk(const ChunkView& v, wire::ChunkLocation::Builder out) {
  out.setIndex(v.record.index);
  out.setHandle(v.record.handle);
  out.setVersion(v.record.version);
  auto replicas = out.initReplicas(static_cast<uint>(v.replicas.size()));
  for (size_t i = 0; i < v.replicas.size(); ++i) {
    replicas[i].setAddress(v.replicas[i].address);
    replicas[i].setRack(v.replicas[i].rack);
  }
  out.setPrimary(v.primary);
  out.setLeaseRemainingMs(v.leaseRemainingMs);
}

class ClientServiceImpl final : public wire::ClientService::Server {
 public:
  explicit ClientServiceImpl(Master& master)
      : master(master), ns(master.names()), chunks(master.chunkManager()) {}

  kj::Promise<void> lookup(LookupContext context) override {
    auto p = context.getParams();
    reply(context, ns.lookup(p.getParent(), text(p.getName())));
    return kj::READY_NOW;
  }

  kj::Promise<void> getattr(GetattrContext context) override {
    reply(context, ns.getattr(context.getParams().getInode()));
    return kj::READY_NOW;
  }

  kj::Promise<void> resolve(ResolveContext context) override {
    reply(context, ns.resolve(text(context.getParams().getPath())));
    return kj::READY_NOW;
  }

  kj::Promise<void> mkdir(MkdirContext context) override {
    auto p = context.getParams();
    return replyLater(context, ns.mkdir(p.getParent(), text(p.getName()), p.getMode(),
                                        p.getUid(), p.getGid()));
  }

  kj::Promise<void> create(CreateContext context) override {
    auto p = context.getParams();
    return replyLater(context,
                      ns.create(p.getParent(), text(p.getName()), p.getMode(), p.getUid(),
                                p.getGid(), p.getReplication(), p.getExclusive()));
  }

  kj::Promise<void> setattr(SetattrContext context) override {
    auto p = context.getParams();
    auto set = p.getSet();
    uint64_t inode = p.getInode();
    SetAttrArgs args;
    if (set.getSetMode()) args.mode = set.getMode();
    if (set.getSetUid()) args.uid = set.getUid();
    if (set.getSetGid()) args.gid = set.getGid();
    if (set.getSetSize()) args.size = set.getSize();
    if (set.getSetAtime()) args.atimeNs = set.getAtimeNs();
    if (set.getSetMtime()) args.mtimeNs = set.getMtimeNs();
    auto current = ns.getattr(inode);
    kj::Promise<Status> cut = Status::OK();
    if (args.size && current.ok() && current.value.type == InodeType::REGULAR &&
        *args.size < current.value.size) {
      if (chunks.inSafeMode()) {
        return fail(context, Status(ErrorCode::SAFE_MODE, "master in safe mode; retry"));
      }
      // Cut the partial last chunk first: a crash in between then leaves zeros where the
      // file was being shortened, never old bytes inside a later extension.
      cut = chunks.truncateChunk(inode, *args.size);
    }
    return cut.then([this, context, inode, args](Status s) mutable -> kj::Promise<void> {
      if (!s.ok()) {
        toWire(s, context.getResults().initStatus());
        return kj::READY_NOW;
      }
      return replyLater(context, ns.setattr(inode, args));
    });
  }

  kj::Promise<void> readdir(ReaddirContext context) override {
    auto p = context.getParams();
    auto results = context.getResults();
    std::vector<Namespace::Entry> entries;
    bool more = false;
    uint32_t limit = std::min(std::max(p.getLimit(), 1u), MAX_READDIR);
    Status s = ns.readdir(p.getInode(), text(p.getAfter()), limit, entries, more);
    toWire(s, results.initStatus());
    if (!s.ok()) return kj::READY_NOW;
    auto list = results.initEntries(static_cast<uint>(entries.size()));
    for (size_t i = 0; i < entries.size(); ++i) {
      list[i].setName(entries[i].name);
      fillAttr(entries[i].inode, ns.chunkSize(), list[i].initAttr());
    }
    results.setMore(more);
    return kj::READY_NOW;
  }

  kj::Promise<void> unlink(UnlinkContext context) override {
    auto p = context.getParams();
    return replyStatus(context, ns.unlink(p.getParent(), text(p.getName())));
  }

  kj::Promise<void> rmdir(RmdirContext context) override {
    auto p = context.getParams();
    return replyStatus(context, ns.rmdir(p.getParent(), text(p.getName())));
  }

  kj::Promise<void> rename(RenameContext context) override {
    auto p = context.getParams();
    return replyStatus(context, ns.rename(p.getSrcParent(), text(p.getSrcName()),
                                          p.getDstParent(), text(p.getDstName()),
                                          p.getNoReplace()));
  }

  kj::Promise<void> setReplication(SetReplicationContext context) override {
    auto p = context.getParams();
    uint64_t inode = p.getInode();
    uint8_t goal = p.getReplication();
    return replyLater(context, ns.setReplication(inode, goal).then([this, inode, goal](
                                                                       MutationResult r) {
      if (r.status.ok()) chunks.goalChanged(inode, goal);
      return r;
    }));
  }

  kj::Promise<void> trashList(TrashListContext context) override {
    auto entries = ns.listTrash(100000);
    auto results = context.getResults();
    toWire(Status::OK(), results.initStatus());
    auto list = results.initEntries(static_cast<uint>(entries.size()));
    int64_t period = master.options().trashPeriod / kj::NANOSECONDS;
    for (size_t i = 0; i < entries.size(); ++i) {
      list[i].setPath(entries[i].path);
      list[i].setInode(entries[i].inode);
      list[i].setSize(entries[i].size);
      list[i].setDeletedNs(entries[i].deletedNs);
      list[i].setExpiresNs(entries[i].deletedNs + period);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> trashRestore(TrashRestoreContext context) override {
    return replyLater(context, ns.restore(text(context.getParams().getPath())));
  }

  kj::Promise<void> decommission(DecommissionContext context) override {
    uint64_t remaining = 0;
    bool done = false;
    Status s = chunks.decommission(text(context.getParams().getAddress()), remaining, done);
    auto results = context.getResults();
    toWire(s, results.initStatus());
    results.setRemaining(remaining);
    results.setDone(done);
    return kj::READY_NOW;
  }

  kj::Promise<void> balance(BalanceContext context) override {
    double threshold = context.getParams().getThreshold();
    if (!(threshold >= 0 && threshold <= 10)) {
      return fail(context, Status::invalidArgument("threshold must be from 0 to 10"));
    }
    auto results = context.getResults();
    results.setSpread(chunks.balance(threshold));
    toWire(Status::OK(), results.initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> clusterHealth(ClusterHealthContext context) override {
    auto h = chunks.health();
    auto results = context.getResults();
    results.setSafeMode(h.safeMode);
    results.setChunks(h.chunks);
    results.setUnderReplicated(h.underReplicated);
    results.setMissing(h.missing);
    results.setOverReplicated(h.overReplicated);
    results.setCopiesInFlight(h.copiesInFlight);
    return kj::READY_NOW;
  }

  kj::Promise<void> getChunks(GetChunksContext context) override {
    auto p = context.getParams();
    auto results = context.getResults();
    auto n = ns.getattr(p.getInode());
    if (!n.ok()) {
      toWire(n.status, results.initStatus());
      return kj::READY_NOW;
    }
    uint32_t count = std::min(p.getCount(), MAX_CHUNKS_PER_CALL);
    auto views = chunks.locate(p.getInode(), p.getFirstIndex(), count);
    toWire(Status::OK(), results.initStatus());
    results.setChunkSize(ns.chunkSize());
    results.setFileSize(n.value.size);
    auto list = results.initChunks(static_cast<uint>(views.size()));
    for (size_t i = 0; i < views.size(); ++i) fillChunk(views[i], list[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> prepareWrite(PrepareWriteContext context) override {
    auto p = context.getParams();
    uint64_t maxIndex = (uint64_t{1} << 46) / ns.chunkSize();  // 64 TiB files
    if (p.getIndex() >= maxIndex) {
      toWire(Status::invalidArgument("write past the largest file size (64 TiB)"),
             context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return chunks.prepareWrite(p.getInode(), p.getIndex(), text(p.getFailedReplica()))
        .then([context](Result<ChunkView> r) mutable {
          auto results = context.getResults();
          toWire(r.status, results.initStatus());
          if (r.ok()) fillChunk(r.value, results.initChunk());
        });
  }

  kj::Promise<void> commitSize(CommitSizeContext context) override {
    auto p = context.getParams();
    if (p.getSize() > (uint64_t{1} << 46)) {
      toWire(Status::invalidArgument("size past 64 TiB"), context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return replyLater(context, ns.commitSize(p.getInode(), p.getSize(), p.getMtimeNs()));
  }

  kj::Promise<void> reportBadReplica(ReportBadReplicaContext context) override {
    auto p = context.getParams();
    chunks.reportBadReplica(p.getHandle(), p.getVersion(), text(p.getAddress()));
    return kj::READY_NOW;
  }

  kj::Promise<void> clusterInfo(ClusterInfoContext context) override {
    auto results = context.getResults();
    results.setChunkSize(ns.chunkSize());
    results.setDefaultReplication(DEFAULT_REPLICATION);
    auto servers = chunks.servers();
    auto list = results.initServers(static_cast<uint>(servers.size()));
    for (size_t i = 0; i < servers.size(); ++i) {
      list[i].setAddress(servers[i].address);
      list[i].setRack(servers[i].rack);
      list[i].setCapacityBytes(servers[i].capacityBytes);
      list[i].setUsedBytes(servers[i].usedBytes);
      list[i].setChunkCount(servers[i].chunkCount);
      list[i].setLive(servers[i].live);
      list[i].setDecommissioning(servers[i].decommissioning);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> symlink(SymlinkContext context) override {
    auto p = context.getParams();
    return replyLater(context, ns.symlink(p.getParent(), text(p.getName()), text(p.getTarget()),
                                          p.getUid(), p.getGid()));
  }

  kj::Promise<void> readlink(ReadlinkContext context) override {
    auto r = ns.readlink(context.getParams().getInode());
    auto results = context.getResults();
    toWire(r.status, results.initStatus());
    if (r.ok()) results.setTarget(r.value);
    return kj::READY_NOW;
  }

  kj::Promise<void> link(LinkContext context) override {
    auto p = context.getParams();
    return replyLater(context, ns.link(p.getInode(), p.getNewParent(), text(p.getNewName())));
  }

  kj::Promise<void> mknod(MknodContext context) override {
    auto p = context.getParams();
    auto type = static_cast<InodeType>(p.getType());
    if (static_cast<uint16_t>(p.getType()) > static_cast<uint16_t>(InodeType::BLOCK_DEVICE)) {
      toWire(Status::invalidArgument("unknown file type"), context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return replyLater(context, ns.mknod(p.getParent(), text(p.getName()), type, p.getMode(),
                                        p.getUid(), p.getGid(), p.getRdev()));
  }

  kj::Promise<void> setxattr(SetxattrContext context) override {
    auto p = context.getParams();
    std::string name = text(p.getName());
    auto value = p.getValue();
    std::string v(reinterpret_cast<const char*>(value.begin()), value.size());
    Status s = checkXattrName(name);
    if (!s.ok()) return fail(context, s);
    if (name == REPLICATION_XATTR) {
      int goal = 0;
      try {
        goal = std::stoi(v);
      } catch (...) {
        return fail(context, Status::invalidArgument("replication must be a number"));
      }
      if (goal < 1 || goal > MAX_REPLICATION) {
        return fail(context, Status::invalidArgument("replication must be 1 to 32"));
      }
      return ns.setReplication(p.getInode(), static_cast<uint8_t>(goal))
          .then([context](MutationResult r) mutable {
            toWire(r.status, context.getResults().initStatus());
          });
    }
    if (name == CHUNKS_XATTR) return fail(context, Status(ErrorCode::NOT_PERMITTED, "read-only"));
    return ns.setxattr(p.getInode(), name, v, p.getFlags()).then([context](Status s) mutable {
      toWire(s, context.getResults().initStatus());
    });
  }

  kj::Promise<void> getxattr(GetxattrContext context) override {
    auto p = context.getParams();
    std::string name = text(p.getName());
    auto results = context.getResults();
    Result<std::string> r;
    Status s = checkXattrName(name);
    if (!s.ok()) {
      r = s;
    } else if (name == REPLICATION_XATTR || name == CHUNKS_XATTR) {
      r = virtualXattr(p.getInode(), name);
    } else {
      r = ns.getxattr(p.getInode(), name);
    }
    toWire(r.status, results.initStatus());
    if (r.ok()) {
      results.setValue(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(r.value.data()),
                                           r.value.size()));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> listxattr(ListxattrContext context) override {
    uint64_t inode = context.getParams().getInode();
    auto results = context.getResults();
    auto r = ns.listxattr(inode);
    toWire(r.status, results.initStatus());
    if (!r.ok()) return kj::READY_NOW;
    if (ns.getattr(inode).value.type == InodeType::REGULAR) {
      r.value.push_back(REPLICATION_XATTR);
      r.value.push_back(CHUNKS_XATTR);
    }
    auto names = results.initNames(static_cast<uint>(r.value.size()));
    for (size_t i = 0; i < r.value.size(); ++i) names.set(static_cast<uint>(i), r.value[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> removexattr(RemovexattrContext context) override {
    auto p = context.getParams();
    std::string name = text(p.getName());
    Status s = checkXattrName(name);
    if (!s.ok()) return fail(context, s);
    if (name == REPLICATION_XATTR || name == CHUNKS_XATTR) {
      return fail(context, Status(ErrorCode::NOT_PERMITTED, "cannot remove " + name));
    }
    return ns.removexattr(p.getInode(), name).then([context](Status s) mutable {
      toWire(s, context.getResults().initStatus());
    });
  }

  kj::Promise<void> statfs(StatfsContext context) override {
    auto results = context.getResults();
    uint64_t capacity = 0, free = 0;
    for (auto& s : chunks.servers()) {
      if (!s.live) continue;
      capacity += s.capacityBytes;
      free += s.capacityBytes > s.usedBytes ? s.capacityBytes - s.usedBytes : 0;
    }
    results.setCapacityBytes(capacity);
    results.setFreeBytes(free);
    results.setFiles(ns.inodeCount());
    return kj::READY_NOW;
  }

 private:
  static constexpr const char* REPLICATION_XATTR = "user.cairn.replication";
  static constexpr const char* CHUNKS_XATTR = "user.cairn.chunks";

  static Status checkXattrName(const std::string& name) {
    if (name.rfind("user.", 0) != 0) {
      return Status(ErrorCode::NOT_SUPPORTED, "only user.* attributes are supported");
    }
    if (name.size() > 255) return Status::nameTooLong("attribute name over 255 bytes");
    return Status::OK();
  }

  Result<std::string> virtualXattr(uint64_t inode, const std::string& name) {
    auto n = ns.getattr(inode);
    if (!n.ok()) return n.status;
    if (name == REPLICATION_XATTR) return std::to_string(n.value.replication);
    if (n.value.type != InodeType::REGULAR) return Status(ErrorCode::NO_ATTRIBUTE, name);
    // The chunk map with the replicas' addresses, for schedulers that place work by data.
    nlohmann::json chunksJson = nlohmann::json::array();
    uint64_t chunkSize = ns.chunkSize();
    uint32_t count = static_cast<uint32_t>((n.value.size + chunkSize - 1) / chunkSize);
    for (auto& v : chunks.locate(inode, 0, count)) {
      auto replicas = nlohmann::json::array();
      for (auto& r : v.replicas) replicas.push_back({{"address", r.address}, {"rack", r.rack}});
      uint64_t start = uint64_t{v.record.index} * chunkSize;
      chunksJson.push_back({{"index", v.record.index},
                            {"handle", fmt::format("{:x}", v.record.handle)},
                            {"version", v.record.version},
                            {"offset", start},
                            {"size", std::min(chunkSize, n.value.size - start)},
                            {"replicas", replicas}});
    }
    nlohmann::json j = {{"size", n.value.size}, {"chunk_size", chunkSize}, {"chunks", chunksJson}};
    return j.dump();
  }

  template <typename Context>
  kj::Promise<void> fail(Context& context, const Status& s) {
    toWire(s, context.getResults().initStatus());
    return kj::READY_NOW;
  }

  template <typename Context>
  void reply(Context& context, const Result<Inode>& r) {
    auto results = context.getResults();
    toWire(r.status, results.initStatus());
    if (r.ok()) fillAttr(r.value, ns.chunkSize(), results.initAttr());
  }

  template <typename Context>
  kj::Promise<void> replyLater(Context& context, kj::Promise<MutationResult> pending) {
    return pending.then([this, context](MutationResult r) mutable {
      chunks.release(r.releasedHandles);
      auto results = context.getResults();
      toWire(r.status, results.initStatus());
      if (r.status.ok()) fillAttr(r.inode, ns.chunkSize(), results.initAttr());
    });
  }

  template <typename Context>
  kj::Promise<void> replyStatus(Context& context, kj::Promise<MutationResult> pending) {
    return pending.then([this, context](MutationResult r) mutable {
      chunks.release(r.releasedHandles);
      toWire(r.status, context.getResults().initStatus());
    });
  }

  Master& master;
  Namespace& ns;
  ChunkManager& chunks;
};

}  // namespace

kj::Own<wire::ClientService::Server> newClientService(Master& master) {
  return kj::heap<ClientServiceImpl>(master);
}

}  // namespace cairn
