// The master's service for clients: reads capnp parameters, calls the namespace and the
// chunk manager, fills in results. No policy lives here.

#include <capnp/dynamic.h>
#include <fmt/format.h>
#include <kj/debug.h>

#include <map>
#include <set>
#include <vector>

#include "authorizer.h"
#include "chunkserver_service.h"
#include "log.h"
#include "master.h"

namespace cairn {
namespace {

constexpr uint32_t MAX_READDIR = 4096;
constexpr uint32_t MAX_CHUNKS_PER_CALL = 4096;
constexpr uint32_t MAX_CLOSES_PER_CALL = 4096;  // schema: closeAll

// What dispatch reads of every call's parameters, found in the schema once per method:
// the request id (the retry cache) and the directories the call names (watches).
struct MethodFields {
  capnp::StructSchema params;
  kj::Maybe<capnp::StructSchema::Field> requestId;
  std::vector<capnp::StructSchema::Field> dirs;
};

const MethodFields* fieldsOf(uint16_t methodId) {
  static const std::vector<MethodFields> table = []() {
    std::vector<MethodFields> out;
    for (auto m : capnp::Schema::from<wire::ClientService>().getMethods()) {
      MethodFields f{m.getParamType(), nullptr, {}};
      f.requestId = f.params.findFieldByName("requestId");
      for (const char* dir : {"parent", "newParent", "srcParent", "dstParent"}) {
        KJ_IF_MAYBE (field, f.params.findFieldByName(dir)) f.dirs.push_back(*field);
      }
      out.push_back(kj::mv(f));
    }
    return out;
  }();
  return methodId < table.size() ? &table[methodId] : nullptr;
}

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// A chunk's location, with a token for reading it (or, from prepareWrite, writing it).
void fillChunk(Master& master, const ChunkView& v, TokenMode mode,
               wire::ChunkLocation::Builder out) {
  toWire(master.issueToken(v.record.handle, v.record.version, mode), out.initToken());
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
  out.setInlineWrites(v.inlineWrites);
}

// One client session (one connection): the files it holds open, shared by the services
// that make its calls for different callers (asCaller), and ended when the last goes.
struct Session {
  explicit Session(Master& master) : master(master) {}
  ~Session() {
    // The connection is gone: its opens end after a grace period (the client may be
    // reconnecting, and will hold them again).
    std::set<uint64_t> inodes;
    for (auto& [inode, o] : opens.byInode) inodes.insert(inode);
    master.endSession(inodes);
  }
  Master& master;
  OpenFiles opens;
  // Set once the client watches (a mount): what it was answered about is told when it
  // changes.
  std::shared_ptr<Watchers::Watch> watch;
};

// The calls of one session for one caller. Every namespace call goes through the
// Authorizer with the caller's credentials; this class only translates.
class ClientServiceImpl final : public wire::ClientService::Server {
 public:
  ClientServiceImpl(Master& master, Identity peer, std::shared_ptr<Session> session,
                    Result<Credentials> who)
      : master(master),
        ns(master.names()),
        chunks(master.chunkManager()),
        auth(master),
        peer(std::move(peer)),
        state(std::move(session)),
        who(std::move(who)) {}

  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    return master.clientCalls().measure(methodId, context, [&]() {
      // What this call commits is the session's own change (not told back to it).
      master.watchers().setOrigin(state->watch.get());
      KJ_DEFER(master.watchers().setOrigin(nullptr));
      if (!master.isActive()) {
        if (!master.servesReads() || !standbyAnswers(methodId)) return notActive(methodId, context);
        return wire::ClientService::Server::dispatchCall(interfaceId, methodId, context);
      }
      if (state->watch) answeredDirsOf(methodId, context);
      std::string key = requestKeyOf(methodId, context);
      if (key.empty())
        return wire::ClientService::Server::dispatchCall(interfaceId, methodId, context);
      // A retry of a mutation already applied (its reply was lost, in a failover say) gets
      // the outcome recorded then; a first attempt records it with its change.
      if (auto done = ns.recordedOutcome(key)) return replay(methodId, context, *done);
      master.metaStore().beginRequest(key);
      KJ_DEFER(master.metaStore().endRequest());
      return wire::ClientService::Server::dispatchCall(interfaceId, methodId, context);
    });
  }

  // A watching session is answered about the directories a call names, from before the
  // call reads or changes them: a change another session makes meanwhile is told.
  void answeredDirsOf(uint16_t methodId,
                      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>& context) {
    auto fields = fieldsOf(methodId);
    if (fields == nullptr || fields->dirs.empty()) return;
    auto params = context.getParams().getAs<capnp::DynamicStruct>(fields->params);
    for (auto& field : fields->dirs) answeredDir(params.get(field).as<uint64_t>());
  }

  // The retry-cache key of a call whose parameters carry a request id, else "".
  static std::string requestKeyOf(
      uint16_t methodId, capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>& context) {
    auto fields = fieldsOf(methodId);
    if (fields == nullptr) return "";
    KJ_IF_MAYBE (field, fields->requestId) {
      auto params = context.getParams().getAs<capnp::DynamicStruct>(fields->params);
      if (!params.has(*field)) return "";
      auto id = params.get(*field).as<wire::RequestId>();
      if (id.getClient() == 0) return "";
      return requestKey(id.getClient(), id.getSeq());
    }
    return "";
  }

  // Answers a call with a recorded outcome: ok, and the attributes where the results have
  // them.
  DispatchCallResult replay(uint16_t methodId,
                            capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>& context,
                            const MutationResult& done) {
    auto resultType =
        capnp::Schema::from<wire::ClientService>().getMethods()[methodId].getResultType();
    auto results = context.getResults().initAs<capnp::DynamicStruct>(resultType);
    toWire(Status::OK(), results.init("status").as<wire::Status>());
    Inode inode = done.inode;
    if (state->watch) {
      // A watching session caches what this answers (the session may be new: the first
      // attempt's was another): the inode as of now (its directories: dispatchCall).
      if (inode.inode != 0) {
        answeredInode(inode.inode);
        auto now = ns.getattr(inode.inode);
        if (now.ok()) inode = std::move(now.value);
      }
    }
    KJ_IF_MAYBE (attr, resultType.findFieldByName("attr")) {
      if (inode.inode != 0) fillAttr(inode, ns.chunkSize(), results.init(*attr).as<wire::Attr>());
    }
    // A create that also opened: the retry's session holds the file, as the first one's
    // did (that session may have been another master's).
    static const uint16_t createMethod =
        capnp::Schema::from<wire::ClientService>().getMethodByName("create").getOrdinal();
    if (methodId == createMethod && done.inode.inode != 0 &&
        context.getParams().getAs<wire::ClientService::CreateParams>().getOpen()) {
      hold(done.inode.inode, MAY_WRITE);
    }
    return {kj::READY_NOW, false};
  }

  // A standby answers no client call: notActive in the results' status, or (for calls
  // without one) a disconnected exception; either way the client goes on to the next master.
  DispatchCallResult notActive(uint16_t methodId,
                               capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>& context) {
    auto methods = capnp::Schema::from<wire::ClientService>().getMethods();
    KJ_REQUIRE(methodId < methods.size(), "unknown method", methodId);
    auto resultType = methods[methodId].getResultType();
    KJ_IF_MAYBE (field, resultType.findFieldByName("status")) {
      auto results = context.getResults().initAs<capnp::DynamicStruct>(resultType);
      auto status = results.init(*field).as<capnp::DynamicStruct>();
      status.set("code", capnp::DynamicEnum(capnp::Schema::from<wire::ErrorCode>(),
                                            static_cast<uint16_t>(ErrorCode::NOT_ACTIVE)));
      status.set("message", "this master is a standby");
      return {kj::READY_NOW, false};
    }
    return {KJ_EXCEPTION(DISCONNECTED, "this master is a standby"), false};
  }

  kj::Promise<void> lookup(LookupContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    reply(context, auth.lookup(who.value, p.getParent(), text(p.getName())));
    return kj::READY_NOW;
  }

  kj::Promise<void> getattr(GetattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    reply(context, ns.getattr(context.getParams().getInode()));
    return kj::READY_NOW;
  }

  kj::Promise<void> resolve(ResolveContext context) override {
    if (refused(context)) return kj::READY_NOW;
    reply(context, auth.resolve(who.value, text(context.getParams().getPath())));
    return kj::READY_NOW;
  }

  kj::Promise<void> mkdir(MkdirContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyLater(context, auth.mkdir(who.value, p.getParent(), text(p.getName()), p.getMode()),
                      {p.getParent()});
  }

  kj::Promise<void> create(CreateContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    bool open = p.getOpen();
    return replyLater(context,
                      auth.create(who.value, p.getParent(), text(p.getName()), p.getMode(),
                                  p.getReplication(), p.getExclusive(), open)
                          .then([this, open](MutationResult r) {
                            if (open && r.status.ok()) hold(r.inode.inode, MAY_WRITE);
                            return r;
                          }),
                      {p.getParent()});
  }

  kj::Promise<void> open(OpenContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    int access = p.getAccess() & (MAY_READ | MAY_WRITE);
    auto r = auth.open(who.value, p.getInode(), access);
    if (r.ok() && r.value.type == InodeType::REGULAR) hold(r.value.inode, access);
    reply(context, r);
    return kj::READY_NOW;
  }

  kj::Promise<void> close(CloseContext context) override {
    release(context.getParams().getInode());
    toWire(Status::OK(), context.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> closeAll(CloseAllContext context) override {
    auto inodes = context.getParams().getInodes();
    Status s = Status::OK();
    if (inodes.size() > MAX_CLOSES_PER_CALL) {
      s = Status::invalidArgument(
          fmt::format("{} closes in one call (at most {})", inodes.size(), MAX_CLOSES_PER_CALL));
    } else {
      for (uint64_t inode : inodes) release(inode);
    }
    toWire(s, context.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> session(SessionContext) override { return kj::READY_NOW; }

  kj::Promise<void> watch(WatchContext context) override {
    auto p = context.getParams();
    Status s = Status::OK();
    if (!p.hasWatcher()) {
      s = Status::invalidArgument("watch: no watcher");
    } else if (state->watch) {
      s = Status::alreadyExists("this session watches already");
    } else {
      state->watch = master.watchers().add(p.getWatcher());
    }
    toWire(s, context.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> asCaller(AsCallerContext context) override {
    auto p = context.getParams();
    auto gids = p.getGids();
    Credentials stated{p.getUid(), {}};
    for (size_t i = 0; i < gids.size() && i < 64; ++i) stated.gids.push_back(gids[i]);
    context.getResults().setService(
        kj::heap<ClientServiceImpl>(master, peer, state, credentialsFor(peer, stated)));
    return kj::READY_NOW;
  }

  kj::Promise<void> setattr(SetattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto set = p.getSet();
    SetAttrArgs args;
    if (set.getSetMode()) args.mode = set.getMode();
    if (set.getSetUid()) args.uid = set.getUid();
    if (set.getSetGid()) args.gid = set.getGid();
    if (set.getSetSize()) args.size = set.getSize();
    if (set.getSetAtime()) args.atimeNs = set.getAtimeNs();
    if (set.getSetMtime()) args.mtimeNs = set.getMtimeNs();
    return replyLater(context, auth.setattr(who.value, state->opens, p.getInode(), args));
  }

  kj::Promise<void> readdir(ReaddirContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto results = context.getResults();
    std::vector<Namespace::Entry> entries;
    bool more = false;
    uint32_t limit = std::min(std::max(p.getLimit(), 1u), MAX_READDIR);
    Status s = auth.readdir(who.value, p.getInode(), text(p.getAfter()), limit, entries, more);
    toWire(s, results.initStatus());
    if (!s.ok()) return kj::READY_NOW;
    answeredDir(p.getInode());
    auto list = results.initEntries(static_cast<uint>(entries.size()));
    for (size_t i = 0; i < entries.size(); ++i) {
      answeredInode(entries[i].inode.inode);
      list[i].setName(entries[i].name);
      fillAttr(entries[i].inode, ns.chunkSize(), list[i].initAttr());
    }
    results.setMore(more);
    return kj::READY_NOW;
  }

  kj::Promise<void> unlink(UnlinkContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyStatus(context, auth.unlink(who.value, p.getParent(), text(p.getName())),
                       {p.getParent()});
  }

  kj::Promise<void> rmdir(RmdirContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyStatus(context, auth.rmdir(who.value, p.getParent(), text(p.getName())),
                       {p.getParent()});
  }

  kj::Promise<void> rename(RenameContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyStatus(context,
                       auth.rename(who.value, p.getSrcParent(), text(p.getSrcName()),
                                   p.getDstParent(), text(p.getDstName()), p.getNoReplace()),
                       {p.getSrcParent(), p.getDstParent()});
  }

  kj::Promise<void> snapshot(SnapshotContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyLater(context,
                      auth.snapshot(who.value, p.getSource(), p.getParent(), text(p.getName())));
  }

  kj::Promise<void> shareChunks(ShareChunksContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    constexpr uint64_t MAX_FILE = uint64_t{1} << 46;  // 64 TiB files
    if (p.getSourceOffset() > MAX_FILE || p.getDestinationOffset() > MAX_FILE ||
        p.getLength() > MAX_FILE - p.getDestinationOffset()) {
      return fail(context, Status::invalidArgument("a range past the largest file size (64 TiB)"));
    }
    return auth
        .shareChunks(who.value, state->opens, p.getSource(), p.getSourceOffset(),
                     p.getDestination(), p.getDestinationOffset(), p.getLength())
        .then([this, context](Namespace::ShareResult r) mutable {
          auto results = context.getResults();
          toWire(r.mutation.status, results.initStatus());
          if (r.mutation.status.ok()) {
            fillAttr(r.mutation.inode, ns.chunkSize(), results.initAttr());
            results.setSharedOffset(r.sharedOffset);
            results.setSharedLength(r.sharedLength);
          }
        });
  }

  kj::Promise<void> setReplication(SetReplicationContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyLater(context, auth.setReplication(who.value, p.getInode(), p.getReplication()));
  }

  kj::Promise<void> trashList(TrashListContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto entries = auth.listTrash(who.value, 100000);
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
    if (refused(context)) return kj::READY_NOW;
    return replyLater(context, auth.restore(who.value, text(context.getParams().getPath())));
  }

  kj::Promise<void> decommission(DecommissionContext context) override {
    if (!isAdmin(peer)) return fail(context, notAdmin("decommission"));
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
    if (!isAdmin(peer)) return fail(context, notAdmin("balance"));
    double threshold = context.getParams().getThreshold();
    if (!(threshold >= 0 && threshold <= 10)) {
      return fail(context, Status::invalidArgument("threshold must be from 0 to 10"));
    }
    auto results = context.getResults();
    results.setSpread(chunks.balance(threshold));
    toWire(Status::OK(), results.initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> fsck(FsckContext context) override {
    if (refused(context)) return kj::READY_NOW;
    uint64_t inode = context.getParams().getInode();
    auto n = ns.getattr(inode);
    if (n.ok()) n.status = auth.mayReadChunks(who.value, state->opens, inode);
    if (n.ok() && n.value.type != InodeType::REGULAR) {
      n.status = Status::invalidArgument("fsck checks regular files");
    }
    if (!n.ok()) return fail(context, n.status);
    auto p = context.getParams();
    uint32_t count = std::min(p.getCount(), MAX_CHUNKS_PER_CALL);
    auto checks = chunks.check(inode, p.getFirstIndex(), count);
    auto results = context.getResults();
    toWire(Status::OK(), results.initStatus());
    uint64_t end = uint64_t{p.getFirstIndex()} + count;
    if (end <= UINT32_MAX) {
      if (auto next = ns.nextChunk(inode, static_cast<uint32_t>(end))) {
        results.setMore(true);
        results.setNextIndex(*next);
      }
    }
    auto list = results.initChunks(static_cast<uint>(checks.size()));
    for (size_t i = 0; i < checks.size(); ++i) {
      auto& c = checks[i];
      auto out = list[static_cast<uint>(i)];
      out.setIndex(c.index);
      out.setHandle(c.handle);
      out.setVersion(c.version);
      out.setGoal(c.goal);
      out.setVerdict(c.verdict);
      out.setFiles(c.files);
      auto replicas = out.initReplicas(static_cast<uint>(c.replicas.size()));
      for (size_t j = 0; j < c.replicas.size(); ++j) {
        replicas[static_cast<uint>(j)].setAddress(c.replicas[j].address);
        replicas[static_cast<uint>(j)].setState(c.replicas[j].state);
      }
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> safeMode(SafeModeContext context) override {
    auto action = context.getParams().getAction();
    if (action != wire::SafeModeAction::GET && !isAdmin(peer)) {
      return fail(context, notAdmin("safe mode"));
    }
    if (action == wire::SafeModeAction::ENTER) chunks.enterSafeMode();
    if (action == wire::SafeModeAction::LEAVE) chunks.leaveSafeMode();
    auto results = context.getResults();
    toWire(Status::OK(), results.initStatus());
    results.setSafeMode(chunks.inSafeMode());
    results.setManual(chunks.inManualSafeMode());
    return kj::READY_NOW;
  }

  kj::Promise<void> failover(FailoverContext context) override {
    if (!isAdmin(peer)) return fail(context, notAdmin("hand the active role over"));
    return fail(context, master.resign());
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
    results.setCorrupt(h.corrupt);
    results.setUnchecked(h.unchecked);
    results.setOnOneRack(h.onOneRack);
    return kj::READY_NOW;
  }

  kj::Promise<void> getChunks(GetChunksContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto results = context.getResults();
    auto n = ns.getattr(p.getInode());
    if (n.ok()) n.status = auth.mayReadChunks(who.value, state->opens, p.getInode());
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
    for (size_t i = 0; i < views.size(); ++i) fillChunk(master, views[i], TokenMode::READ, list[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> prepareWrite(PrepareWriteContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    Status allowed = auth.mayWriteChunks(who.value, state->opens, p.getInode());
    if (!allowed.ok()) return fail(context, allowed);
    uint64_t maxIndex = (uint64_t{1} << 46) / ns.chunkSize();  // 64 TiB files
    if (p.getIndex() >= maxIndex) {
      toWire(Status::invalidArgument("write past the largest file size (64 TiB)"),
             context.getResults().initStatus());
      return kj::READY_NOW;
    }
    if (p.getFailures().size() > 64) {
      toWire(Status::invalidArgument("more failures than replicas"),
             context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return chunks
        .prepareWrite(p.getInode(), p.getIndex(), fromWire(p.getFailures()), p.getFailedVersion())
        .then([this, context](Result<ChunkView> r) mutable {
          auto results = context.getResults();
          toWire(r.status, results.initStatus());
          if (r.ok()) fillChunk(master, r.value, TokenMode::WRITE, results.initChunk());
        });
  }

  kj::Promise<void> commitSize(CommitSizeContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    Status allowed = auth.mayWriteChunks(who.value, state->opens, p.getInode());
    if (!allowed.ok()) return fail(context, allowed);
    if (p.getSize() > (uint64_t{1} << 46)) {
      toWire(Status::invalidArgument("size past 64 TiB"), context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return replyLater(context, master.commitSize(p.getInode(), p.getSize(), p.getMtimeNs()));
  }

  kj::Promise<void> reportBadReplica(ReportBadReplicaContext context) override {
    if (!who.ok() || !master.isActive()) return kj::READY_NOW;
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
      list[i].setAvailableBytes(servers[i].availableBytes);
      list[i].setHeartbeatAgeMs(static_cast<uint64_t>(
          std::max<int64_t>(servers[i].sinceHeartbeat / kj::MILLISECONDS, 0)));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> symlink(SymlinkContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyLater(
        context, auth.symlink(who.value, p.getParent(), text(p.getName()), text(p.getTarget())),
        {p.getParent()});
  }

  kj::Promise<void> readlink(ReadlinkContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto r = ns.readlink(context.getParams().getInode());
    auto results = context.getResults();
    toWire(r.status, results.initStatus());
    if (r.ok()) results.setTarget(r.value);
    return kj::READY_NOW;
  }

  kj::Promise<void> link(LinkContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return replyLater(context,
                      auth.link(who.value, p.getInode(), p.getNewParent(), text(p.getNewName())),
                      {p.getNewParent()});
  }

  kj::Promise<void> mknod(MknodContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto type = static_cast<InodeType>(p.getType());
    if (static_cast<uint16_t>(p.getType()) > static_cast<uint16_t>(InodeType::BLOCK_DEVICE)) {
      toWire(Status::invalidArgument("unknown file type"), context.getResults().initStatus());
      return kj::READY_NOW;
    }
    return replyLater(
        context,
        auth.mknod(who.value, p.getParent(), text(p.getName()), type, p.getMode(), p.getRdev()),
        {p.getParent()});
  }

  kj::Promise<void> setxattr(SetxattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto value = p.getValue();
    return auth
        .setxattr(who.value, p.getInode(), text(p.getName()),
                  std::string(reinterpret_cast<const char*>(value.begin()), value.size()),
                  p.getFlags())
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> getxattr(GetxattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    auto r = auth.getxattr(who.value, p.getInode(), text(p.getName()));
    auto results = context.getResults();
    toWire(r.status, results.initStatus());
    if (r.ok()) {
      results.setValue(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(r.value.data()),
                                           r.value.size()));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> listxattr(ListxattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto r = auth.listxattr(who.value, context.getParams().getInode());
    auto results = context.getResults();
    toWire(r.status, results.initStatus());
    if (!r.ok()) return kj::READY_NOW;
    auto names = results.initNames(static_cast<uint>(r.value.size()));
    for (size_t i = 0; i < r.value.size(); ++i) names.set(static_cast<uint>(i), r.value[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> removexattr(RemovexattrContext context) override {
    if (refused(context)) return kj::READY_NOW;
    auto p = context.getParams();
    return auth.removexattr(who.value, p.getInode(), text(p.getName()))
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> syncMetadata(SyncMetadataContext context) override {
    return master.syncMetadata().then(
        [context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> statfs(StatfsContext context) override {
    auto results = context.getResults();
    // Free space is what new chunks may still use (above each chunkserver's reserve), so
    // that df shows the cluster full when writes would find no room.
    uint64_t capacity = 0, free = 0;
    for (auto& s : chunks.servers()) {
      if (!s.live) continue;
      capacity += s.capacityBytes;
      uint64_t unused = s.capacityBytes > s.usedBytes ? s.capacityBytes - s.usedBytes : 0;
      free += std::min(unused, s.availableBytes);
    }
    results.setCapacityBytes(capacity);
    results.setFreeBytes(free);
    results.setFiles(ns.inodeCount());
    return kj::READY_NOW;
  }

 private:
  // This session holds `inode` open once more.
  void hold(uint64_t inode, int access) {
    auto& o = state->opens.byInode[inode];
    if (o.count++ == 0) ns.opened(inode);
    if (access & MAY_WRITE) o.write = true;
  }

  // Ends one open of `inode` by this session (none held: nothing happens).
  void release(uint64_t inode) {
    auto& opens = state->opens.byInode;
    auto it = opens.find(inode);
    if (it != opens.end() && --it->second.count == 0) {
      opens.erase(it);
      master.close(inode);
    }
  }

  // Fails the call when this service's caller may not make namespace calls at all.
  template <typename Context>
  bool refused(Context& context) {
    if (who.ok()) return false;
    toWire(who.status, context.getResults().initStatus());
    return true;
  }

  Status notAdmin(const char* what) {
    return Status::notPermitted(fmt::format(
        "only an admin certificate may {} (this is a {} certificate)", what, roleName(peer.role)));
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
    if (!r.ok()) return;
    answeredInode(r.value.inode);
    fillAttr(r.value, ns.chunkSize(), results.initAttr());
  }

  // What a watching session was answered about (Watchers).
  void answeredDir(uint64_t dir) { master.watchers().answeredDir(state->watch.get(), dir); }
  void answeredInode(uint64_t inode) { master.watchers().answeredInode(state->watch.get(), inode); }

  // `dirs`: the directories the call changes, whose attributes go back with a success (in
  // results that have `dirs`).
  template <typename Context>
  kj::Promise<void> replyLater(Context& context, kj::Promise<MutationResult> pending,
                               std::vector<uint64_t> dirs = {}) {
    return pending.then([this, context, dirs = std::move(dirs)](MutationResult r) mutable {
      r = master.finish(std::move(r));
      auto results = context.getResults();
      toWire(r.status, results.initStatus());
      if (!r.status.ok()) return;
      if (state->watch && r.inode.inode != 0) {
        // A watching session caches the attributes from now on: they are told when they
        // change after this, so they must be those of now, not of when the call began.
        answeredInode(r.inode.inode);
        auto now = ns.getattr(r.inode.inode);
        if (now.ok()) r.inode = std::move(now.value);
      }
      fillAttr(r.inode, ns.chunkSize(), results.initAttr());
      fillDirs(results, dirs);
    });
  }

  template <typename Context>
  kj::Promise<void> replyStatus(Context& context, kj::Promise<MutationResult> pending,
                                std::vector<uint64_t> dirs) {
    return pending.then([this, context, dirs = std::move(dirs)](MutationResult r) mutable {
      r = master.finish(std::move(r));
      auto results = context.getResults();
      toWire(r.status, results.initStatus());
      if (r.status.ok()) fillDirs(results, dirs);
    });
  }

  template <typename Results>
  void fillDirs(Results& results, std::vector<uint64_t> dirs) {
    if constexpr (requires { results.initDirs(0); }) {
      std::sort(dirs.begin(), dirs.end());
      dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());
      std::vector<Inode> found;
      for (uint64_t d : dirs) {
        auto a = ns.getattr(d);
        if (!a.ok()) continue;
        answeredInode(d);
        found.push_back(std::move(a.value));
      }
      auto list = results.initDirs(static_cast<uint>(found.size()));
      for (size_t i = 0; i < found.size(); ++i) {
        fillAttr(found[i], ns.chunkSize(), list[static_cast<uint>(i)]);
      }
    }
  }

  Master& master;
  Namespace& ns;
  ChunkManager& chunks;
  Authorizer auth;
  Identity peer;
  std::shared_ptr<Session> state;
  Result<Credentials> who;
};

}  // namespace

kj::Own<wire::ClientService::Server> newClientService(Master& master, const Identity& peer) {
  return kj::heap<ClientServiceImpl>(master, peer, std::make_shared<Session>(master),
                                     credentialsFor(peer, std::nullopt));
}

}  // namespace cairn
