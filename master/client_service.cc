// The master's service for clients: reads capnp parameters, calls the namespace and the
// chunk manager, fills in results. No policy lives here.

#include <fmt/format.h>
#include <kj/debug.h>

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
                                          p.getDstParent(), text(p.getDstName())));
  }

  kj::Promise<void> setReplication(SetReplicationContext context) override {
    auto p = context.getParams();
    return replyLater(context, ns.setReplication(p.getInode(), p.getReplication()));
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
    return chunks.prepareWrite(p.getInode(), p.getIndex())
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
    }
    return kj::READY_NOW;
  }

 private:
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
