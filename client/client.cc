#include "client.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include <algorithm>
#include <cstring>

#include "address.h"
#include "log.h"
#include "names.h"
#include "parallel.h"

namespace cairn {
namespace {

constexpr uint32_t MAX_WRITE_PORTION = 8 << 20;  // one push-and-commit at most
constexpr uint32_t MAX_COPY_PORTION = 16 << 20;  // one server-side copy at most
constexpr uint32_t LAYOUT_BATCH = 1024;
constexpr size_t MAX_CLOSES_PER_CALL = 1024;  // closeAll's limit is 4,096
// How long appends in a row trust the file's size from the last one's commit (a truncate
// by another client within it may leave a hole before the next record).
constexpr kj::Duration APPEND_HINT_TTL = 1 * kj::SECONDS;

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

ChunkInfo chunkFromWire(wire::ChunkLocation::Reader c) {
  ChunkInfo out;
  out.index = c.getIndex();
  out.handle = c.getHandle();
  out.version = c.getVersion();
  for (auto r : c.getReplicas()) out.replicas.push_back({text(r.getAddress()), text(r.getRack())});
  out.primary = text(c.getPrimary());
  out.leaseRemainingMs = c.getLeaseRemainingMs();
  out.token = fromWire(c.getToken());
  return out;
}

bool retryable(ErrorCode code) {
  switch (code) {
    case ErrorCode::NOT_PRIMARY:
    case ErrorCode::LEASE_EXPIRED:
    case ErrorCode::STALE_VERSION:
    case ErrorCode::UNAVAILABLE:
    case ErrorCode::BUSY:
    case ErrorCode::REPLICA_CORRUPT:
    case ErrorCode::IO_ERROR:
    case ErrorCode::SAFE_MODE:
    case ErrorCode::DATA_NOT_PUSHED:
    case ErrorCode::TOKEN_INVALID:  // expired, or signed by a key the chunkserver lacks yet
      return true;
    default:
      return false;
  }
}

kj::Duration backoff(uint32_t attempt) {
  return std::min<int64_t>(100 << std::min<uint32_t>(attempt, 5), 2000) * kj::MILLISECONDS;
}

}  // namespace

FileAttr attrFromWire(wire::Attr::Reader a) {
  FileAttr f;
  f.inode = a.getInode();
  f.type = a.getType();
  f.mode = a.getMode();
  f.uid = a.getUid();
  f.gid = a.getGid();
  f.nlink = a.getNlink();
  f.size = a.getSize();
  f.atimeNs = a.getAtimeNs();
  f.mtimeNs = a.getMtimeNs();
  f.ctimeNs = a.getCtimeNs();
  f.replication = a.getReplication();
  f.chunkCount = a.getChunkCount();
  f.rdev = a.getRdev();
  return f;
}

static uint64_t systemSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

Client::Client(ClientOptions options, kj::Network& network, kj::Timer& timer)
    : opts(std::move(options)),
      timer(timer),
      peers(network, timer, opts.security, opts.connectTimeout),
      rng(opts.seed != 0 ? opts.seed : systemSeed()) {
  for (size_t start = 0; start <= opts.master.size();) {
    size_t comma = std::min(opts.master.find(',', start), opts.master.size());
    if (comma > start) masters.push_back(opts.master.substr(start, comma - start));
    start = comma + 1;
  }
  if (masters.empty()) masters.push_back(opts.master);
  // Never from opts.seed: two clients with one id would be answered each other's outcomes.
  clientId = systemSeed() | 1;
  const char* env = getenv("CAIRN_STANDBY_READS");
  standbyReads =
      opts.standbyReads.value_or(env != nullptr && std::string(env) == "1") && masters.size() > 1;
  readerIndex = 1 % masters.size();
  keepalive = keepSession().eagerlyEvaluate(nullptr);
}

Client::~Client() = default;

namespace {
template <typename Response>
Result<FileAttr> attrResult(Response& r) {
  Status s = fromWire(r.getStatus());
  if (!s.ok()) return s;
  return attrFromWire(r.getAttr());
}
template <typename Response>
Status statusOf(Response& r) {
  return fromWire(r.getStatus());
}
}  // namespace

wire::ClientService::Client Client::callerService(
    wire::ClientService::Client& base, std::map<Caller, wire::ClientService::Client>& cache,
    const std::optional<Caller>& caller) {
  const std::optional<Caller>& as = caller ? caller : opts.defaultCaller;
  if (!as) return base;
  auto found = cache.find(*as);
  if (found != cache.end()) return found->second;
  if (cache.size() >= 4096) cache.clear();
  auto req = base.asCallerRequest();
  req.setUid(as->uid);
  auto gids = req.initGids(static_cast<uint>(std::min<size_t>(as->gids.size(), 64)));
  for (uint i = 0; i < gids.size(); ++i) gids.set(i, as->gids[i]);
  auto service = req.send().getService();
  cache.emplace(*as, service);
  return service;
}

kj::Maybe<wire::ClientService::Client> Client::reader(const std::optional<Caller>& as) {
  if (!standbyReads || timer.now() < readersPausedUntil) return nullptr;
  if (readerIndex == masterIndex) {
    readerService = nullptr;
    readerCallers.clear();
    readerIndex = (readerIndex + 1) % masters.size();
  }
  KJ_IF_MAYBE (s, readerService) {
    return callerService(*s, readerCallers, as);
  }
  auto service = peers.get<wire::Master>(masters[readerIndex], Role::MASTER)
                     .clientRequest()
                     .send()
                     .getService();
  readerService = service;
  return callerService(service, readerCallers, as);
}

void Client::readerFailed() {
  readerService = nullptr;
  readerCallers.clear();
  // (The active may have moved here since the call went: its session stays.)
  if (readerIndex != masterIndex) peers.drop(masters[readerIndex]);
  readerIndex = (readerIndex + 1) % masters.size();
  if (readerIndex == masterIndex) readerIndex = (readerIndex + 1) % masters.size();
  // Once each standby failed in a row, the active answers alone for a while.
  if (++readerFailures + 1 >= masters.size()) {
    readerFailures = 0;
    readersPausedUntil = timer.now() + 5 * kj::SECONDS;
  }
}

wire::ClientService::Client Client::master(const std::optional<Caller>& as) {
  KJ_IF_MAYBE (s, masterService) {
    return callerService(*s, callerServices, as);
  }
  masterService =
      peers.get<wire::Master>(currentMaster(), Role::MASTER).clientRequest().send().getService();
  closing.clear();  // ends of opens of the last session, which held them (its end ends them)
  if (!held.empty()) {
    // A new session: the files this client holds are opened again, each for whom it was
    // opened, before any other call (calls on one connection arrive in order).
    // Opens still on their way are not: their own call goes again on this session.
    for (auto& [inode, opens] : held) {
      auto on = opening.find(inode);
      size_t pending = on == opening.end() ? 0 : on->second;
      for (size_t i = 0; i + pending < opens.size(); ++i) {
        auto req = master(opens[i].as).openRequest();
        req.setInode(inode);
        req.setAccess(static_cast<uint8_t>(opens[i].access));
        req.send().detach([](kj::Exception&&) {});
      }
    }
  }
  return master(as);
}

kj::Promise<void> Client::keepSession() {
  // While files are held open, the session is kept up: a lost connection is noticed and
  // the opens sent again, even when the client is otherwise idle.
  return timer.afterDelay(10 * kj::SECONDS).then([this]() -> kj::Promise<void> {
    if (held.empty()) return keepSession();
    auto req = master().sessionRequest();
    return timer.timeoutAfter(opts.metaTimeout, req.send())
        .then([](auto&&) {}, [this](kj::Exception&&) { masterFailed(); })
        .then([this]() { return keepSession(); });
  });
}

void Client::unhold(uint64_t inode) {
  auto it = held.find(inode);
  if (it == held.end()) return;
  it->second.pop_back();
  if (it->second.empty()) held.erase(it);
}

kj::Promise<Result<FileAttr>> Client::open(uint64_t inode, int access, std::optional<Caller> as) {
  auto req = master(as).openRequest();  // (a new session made here opens what was held)
  req.setInode(inode);
  req.setAccess(static_cast<uint8_t>(access));
  // Counted before the request goes: a close() of an earlier open, made while this one is
  // on its way, must not tell the master that nothing holds the file.
  held[inode].push_back(HeldOpen{as, access});
  ++opening[inode];
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); })
      .then([this, inode](Result<FileAttr> a) {
        if (--opening[inode] == 0) opening.erase(inode);
        // The master holds nothing for this one: only the count made above goes.
        if (!a.ok() || a.value.type != FileType::REGULAR) unhold(inode);
        return a;
      });
}

kj::Promise<void> Client::close(uint64_t inode) {
  if (held.count(inode) == 0) return kj::READY_NOW;
  unhold(inode);
  if (opts.closeDelay > 0 * kj::SECONDS) {
    // Sent with the others of the next closeDelay, or at once when a call's worth waits.
    closing.push_back(inode);
    if (closing.size() >= MAX_CLOSES_PER_CALL) {
      sendCloses().detach([](kj::Exception&&) {});
    } else if (closing.size() == 1) {
      closingTimer = timer.afterDelay(opts.closeDelay)
                         .then([this]() { sendCloses().detach([](kj::Exception&&) {}); })
                         .eagerlyEvaluate(nullptr);
    }
    return kj::READY_NOW;
  }
  // Every open is closed at the master too (it counts them per session), so that a close
  // and an open of one file crossing on the way cannot end its hold. Waited for, so that a
  // process that exits next has closed its files (a lost session closes them only after a
  // grace period); a failure is not the caller's: the session's end closes it.
  auto req = master().closeRequest();
  req.setInode(inode);
  return timer.timeoutAfter(opts.metaTimeout, req.send())
      .then([](auto&&) {}, [](kj::Exception&&) {});
}

kj::Promise<void> Client::sendCloses() {
  if (masterService == nullptr) closing.clear();  // the session is gone, and with it these
  if (closing.empty()) return kj::READY_NOW;
  auto req = master().closeAllRequest();
  auto inodes = req.initInodes(static_cast<unsigned>(closing.size()));
  for (size_t i = 0; i < closing.size(); ++i) inodes.set(static_cast<unsigned>(i), closing[i]);
  closing.clear();
  // As for close(): a failure is not the caller's, the session's end closes them.
  return timer.timeoutAfter(opts.metaTimeout, req.send())
      .then([](auto&&) {}, [](kj::Exception&&) {});
}

void Client::masterFailed() {
  masterService = nullptr;
  callerServices.clear();
  peers.drop(currentMaster());
  // The next call tries the next master: the active one may have changed.
  masterIndex = (masterIndex + 1) % masters.size();
}

Status Client::masterError(const kj::Exception& e, kj::Duration timeout) {
  if (e.getType() == kj::Exception::Type::OVERLOADED) {
    return Status::unavailable(
        fmt::format("master {} did not answer within {} s", opts.master, timeout / kj::SECONDS));
  }
  return Status::unavailable(
      fmt::format("cannot reach master at {}: {}", opts.master, e.getDescription().cStr()));
}

struct Client::MasterCall {
  std::optional<Caller> as;
  uint16_t method = 0;
  capnp::MallocMessageBuilder params;
  kj::Duration timeout = 0 * kj::SECONDS;
  kj::TimePoint deadline = kj::origin<kj::TimePoint>();
  uint32_t attempt = 0;
  bool read = false;  // a read-only call: a standby may answer it
};

namespace {

// The ordinal of the ClientService method whose parameters are `P`.
template <typename P>
uint16_t clientMethodOf() {
  static const uint16_t ordinal = []() -> uint16_t {
    for (auto m : capnp::Schema::from<wire::ClientService>().getMethods()) {
      if (m.getParamType().getProto().getId() == capnp::typeId<P>()) return m.getOrdinal();
    }
    KJ_FAIL_ASSERT("not the parameters of a ClientService method");
  }();
  return ordinal;
}

}  // namespace

kj::Promise<bool> Client::retryMaster(MasterCall& call, bool timedOut) {
  // One master that timed out is not asked again (the call may be running there still);
  // with several, the next is.
  if ((timedOut && masters.size() == 1) || timer.now() >= call.deadline) return false;
  uint32_t attempt = call.attempt++;
  // Each master once at once, then one every 250 ms: a failover is over a moment after the
  // dead master's ZooKeeper session expires, and the wait should end then too.
  if (attempt + 1 < masters.size()) return true;
  return timer.afterDelay(250 * kj::MILLISECONDS).then([]() { return true; });
}

kj::Promise<capnp::Response<capnp::AnyPointer>> Client::sendCall(
    wire::ClientService::Client service, MasterCall& call) {
  auto req = service.typelessRequest(capnp::typeId<wire::ClientService>(), call.method, nullptr);
  req.set(call.params.getRoot<capnp::AnyPointer>().asReader());
  return timer.timeoutAfter(call.timeout, req.send());
}

template <typename T, typename R, typename Fn>
kj::Promise<T> Client::attemptMaster(std::shared_ptr<MasterCall> call,
                                     std::shared_ptr<Fn> onResponse) {
  if (call->read) {
    call->read = false;  // one try on a standby; then the active
    KJ_IF_MAYBE (standby, reader(call->as)) {
      return sendCall(*standby, *call)
          .then(
              [this, call,
               onResponse](capnp::Response<capnp::AnyPointer>&& response) -> kj::Promise<T> {
                auto r = response.getAs<R>();
                bool answered = true;
                if constexpr (requires { r.getStatus(); }) {
                  answered = r.getStatus().getCode() != wire::ErrorCode::NOT_ACTIVE;
                  if (!answered) readerFailed();
                }
                // A chunk the standby knows no replica of may be one just written: the
                // active knows.
                if constexpr (std::is_same_v<R, wire::ClientService::GetChunksResults>) {
                  for (auto c : r.getChunks()) answered = answered && c.getReplicas().size() > 0;
                }
                if (answered) {
                  readerFailures = 0;
                  return (*onResponse)(r);
                }
                return attemptMaster<T, R>(call, onResponse);
              },
              [this, call, onResponse](kj::Exception&&) -> kj::Promise<T> {
                readerFailed();
                return attemptMaster<T, R>(call, onResponse);
              });
    }
  }
  return sendCall(master(call->as), *call)
      .then(
          [this, call,
           onResponse](capnp::Response<capnp::AnyPointer>&& response) -> kj::Promise<T> {
            auto r = response.getAs<R>();
            if constexpr (requires { r.getStatus(); }) {
              if (r.getStatus().getCode() == wire::ErrorCode::NOT_ACTIVE) {
                masterFailed();
                return retryMaster(*call, false)
                    .then([this, call, onResponse,
                           response = kj::mv(response)](bool again) mutable -> kj::Promise<T> {
                      if (again) return attemptMaster<T, R>(call, onResponse);
                      auto last = response.getAs<R>();
                      return (*onResponse)(last);
                    });
              }
            }
            return (*onResponse)(r);
          },
          [this, call, onResponse](kj::Exception&& e) -> kj::Promise<T> {
            masterFailed();
            bool timedOut = e.getType() == kj::Exception::Type::OVERLOADED;
            Status failure = masterError(e, call->timeout);
            return retryMaster(*call, timedOut)
                .then([this, call, onResponse, failure](bool again) -> kj::Promise<T> {
                  if (again) return attemptMaster<T, R>(call, onResponse);
                  return T(failure);
                });
          });
}

template <typename T, typename P, typename R, typename Fn>
kj::Promise<T> Client::callMaster(std::optional<Caller> as, capnp::Request<P, R>&& request,
                                  Fn&& onResponse, kj::Duration timeout) {
  auto call = std::make_shared<MasterCall>();
  call->as = std::move(as);
  call->method = clientMethodOf<P>();
  // A mutation gets an id, so that the master applies it once however often it is sent.
  if constexpr (requires { request.initRequestId(); }) {
    auto id = request.initRequestId();
    id.setClient(clientId);
    id.setSeq(nextRequest++);
  }
  call->read = standbyReads && standbyAnswers(call->method);
  // Kept to be sent again, to another master after a failover.
  call->params.setRoot(request.asReader());
  call->timeout = timeout == 0 * kj::SECONDS ? opts.metaTimeout : timeout;
  call->deadline = timer.now() + opts.masterRetryFor.value_or(masters.size() > 1 ? 30 * kj::SECONDS
                                                                                 : 5 * kj::SECONDS);
  using F = std::decay_t<Fn>;
  return attemptMaster<T, R>(std::move(call), std::make_shared<F>(kj::fwd<Fn>(onResponse)));
}

kj::Promise<Result<FileAttr>> Client::resolve(std::string path, std::optional<Caller> as) {
  auto req = master(as).resolveRequest();
  req.setPath(path);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

kj::Promise<Result<FileAttr>> Client::lookup(uint64_t parent, std::string name,
                                             std::optional<Caller> as) {
  auto req = master(as).lookupRequest();
  req.setParent(parent);
  req.setName(name);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

template <typename Response>
void Client::noteDirs(Response& r, std::initializer_list<uint64_t> changed,
                      uint64_t forgetsBefore) {
  std::vector<FileAttr> dirs;
  // Attributes from a call that was on its way while other attributes were forgotten (a
  // chmod, say) may predate that change: not kept.
  if (opts.dirAttrTtl > 0 * kj::SECONDS && r.hasDirs() && forgetsBefore == dirForgets) {
    for (auto d : r.getDirs()) dirs.push_back(attrFromWire(d));
  }
  auto now = timer.now();
  if (freshDirs.size() >= 4096) {
    std::erase_if(freshDirs, [now](const auto& e) { return e.second.until <= now; });
  }
  for (uint64_t d : changed) {
    auto back = std::find_if(dirs.begin(), dirs.end(), [d](const FileAttr& a) {
      return a.inode == d && a.type == FileType::DIRECTORY;
    });
    auto kept = freshDirs.find(d);
    if (back == dirs.end()) {
      if (kept != freshDirs.end()) freshDirs.erase(kept);
    } else if (kept == freshDirs.end() || kept->second.attr.ctimeNs <= back->ctimeNs) {
      // Of two calls in flight at once, the later change's attributes stay.
      freshDirs.insert_or_assign(d, FreshDir{*back, now + opts.dirAttrTtl});
    }
  }
}

void Client::forgetDir(uint64_t inode) {
  freshDirs.erase(inode);
  dirForgets++;
}

kj::Promise<Result<FileAttr>> Client::getattr(uint64_t inode, std::optional<Caller> as) {
  auto fresh = freshDirs.find(inode);
  if (fresh != freshDirs.end()) {
    if (timer.now() < fresh->second.until) return Result<FileAttr>(fresh->second.attr);
    freshDirs.erase(fresh);
  }
  auto req = master(as).getattrRequest();
  req.setInode(inode);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

kj::Promise<Result<FileAttr>> Client::mkdir(uint64_t parent, std::string name, uint32_t mode,
                                            std::optional<Caller> as) {
  auto req = master(as).mkdirRequest();
  req.setParent(parent);
  req.setName(name);
  req.setMode(mode);
  return callMaster<Result<FileAttr>>(as, kj::mv(req),
                                      [this, parent, forgets = dirForgets](auto& r) {
                                        noteDirs(r, {parent}, forgets);
                                        return attrResult(r);
                                      });
}

kj::Promise<Result<FileAttr>> Client::create(uint64_t parent, std::string name, uint32_t mode,
                                             uint8_t replication, bool exclusive, bool open,
                                             std::optional<Caller> as) {
  auto req = master(as).createRequest();
  req.setParent(parent);
  req.setName(name);
  req.setMode(mode);
  req.setReplication(replication);
  req.setExclusive(exclusive);
  req.setOpen(open);
  return callMaster<Result<FileAttr>>(as, kj::mv(req),
                                      [this, open, as, parent, forgets = dirForgets](auto& r) {
                                        noteDirs(r, {parent}, forgets);
                                        auto a = attrResult(r);
                                        if (open && a.ok())
                                          held[a.value.inode].push_back(HeldOpen{as, ACCESS_WRITE});
                                        return a;
                                      });
}

kj::Promise<Result<FileAttr>> Client::setattr(uint64_t inode, SetAttrRequest a,
                                              std::optional<Caller> as) {
  forgetLayout(inode);
  forgetDir(inode);
  appendHints.erase(inode);  // a new size, and a new version of the last chunk
  auto req = master(as).setattrRequest();
  req.setInode(inode);
  auto set = req.initSet();
  if (a.mode) {
    set.setSetMode(true);
    set.setMode(*a.mode);
  }
  if (a.uid) {
    set.setSetUid(true);
    set.setUid(*a.uid);
  }
  if (a.gid) {
    set.setSetGid(true);
    set.setGid(*a.gid);
  }
  if (a.size) {
    set.setSetSize(true);
    set.setSize(*a.size);
  }
  if (a.atimeNs) {
    set.setSetAtime(true);
    set.setAtimeNs(*a.atimeNs);
  }
  if (a.mtimeNs) {
    set.setSetMtime(true);
    set.setMtimeNs(*a.mtimeNs);
  }
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

kj::Promise<Result<std::vector<DirEntryInfo>>> Client::readdir(uint64_t inode, std::string after,
                                                               uint32_t limit, bool* more,
                                                               std::optional<Caller> as) {
  auto req = master(as).readdirRequest();
  req.setInode(inode);
  req.setAfter(after);
  req.setLimit(limit);
  return callMaster<Result<std::vector<DirEntryInfo>>>(
      as, kj::mv(req), [more](auto& r) -> Result<std::vector<DirEntryInfo>> {
        Status s = fromWire(r.getStatus());
        if (!s.ok()) return s;
        std::vector<DirEntryInfo> out;
        for (auto e : r.getEntries()) out.push_back({text(e.getName()), attrFromWire(e.getAttr())});
        if (more != nullptr) *more = r.getMore();
        return out;
      });
}

kj::Promise<Result<std::vector<DirEntryInfo>>> Client::listAll(uint64_t dir,
                                                               std::optional<Caller> as) {
  return listFrom(dir, {}, std::move(as));
}

kj::Promise<Result<std::vector<DirEntryInfo>>> Client::listFrom(uint64_t dir,
                                                                std::vector<DirEntryInfo> sofar,
                                                                std::optional<Caller> as) {
  std::string after = sofar.empty() ? "" : sofar.back().name;
  auto more = kj::heap<bool>(false);
  bool* morePtr = more.get();
  return readdir(dir, after, 4096, morePtr, as)
      .then([this, dir, sofar = std::move(sofar), more = kj::mv(more),
             as](Result<std::vector<DirEntryInfo>> page) mutable
            -> kj::Promise<Result<std::vector<DirEntryInfo>>> {
        if (!page.ok()) return Result<std::vector<DirEntryInfo>>(page.status);
        bool last = !*more || page.value.empty();
        for (auto& e : page.value) sofar.push_back(std::move(e));
        if (last) return Result<std::vector<DirEntryInfo>>(std::move(sofar));
        return listFrom(dir, std::move(sofar), as);
      });
}

kj::Promise<Result<FileAttr>> Client::makeDirs(std::string path, std::optional<Caller> as) {
  auto names = splitPath(path);
  if (!names.ok()) return Result<FileAttr>(names.status);
  return resolve("/", as).then([this, names = std::move(names.value), as](
                                   Result<FileAttr> root) mutable -> kj::Promise<Result<FileAttr>> {
    if (!root.ok()) return root;
    return makeDirsFrom(std::move(root.value), std::move(names), 0, as);
  });
}

kj::Promise<Result<FileAttr>> Client::makeDirsFrom(FileAttr dir, std::vector<std::string> names,
                                                   size_t next, std::optional<Caller> as) {
  if (next == names.size()) return Result<FileAttr>(std::move(dir));
  if (dir.type != FileType::DIRECTORY) {
    return Result<FileAttr>(
        Status::notDirectory(fmt::format("'{}' is not a directory", names[next - 1])));
  }
  uint64_t parent = dir.inode;
  std::string name = names[next];
  return lookup(parent, name, as)
      .then([this, parent, name, as](Result<FileAttr> found) -> kj::Promise<Result<FileAttr>> {
        if (found.status.code() != ErrorCode::NOT_FOUND) return found;
        return mkdir(parent, name, 0755, as).then([this, parent, name, as](Result<FileAttr> made) {
          // Another client made it first: use theirs.
          if (made.status.code() == ErrorCode::ALREADY_EXISTS) return lookup(parent, name, as);
          return kj::Promise<Result<FileAttr>>(std::move(made));
        });
      })
      .then([this, names = std::move(names), next,
             as](Result<FileAttr> got) mutable -> kj::Promise<Result<FileAttr>> {
        if (!got.ok()) return got;
        return makeDirsFrom(std::move(got.value), std::move(names), next + 1, as);
      });
}

kj::Promise<Status> Client::removeTree(uint64_t parent, std::string name,
                                       std::optional<Caller> as) {
  return lookup(parent, name, as)
      .then([this, parent, name, as](Result<FileAttr> attr) -> kj::Promise<Status> {
        if (!attr.ok()) return attr.status;
        if (attr.value.type != FileType::DIRECTORY) return unlink(parent, name, as);
        uint64_t dir = attr.value.inode;
        return listAll(dir, as)
            .then(
                [this, dir, as](Result<std::vector<DirEntryInfo>> entries) -> kj::Promise<Status> {
                  if (!entries.ok()) return entries.status;
                  return removeEntries(dir, std::move(entries.value), 0, as);
                })
            .then([this, parent, name, as](Status s) -> kj::Promise<Status> {
              if (!s.ok()) return s;
              return rmdir(parent, name, as);
            });
      });
}

kj::Promise<Status> Client::removeEntries(uint64_t dir, std::vector<DirEntryInfo> entries,
                                          size_t next, std::optional<Caller> as) {
  if (next == entries.size()) return Status::OK();
  std::string name = entries[next].name;
  return removeTree(dir, name, as)
      .then([this, dir, entries = std::move(entries), next,
             as](Status s) mutable -> kj::Promise<Status> {
        // Gone already (another remover): fine.
        if (!s.ok() && s.code() != ErrorCode::NOT_FOUND) return s;
        return removeEntries(dir, std::move(entries), next + 1, as);
      });
}

kj::Promise<Status> Client::unlink(uint64_t parent, std::string name, std::optional<Caller> as) {
  // Closes that wait go first: a file closed here just before is then no orphan to record
  // and delete later, but deleted at once. Likewise for rename (a replaced file).
  sendCloses().detach([](kj::Exception&&) {});
  auto req = master(as).unlinkRequest();
  req.setParent(parent);
  req.setName(name);
  return callMaster<Status>(as, kj::mv(req), [this, parent, forgets = dirForgets](auto& r) {
    noteDirs(r, {parent}, forgets);
    return statusOf(r);
  });
}

kj::Promise<Status> Client::rmdir(uint64_t parent, std::string name, std::optional<Caller> as) {
  auto req = master(as).rmdirRequest();
  req.setParent(parent);
  req.setName(name);
  return callMaster<Status>(as, kj::mv(req), [this, parent, forgets = dirForgets](auto& r) {
    noteDirs(r, {parent}, forgets);
    return statusOf(r);
  });
}

kj::Promise<Status> Client::rename(uint64_t srcParent, std::string srcName, uint64_t dstParent,
                                   std::string dstName, bool noReplace, std::optional<Caller> as) {
  sendCloses().detach([](kj::Exception&&) {});
  auto req = master(as).renameRequest();
  req.setSrcParent(srcParent);
  req.setSrcName(srcName);
  req.setDstParent(dstParent);
  req.setDstName(dstName);
  req.setNoReplace(noReplace);
  return callMaster<Status>(as, kj::mv(req), [this, srcParent, dstParent](auto& r) {
    // A directory moved has a new ctime, and one being moved may be one kept here.
    freshDirs.clear();
    noteDirs(r, {srcParent, dstParent}, ++dirForgets);
    return statusOf(r);
  });
}

kj::Promise<Result<FileAttr>> Client::symlink(uint64_t parent, std::string name, std::string target,
                                              std::optional<Caller> as) {
  auto req = master(as).symlinkRequest();
  req.setParent(parent);
  req.setName(name);
  req.setTarget(target);
  return callMaster<Result<FileAttr>>(as, kj::mv(req),
                                      [this, parent, forgets = dirForgets](auto& r) {
                                        noteDirs(r, {parent}, forgets);
                                        return attrResult(r);
                                      });
}

kj::Promise<Result<std::string>> Client::readlink(uint64_t inode, std::optional<Caller> as) {
  auto req = master(as).readlinkRequest();
  req.setInode(inode);
  return callMaster<Result<std::string>>(as, kj::mv(req), [](auto& r) -> Result<std::string> {
    Status s = fromWire(r.getStatus());
    if (!s.ok()) return s;
    return text(r.getTarget());
  });
}

kj::Promise<Result<FileAttr>> Client::link(uint64_t inode, uint64_t newParent, std::string newName,
                                           std::optional<Caller> as) {
  auto req = master(as).linkRequest();
  req.setInode(inode);
  req.setNewParent(newParent);
  req.setNewName(newName);
  return callMaster<Result<FileAttr>>(as, kj::mv(req),
                                      [this, newParent, forgets = dirForgets](auto& r) {
                                        noteDirs(r, {newParent}, forgets);
                                        return attrResult(r);
                                      });
}

kj::Promise<Result<FileAttr>> Client::snapshot(uint64_t source, uint64_t parent, std::string name,
                                               std::optional<Caller> as) {
  forgetDir(parent);
  auto req = master(as).snapshotRequest();
  req.setSource(source);
  req.setParent(parent);
  req.setName(name);
  // A tree takes time in proportion to its entries, and its files' leases are revoked first.
  return callMaster<Result<FileAttr>>(
      as, kj::mv(req), [](auto& r) { return attrResult(r); }, 120 * kj::SECONDS);
}

kj::Promise<Result<FileAttr>> Client::mknod(uint64_t parent, std::string name, FileType type,
                                            uint32_t mode, uint64_t rdev,
                                            std::optional<Caller> as) {
  auto req = master(as).mknodRequest();
  req.setParent(parent);
  req.setName(name);
  req.setType(type);
  req.setMode(mode);
  req.setRdev(rdev);
  return callMaster<Result<FileAttr>>(as, kj::mv(req),
                                      [this, parent, forgets = dirForgets](auto& r) {
                                        noteDirs(r, {parent}, forgets);
                                        return attrResult(r);
                                      });
}

kj::Promise<Status> Client::setxattr(uint64_t inode, std::string name, std::string value,
                                     uint32_t flags, std::optional<Caller> as) {
  forgetDir(inode);  // its ctime, or its goal, changes
  auto req = master(as).setxattrRequest();
  req.setInode(inode);
  req.setName(name);
  req.setValue(
      capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(value.data()), value.size()));
  req.setFlags(flags);
  return callMaster<Status>(as, kj::mv(req), [](auto& r) { return statusOf(r); });
}

kj::Promise<Result<std::string>> Client::getxattr(uint64_t inode, std::string name,
                                                  std::optional<Caller> as) {
  // The kernel asks for security.* attributes on every write; only user.* exist, so those
  // are answered here rather than by a round trip to the master.
  if (name.rfind("user.", 0) != 0) {
    return Result<std::string>(Status(ErrorCode::NOT_SUPPORTED, "only user.* attributes"));
  }
  auto req = master(as).getxattrRequest();
  req.setInode(inode);
  req.setName(name);
  return callMaster<Result<std::string>>(as, kj::mv(req), [](auto& r) -> Result<std::string> {
    Status s = fromWire(r.getStatus());
    if (!s.ok()) return s;
    auto v = r.getValue();
    return std::string(reinterpret_cast<const char*>(v.begin()), v.size());
  });
}

kj::Promise<Result<std::vector<std::string>>> Client::listxattr(uint64_t inode,
                                                                std::optional<Caller> as) {
  auto req = master(as).listxattrRequest();
  req.setInode(inode);
  return callMaster<Result<std::vector<std::string>>>(
      as, kj::mv(req), [](auto& r) -> Result<std::vector<std::string>> {
        Status s = fromWire(r.getStatus());
        if (!s.ok()) return s;
        std::vector<std::string> names;
        for (auto n : r.getNames()) names.push_back(text(n));
        return names;
      });
}

kj::Promise<Status> Client::removexattr(uint64_t inode, std::string name,
                                        std::optional<Caller> as) {
  forgetDir(inode);  // its ctime, or its goal, changes
  auto req = master(as).removexattrRequest();
  req.setInode(inode);
  req.setName(name);
  return callMaster<Status>(as, kj::mv(req), [](auto& r) { return statusOf(r); });
}

kj::Promise<Status> Client::syncMetadata() {
  auto req = master().syncMetadataRequest();
  return callMaster<Status>(std::nullopt, kj::mv(req), [](auto& r) { return statusOf(r); });
}

kj::Promise<Result<Client::FsStats>> Client::statfs() {
  auto req = master().statfsRequest();
  return callMaster<Result<FsStats>>(std::nullopt, kj::mv(req), [](auto& r) -> Result<FsStats> {
    return FsStats{r.getCapacityBytes(), r.getFreeBytes(), r.getFiles()};
  });
}

kj::Promise<Result<FileAttr>> Client::setReplication(uint64_t inode, uint8_t replication,
                                                     std::optional<Caller> as) {
  forgetDir(inode);  // its ctime, or its goal, changes
  auto req = master(as).setReplicationRequest();
  req.setInode(inode);
  req.setReplication(replication);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

kj::Promise<Result<FileAttr>> Client::commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs) {
  forgetLayout(inode);
  auto req = master().commitSizeRequest();
  req.setInode(inode);
  req.setSize(size);
  req.setMtimeNs(mtimeNs);
  return callMaster<Result<FileAttr>>(std::nullopt, kj::mv(req),
                                      [](auto& r) { return attrResult(r); });
}

kj::Promise<Result<FileLayout>> Client::layout(uint64_t inode, uint32_t firstIndex, uint32_t count,
                                               std::optional<Caller> as) {
  auto req = master(as).getChunksRequest();
  req.setInode(inode);
  req.setFirstIndex(firstIndex);
  req.setCount(count);
  return callMaster<Result<FileLayout>>(as, kj::mv(req), [this](auto& r) -> Result<FileLayout> {
    Status s = fromWire(r.getStatus());
    if (!s.ok()) return s;
    FileLayout out;
    out.chunkSize = r.getChunkSize();
    out.fileSize = r.getFileSize();
    chunkSize = out.chunkSize;
    for (auto c : r.getChunks()) out.chunks.push_back(chunkFromWire(c));
    return out;
  });
}

kj::Promise<Result<std::vector<TrashInfo>>> Client::trashList(std::optional<Caller> as) {
  auto req = master(as).trashListRequest();
  return callMaster<Result<std::vector<TrashInfo>>>(
      as, kj::mv(req), [](auto& r) -> Result<std::vector<TrashInfo>> {
        Status s = fromWire(r.getStatus());
        if (!s.ok()) return s;
        std::vector<TrashInfo> out;
        for (auto e : r.getEntries()) {
          out.push_back(
              {text(e.getPath()), e.getInode(), e.getSize(), e.getDeletedNs(), e.getExpiresNs()});
        }
        return out;
      });
}

kj::Promise<Result<FileAttr>> Client::trashRestore(std::string path, std::optional<Caller> as) {
  freshDirs.clear();  // the restored entry's directory, wherever it is
  dirForgets++;
  auto req = master(as).trashRestoreRequest();
  req.setPath(path);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [](auto& r) { return attrResult(r); });
}

kj::Promise<Status> Client::decommission(std::string address, uint64_t* remaining, bool* done) {
  auto req = master().decommissionRequest();
  req.setAddress(address);
  return callMaster<Status>(std::nullopt, kj::mv(req), [remaining, done](auto& r) {
    *remaining = r.getRemaining();
    *done = r.getDone();
    return fromWire(r.getStatus());
  });
}

kj::Promise<Result<double>> Client::balance(double threshold) {
  auto req = master().balanceRequest();
  req.setThreshold(threshold);
  return callMaster<Result<double>>(std::nullopt, kj::mv(req), [](auto& r) -> Result<double> {
    Status s = fromWire(r.getStatus());
    if (!s.ok()) return s;
    return r.getSpread();
  });
}

kj::Promise<Result<HealthInfo>> Client::health() {
  auto req = master().clusterHealthRequest();
  return callMaster<Result<HealthInfo>>(
      std::nullopt, kj::mv(req), [](auto& r) -> Result<HealthInfo> {
        return HealthInfo{r.getSafeMode(), r.getChunks(),         r.getUnderReplicated(),
                          r.getMissing(),  r.getOverReplicated(), r.getCopiesInFlight(),
                          r.getCorrupt(),  r.getUnchecked()};
      });
}

kj::Promise<Result<SafeModeState>> Client::safeMode(wire::SafeModeAction action) {
  auto req = master().safeModeRequest();
  req.setAction(action);
  return callMaster<Result<SafeModeState>>(std::nullopt, kj::mv(req),
                                           [](auto& r) -> Result<SafeModeState> {
                                             Status s = fromWire(r.getStatus());
                                             if (!s.ok()) return s;
                                             return SafeModeState{r.getSafeMode(), r.getManual()};
                                           });
}

kj::Promise<Status> Client::failover() {
  auto req = master().failoverRequest();
  return callMaster<Status>(std::nullopt, kj::mv(req), [](auto& r) { return statusOf(r); });
}

kj::Promise<std::vector<MasterInfo>> Client::masterStates() {
  auto asks = kj::heapArrayBuilder<kj::Promise<MasterInfo>>(masters.size());
  for (auto& address : masters) {
    auto req = peers.get<wire::Master>(address, Role::MASTER).stateRequest();
    asks.add(timer.timeoutAfter(opts.metaTimeout, req.send())
                 .then(
                     [address](auto response) {
                       auto s = response.getState();
                       MasterInfo m;
                       m.address = address;
                       m.reachable = true;
                       switch (s.getRole()) {
                         case wire::MasterRole::ACTIVE:
                           m.role = "active";
                           break;
                         case wire::MasterRole::STANDBY:
                           m.role = "standby";
                           break;
                         case wire::MasterRole::CATCHING_UP:
                           m.role = "catching-up";
                           break;
                       }
                       m.epoch = s.getEpoch();
                       m.lsn = s.getLsn();
                       m.active = s.getActive();
                       for (auto id : s.getInSync()) m.inSync.push_back(id);
                       return m;
                     },
                     [this, address](kj::Exception&& e) {
                       peers.drop(address);
                       MasterInfo m;
                       m.address = address;
                       m.error = e.getDescription().cStr();
                       return m;
                     }));
  }
  return kj::joinPromises(asks.finish()).then([](kj::Array<MasterInfo> all) {
    return std::vector<MasterInfo>(std::make_move_iterator(all.begin()),
                                   std::make_move_iterator(all.end()));
  });
}

kj::Promise<Result<std::vector<ChunkCheckInfo>>> Client::fsck(uint64_t inode,
                                                              std::optional<Caller> as) {
  return fsckFrom(inode, 0, {}, as);
}

kj::Promise<Result<std::vector<ChunkCheckInfo>>> Client::fsckFrom(uint64_t inode, uint32_t first,
                                                                  std::vector<ChunkCheckInfo> got,
                                                                  std::optional<Caller> as) {
  constexpr uint32_t BATCH = 4096;  // what the master answers at most per call
  auto req = master(as).fsckRequest();
  req.setInode(inode);
  req.setFirstIndex(first);
  req.setCount(BATCH);
  struct Page {
    Page(Status s, std::optional<uint32_t> n = std::nullopt) : status(std::move(s)), next(n) {}
    Status status;
    std::optional<uint32_t> next;  // where the next call starts
  };
  auto page = kj::heap<std::vector<ChunkCheckInfo>>(std::move(got));
  auto& out = *page;
  return callMaster<Page>(as, kj::mv(req),
                          [&out](auto& r) -> Page {
                            Status s = fromWire(r.getStatus());
                            if (!s.ok()) return {s, std::nullopt};
                            for (auto c : r.getChunks()) {
                              ChunkCheckInfo info{c.getIndex(),
                                                  c.getHandle(),
                                                  c.getVersion(),
                                                  c.getGoal(),
                                                  c.getVerdict(),
                                                  {},
                                                  std::max<uint32_t>(1, c.getFiles())};
                              for (auto rep : c.getReplicas()) {
                                info.replicas.push_back({text(rep.getAddress()), rep.getState()});
                              }
                              out.push_back(std::move(info));
                            }
                            if (!r.getMore()) return {s, std::nullopt};
                            return {s, r.getNextIndex()};
                          })
      .then([this, inode, as, page = kj::mv(page)](
                Page p) mutable -> kj::Promise<Result<std::vector<ChunkCheckInfo>>> {
        if (!p.status.ok()) return Result<std::vector<ChunkCheckInfo>>(p.status);
        if (!p.next) return Result<std::vector<ChunkCheckInfo>>(std::move(*page));
        return fsckFrom(inode, *p.next, std::move(*page), as);
      });
}

kj::Promise<Result<std::vector<ServerStatus>>> Client::servers(uint64_t* chunkSizeOut) {
  auto req = master().clusterInfoRequest();
  return callMaster<Result<std::vector<ServerStatus>>>(
      std::nullopt, kj::mv(req), [chunkSizeOut](auto& r) -> Result<std::vector<ServerStatus>> {
        if (chunkSizeOut != nullptr) *chunkSizeOut = r.getChunkSize();
        std::vector<ServerStatus> out;
        for (auto s : r.getServers()) {
          out.push_back({text(s.getAddress()), text(s.getRack()), s.getCapacityBytes(),
                         s.getUsedBytes(), s.getChunkCount(), s.getLive(), s.getDecommissioning(),
                         s.getAvailableBytes(), s.getHeartbeatAgeMs()});
        }
        return out;
      });
}

std::vector<ReplicaInfo> Client::orderReplicas(const ChunkInfo& chunk) {
  std::vector<ReplicaInfo> local, remote;
  for (auto& r : chunk.replicas) {
    std::string host = hostOf(r.address);
    bool isLocal =
        std::find(opts.localHosts.begin(), opts.localHosts.end(), host) != opts.localHosts.end();
    (isLocal ? local : remote).push_back(r);
  }
  // Spread readers of different chunks over the remote replicas.
  if (!remote.empty()) {
    std::rotate(remote.begin(), remote.begin() + (chunk.handle % remote.size()), remote.end());
  }
  local.insert(local.end(), remote.begin(), remote.end());
  return local;
}

template <typename Req>
kj::Promise<Status> Client::callChunkserver(Req&& request, std::string address) {
  return timer.timeoutAfter(opts.rpcTimeout, request.send())
      .then([](auto&& response) { return fromWire(response.getStatus()); },
            [this, address](kj::Exception&& e) {
              peers.drop(address);
              return Status::unavailable(
                  fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
            });
}

kj::Promise<uint64_t> Client::ensureChunkSize(uint64_t inode) {
  if (chunkSize != 0) return chunkSize;
  return layout(inode, 0, 0).then([this](Result<FileLayout> r) -> uint64_t {
    return r.ok() ? r.value.chunkSize : 0;
  });
}

kj::Promise<Status> Client::syncChunks(uint64_t inode, std::vector<uint32_t> indices) {
  uint32_t first = 0, count = UINT32_MAX;
  if (!indices.empty()) {
    first = *std::min_element(indices.begin(), indices.end());
    count = *std::max_element(indices.begin(), indices.end()) - first + 1;
  }
  auto deadline = timer.now() + opts.retryFor;
  return layout(inode, first, std::min<uint32_t>(count, 4096))
      .then([this, inode, deadline,
             indices = std::move(indices)](Result<FileLayout> r) -> kj::Promise<Status> {
        if (!r.ok()) return r.status;
        auto chunks = kj::heap<std::vector<ChunkInfo>>();
        for (auto& c : r.value.chunks) {
          if (indices.empty() ||
              std::find(indices.begin(), indices.end(), c.index) != indices.end()) {
            chunks->push_back(c);
          }
        }
        auto& ref = *chunks;
        return runLimited(ref.size(), 8,
                          [this, inode, deadline, &ref](size_t i) {
                            return syncChunk(inode, ref[i], deadline, 0);
                          })
            .attach(kj::mv(chunks));
      });
}

kj::Promise<Status> Client::syncChunk(uint64_t inode, ChunkInfo chunk, kj::TimePoint deadline,
                                      uint32_t attempt) {
  auto failures = kj::heap<std::vector<ReplicaFailure>>();
  auto& failed = *failures;
  auto owned = kj::heap<ChunkInfo>(kj::mv(chunk));
  auto& c = *owned;
  return runLimited(
             c.replicas.size(), std::max<size_t>(c.replicas.size(), 1),
             [this, &c, &failed](size_t i) {
               std::string address = c.replicas[i].address;
               auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).syncRequest();
               req.setHandle(c.handle);
               toWire(c.token, req.initToken());
               return callChunkserver(kj::mv(req), address).then([&failed, address](Status s) {
                 if (!s.ok()) failed.push_back({address, s});
                 return Status::OK();
               });
             })
      .then([this, inode, &c, &failed, deadline, attempt](Status) -> kj::Promise<Status> {
        if (failed.empty()) return Status::OK();
        if (timer.now() >= deadline) return failed[0].status;
        // A replica that cannot say its bytes are on disk goes to the master as a failed
        // write would: it leaves the chunk if a replica that holds every byte stays (then
        // re-replication copies a synced one), and the replicas left sync again.
        logDebug("sync of chunk {} of inode {} failed on {} ({}); asking the master", c.index,
                 inode, failed[0].address, failed[0].status.toString());
        return timer.afterDelay(backoff(attempt))
            .then([this, inode, &c, &failed]() {
              return prepareChunk(inode, c.index, failed, c.version);
            })
            .then([this, inode, deadline, attempt](Result<ChunkInfo> next) -> kj::Promise<Status> {
              if (!next.ok()) return next.status;
              return syncChunk(inode, kj::mv(next.value), deadline, attempt + 1);
            });
      })
      .attach(kj::mv(failures), kj::mv(owned));
}

// --- reads ---

kj::Promise<Result<FileLayout>> Client::cachedLayout(uint64_t inode, uint32_t first,
                                                     uint32_t count) {
  auto it = layouts.find(inode);
  if (it != layouts.end() && timer.now() - it->second.fetched < opts.layoutTtl &&
      first >= it->second.first &&
      uint64_t{first} + count <= uint64_t{it->second.first} + it->second.count) {
    return Result<FileLayout>(it->second.layout);
  }
  // Fetch a wider window than asked: sequential readers need the next chunks soon.
  uint32_t fetchCount = std::max<uint32_t>(count, 256);
  return layout(inode, first, fetchCount)
      .then([this, inode, first, fetchCount](Result<FileLayout> r) {
        if (r.ok()) {
          if (layouts.size() > 4096) layouts.clear();
          layouts[inode] = CachedLayout{r.value, first, fetchCount, timer.now()};
        }
        return r;
      });
}

kj::Promise<Status> Client::read(uint64_t inode, uint64_t offset, uint64_t length, std::string& out,
                                 std::optional<uint64_t> needed) {
  out.clear();
  if (length == 0) return Status::OK();
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then(
      [this, inode, offset, length, &out, deadline, needed](uint64_t cs) -> kj::Promise<Status> {
        if (cs == 0) {
          return getattr(inode).then([](Result<FileAttr> r) {
            return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
          });
        }
        return readWith(inode, offset, length, out, std::min(length, needed.value_or(length)),
                        deadline, cs, false);
      });
}

kj::Promise<Status> Client::readWith(uint64_t inode, uint64_t offset, uint64_t length,
                                     std::string& out, uint64_t needed, kj::TimePoint deadline,
                                     uint64_t cs, bool fresh) {
  uint32_t first = static_cast<uint32_t>(offset / cs);
  uint32_t count = static_cast<uint32_t>((offset + length - 1) / cs - first + 1);
  if (fresh) forgetLayout(inode);
  return cachedLayout(inode, first, count)
      .then([this, inode, offset, length, &out, needed, deadline, cs,
             fresh](Result<FileLayout> r) -> kj::Promise<Status> {
        if (!r.ok()) return r.status;
        FileLayout& l = r.value;
        // A short read ends the caller's view of the file (the kernel cuts its size
        // to it): never on the word of a cached layout, which may predate growth.
        if (offset + needed > l.fileSize && !fresh) {
          return readWith(inode, offset, length, out, needed, deadline, cs, true);
        }
        if (offset >= l.fileSize) return Status::OK();
        uint64_t n = std::min(length, l.fileSize - offset);
        out.assign(n, '\0');  // holes and bytes past a replica's end read as zeros
        struct Piece {
          ChunkInfo chunk;
          uint64_t chunkOffset;
          uint32_t length;
          kj::byte* dst;
        };
        auto pieces = kj::heap<std::vector<Piece>>();
        std::map<uint32_t, const ChunkInfo*> byIndex;
        for (auto& c : l.chunks) byIndex[c.index] = &c;
        for (uint64_t pos = offset; pos < offset + n;) {
          uint32_t index = static_cast<uint32_t>(pos / l.chunkSize);
          uint64_t inChunk = pos % l.chunkSize;
          uint64_t chunkEnd = (uint64_t{index} + 1) * l.chunkSize;
          uint32_t len = static_cast<uint32_t>(
              std::min<uint64_t>({opts.pieceBytes, chunkEnd - pos, offset + n - pos}));
          auto it = byIndex.find(index);
          if (it != byIndex.end()) {
            pieces->push_back({*it->second, inChunk, len,
                               reinterpret_cast<kj::byte*>(out.data()) + (pos - offset)});
          }
          pos += len;
        }
        auto& ref = *pieces;
        return runLimited(ref.size(), opts.parallelPieces,
                          [this, inode, &ref, deadline](size_t i) {
                            auto& p = ref[i];
                            return readPiece(inode, p.chunk, p.chunkOffset, p.length, p.dst,
                                             deadline);
                          })
            .attach(kj::mv(pieces));
      });
}

kj::Promise<Status> Client::readPiece(uint64_t inode, ChunkInfo chunk, uint64_t chunkOffset,
                                      uint32_t length, kj::byte* out, kj::TimePoint deadline) {
  auto promise = readChunk(chunk, chunkOffset, length, out, 0);
  return promise.then([this, inode, chunk, chunkOffset, length, out,
                       deadline](Status s) mutable -> kj::Promise<Status> {
    if (s.ok() || !retryable(s.code()) || timer.now() >= deadline) return s;
    forgetLayout(inode);
    // Every replica failed (or none is known yet, as after a master restart): ask the
    // master again after a pause.
    return timer.afterDelay(500 * kj::MILLISECONDS)
        .then([this, inode, index = chunk.index]() { return layout(inode, index, 1); })
        .then([this, inode, chunkOffset, length, out, deadline,
               s](Result<FileLayout> r) mutable -> kj::Promise<Status> {
          if (!r.ok()) return r.status.code() == ErrorCode::UNAVAILABLE ? s : r.status;
          if (r.value.chunks.empty()) return Status::OK();  // truncated away: a hole now
          return readPiece(inode, r.value.chunks[0], chunkOffset, length, out, deadline);
        });
  });
}

kj::Promise<Status> Client::readChunk(ChunkInfo chunk, uint64_t chunkOffset, uint32_t length,
                                      kj::byte* out, size_t replicaIndex) {
  auto ordered = orderReplicas(chunk);
  if (replicaIndex >= ordered.size()) {
    return Status::unavailable(fmt::format("no replica of chunk {:x} could be read ({} known)",
                                           chunk.handle, ordered.size()));
  }
  std::string address = ordered[replicaIndex].address;
  auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).readRequest();
  req.setHandle(chunk.handle);
  req.setVersion(chunk.version);
  toWire(chunk.token, req.initToken());
  req.setOffset(static_cast<uint32_t>(chunkOffset));
  req.setLength(length);
  return timer.timeoutAfter(opts.rpcTimeout, req.send())
      .then(
          [out, length](auto&& response) {
            Status s = fromWire(response.getStatus());
            if (s.ok()) {
              auto data = response.getData();
              memcpy(out, data.begin(), std::min<size_t>(data.size(), length));
            }
            return s;
          },
          [this, address](kj::Exception&& e) {
            peers.drop(address);
            return Status::unavailable(
                fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
          })
      .then([this, chunk = kj::mv(chunk), chunkOffset, length, out, replicaIndex,
             address](Status s) mutable -> kj::Promise<Status> {
        if (s.ok()) return s;
        if (s.code() == ErrorCode::REPLICA_CORRUPT) {
          auto report = master().reportBadReplicaRequest();
          report.setHandle(chunk.handle);
          report.setVersion(chunk.version);
          report.setAddress(address);
          report.send().detach([](kj::Exception&&) {});
        }
        logDebug("read of chunk {:x} from {} failed: {}", chunk.handle, address, s.toString());
        return readChunk(kj::mv(chunk), chunkOffset, length, out, replicaIndex + 1);
      });
}

// --- holes ---

namespace {
constexpr uint64_t MAP_BLOCK = 64 << 10;  // blockMap's granularity
}  // namespace

kj::Promise<Result<uint64_t>> Client::seek(uint64_t inode, uint64_t offset, bool hole) {
  return getattr(inode).then(
      [this, inode, offset, hole](Result<FileAttr> a) -> kj::Promise<Result<uint64_t>> {
        if (!a.ok()) return Result<uint64_t>(a.status);
        if (a.value.type != FileType::REGULAR) {
          return Result<uint64_t>(Status::invalidArgument("not a regular file"));
        }
        uint64_t size = a.value.size;
        if (offset >= size) {
          return Result<uint64_t>(Status(ErrorCode::END_OF_DATA, "offset at or past the end"));
        }
        return ensureChunkSize(inode).then(
            [this, inode, offset, hole, size](uint64_t cs) -> kj::Promise<Result<uint64_t>> {
              if (cs == 0) return Result<uint64_t>(Status::unavailable("no chunk size"));
              return seekFrom(inode, offset, hole, size, cs, static_cast<uint32_t>(offset / cs));
            });
      });
}

kj::Promise<Result<uint64_t>> Client::seekFrom(uint64_t inode, uint64_t offset, bool hole,
                                               uint64_t size, uint64_t cs, uint32_t index) {
  uint64_t base = uint64_t{index} * cs;
  if (base >= size) {
    if (hole) return Result<uint64_t>(size);  // the end of the file is a hole
    return Result<uint64_t>(Status(ErrorCode::END_OF_DATA, "no data after the offset"));
  }
  uint64_t start = std::max(offset, base), end = std::min(base + cs, size);
  return cachedLayout(inode, index, 1)
      .then([this, inode, index](Result<FileLayout> l) -> kj::Promise<Result<std::string>> {
        if (!l.ok()) return Result<std::string>(l.status);
        for (auto& c : l.value.chunks) {
          if (c.index == index) return blockMapOf(c, 0);
        }
        return Result<std::string>(std::string());  // no chunk: all hole
      })
      .then([this, inode, offset, hole, size, cs, index, base, start,
             end](Result<std::string> map) -> kj::Promise<Result<uint64_t>> {
        if (!map.ok()) return Result<uint64_t>(map.status);
        // map: the chunk's length (8 bytes) and one bit per block, or empty for no chunk.
        uint64_t length = 0;
        if (map.value.size() >= 8) memcpy(&length, map.value.data(), 8);
        auto isData = [&](uint64_t pos) {
          uint64_t b = (pos - base) / MAP_BLOCK;
          size_t byte = 8 + b / 8;
          return pos - base < length && byte < map.value.size() &&
                 (static_cast<uint8_t>(map.value[byte]) >> (b % 8)) & 1;
        };
        for (uint64_t pos = start; pos < end;) {
          if (isData(pos) != hole) return Result<uint64_t>(pos);
          pos = base + ((pos - base) / MAP_BLOCK + 1) * MAP_BLOCK;
        }
        return seekFrom(inode, offset, hole, size, cs, index + 1);
      });
}

kj::Promise<Result<std::string>> Client::blockMapOf(ChunkInfo chunk, size_t replicaIndex) {
  auto ordered = orderReplicas(chunk);
  if (replicaIndex >= ordered.size()) {
    return Result<std::string>(Status::unavailable(
        fmt::format("no replica of chunk {:x} answered for its block map", chunk.handle)));
  }
  std::string address = ordered[replicaIndex].address;
  auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).blockMapRequest();
  req.setHandle(chunk.handle);
  req.setVersion(chunk.version);
  toWire(chunk.token, req.initToken());
  return timer.timeoutAfter(opts.rpcTimeout, req.send())
      .then(
          [](auto&& response) -> Result<std::string> {
            Status s = fromWire(response.getStatus());
            if (!s.ok()) return s;
            std::string out(8, '\0');
            uint64_t length = response.getLength();
            memcpy(out.data(), &length, 8);
            auto bits = response.getBitmap();
            out.append(reinterpret_cast<const char*>(bits.begin()), bits.size());
            return out;
          },
          [this, address](kj::Exception&& e) -> Result<std::string> {
            peers.drop(address);
            return Status::unavailable(
                fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
          })
      .then([this, chunk = kj::mv(chunk),
             replicaIndex](Result<std::string> r) mutable -> kj::Promise<Result<std::string>> {
        if (r.ok()) return r;
        return blockMapOf(kj::mv(chunk), replicaIndex + 1);
      });
}

// --- writes ---

kj::Promise<Status> Client::write(uint64_t inode, uint64_t offset,
                                  kj::ArrayPtr<const kj::byte> data) {
  if (data.size() == 0) return Status::OK();
  return forEachPortion(
      inode, offset, data.size(), MAX_WRITE_PORTION,
      [data, offset](uint32_t, uint32_t chunkOffset, uint64_t at, uint64_t length) {
        ChunkMutation m;
        m.chunkOffset = chunkOffset;
        m.length = static_cast<uint32_t>(length);
        m.data = data.slice(at - offset, at - offset + length);
        return m;
      });
}

kj::Promise<Status> Client::punch(uint64_t inode, uint64_t offset, uint64_t length) {
  if (length == 0) return Status::OK();
  return ensureChunkSize(inode).then([this, inode, offset,
                                      length](uint64_t cs) -> kj::Promise<Status> {
    if (cs == 0) return Status::unavailable("master gave no chunk size");
    uint32_t first = static_cast<uint32_t>(offset / cs);
    uint32_t last = static_cast<uint32_t>((offset + length - 1) / cs);
    // Only chunks that exist are cut; the others read as zeros already.
    return presentChunks(inode, first, last, {})
        .then([this, inode, offset, length,
               cs](Result<std::set<uint32_t>> l) -> kj::Promise<Status> {
          if (!l.ok()) return l.status;
          auto present = kj::heap<std::set<uint32_t>>(std::move(l.value));
          auto& ref = *present;
          return forEachPortion(inode, offset, length, cs,
                                [&ref](uint32_t index, uint32_t chunkOffset, uint64_t, uint64_t n) {
                                  ChunkMutation m;
                                  m.kind = wire::Mutation::PUNCH;
                                  m.chunkOffset = chunkOffset;
                                  m.length = static_cast<uint32_t>(n);
                                  m.skip = !ref.count(index);
                                  return m;
                                })
              .attach(kj::mv(present));
        });
  });
}

kj::Promise<Result<std::set<uint32_t>>> Client::presentChunks(uint64_t inode, uint32_t first,
                                                              uint32_t last,
                                                              std::set<uint32_t> sofar) {
  uint32_t count = std::min<uint32_t>(last - first + 1, 4096);  // a page of the master's
  return layout(inode, first, count)
      .then([this, inode, first, last, count, sofar = std::move(sofar)](
                Result<FileLayout> l) mutable -> kj::Promise<Result<std::set<uint32_t>>> {
        if (!l.ok()) return Result<std::set<uint32_t>>(l.status);
        for (auto& c : l.value.chunks) sofar.insert(c.index);
        if (uint64_t{first} + count > last) return Result<std::set<uint32_t>>(std::move(sofar));
        return presentChunks(inode, first + count, last, std::move(sofar));
      });
}

kj::Promise<Status> Client::allocate(uint64_t inode, uint64_t offset, uint64_t length) {
  if (length == 0) return Status::OK();
  return ensureChunkSize(inode).then([this, inode, offset, length](uint64_t cs) {
    return forEachPortion(inode, offset, length, cs ? cs : 1,
                          [](uint32_t, uint32_t chunkOffset, uint64_t, uint64_t n) {
                            ChunkMutation m;
                            m.kind = wire::Mutation::ALLOCATE;
                            m.chunkOffset = chunkOffset;
                            m.length = static_cast<uint32_t>(n);
                            return m;
                          });
  });
}

kj::Promise<Status> Client::copyRange(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                      uint64_t dstOffset, uint64_t length) {
  if (length == 0) return Status::OK();
  auto req = master(std::nullopt).shareChunksRequest();
  req.setSource(srcInode);
  req.setSourceOffset(srcOffset);
  req.setDestination(dstInode);
  req.setDestinationOffset(dstOffset);
  req.setLength(length);
  struct Shared {
    Status status;
    uint64_t offset = 0, length = 0;
  };
  return callMaster<Shared>(
             std::nullopt, kj::mv(req),
             [](auto& r) {
               return Shared{fromWire(r.getStatus()), r.getSharedOffset(), r.getSharedLength()};
             })
      .then([this, srcInode, srcOffset, dstInode, dstOffset, length](Shared shared) {
        forgetLayout(srcInode);  // leases on the source were revoked, under new versions
        forgetLayout(dstInode);
        if (!shared.status.ok()) return kj::Promise<Status>(shared.status);
        // The parts before and after the chunks shared are copied.
        uint64_t end = srcOffset + length;
        uint64_t sharedEnd = shared.offset + shared.length;
        if (shared.length == 0) return copyBytes(srcInode, srcOffset, dstInode, dstOffset, length);
        return copyBytes(srcInode, srcOffset, dstInode, dstOffset, shared.offset - srcOffset)
            .then([this, srcInode, srcOffset, dstInode, dstOffset, end, sharedEnd](Status s) {
              if (!s.ok() || sharedEnd >= end) return kj::Promise<Status>(s);
              return copyBytes(srcInode, sharedEnd, dstInode, dstOffset + (sharedEnd - srcOffset),
                               end - sharedEnd);
            });
      });
}

kj::Promise<Status> Client::copyBytes(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                      uint64_t dstOffset, uint64_t length) {
  if (length == 0) return Status::OK();
  forgetLayout(srcInode);
  return ensureChunkSize(dstInode).then([this, srcInode, srcOffset, dstInode, dstOffset,
                                         length](uint64_t cs) -> kj::Promise<Status> {
    if (cs == 0) return Status::unavailable("master gave no chunk size");
    uint32_t first = static_cast<uint32_t>(srcOffset / cs);
    uint32_t last = static_cast<uint32_t>((srcOffset + length - 1) / cs);
    return presentChunks(srcInode, first, last, {})
        .then([this, srcInode, srcOffset, dstInode, dstOffset, length,
               cs](Result<std::set<uint32_t>> l) -> kj::Promise<Status> {
          if (!l.ok()) return l.status;
          auto present = kj::heap<std::set<uint32_t>>(std::move(l.value));
          auto& ref = *present;
          return forEachPortion(
                     dstInode, dstOffset, length, MAX_COPY_PORTION,
                     [&ref, srcInode, srcOffset, dstOffset, cs](uint32_t, uint32_t chunkOffset,
                                                                uint64_t at, uint64_t n) {
                       // A portion comes from one source chunk and lands in one destination
                       // chunk: it also ends at the source's chunk boundary.
                       uint64_t from = srcOffset + (at - dstOffset);
                       ChunkMutation m;
                       m.chunkOffset = chunkOffset;
                       m.length = static_cast<uint32_t>(std::min(n, cs - from % cs));
                       uint32_t index = static_cast<uint32_t>(from / cs);
                       if (ref.count(index)) {
                         m.source = CopySource{srcInode, index, static_cast<uint32_t>(from % cs)};
                       } else {
                         m.kind = wire::Mutation::PUNCH;  // a hole in the source
                       }
                       return m;
                     })
              .attach(kj::mv(present));
        });
  });
}

kj::Promise<Status> Client::forEachPortion(
    uint64_t inode, uint64_t offset, uint64_t length, uint64_t maxPortion,
    kj::Function<ChunkMutation(uint32_t index, uint32_t chunkOffset, uint64_t at, uint64_t n)>
        make) {
  forgetLayout(inode);  // new chunks and versions are coming
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then(
      [this, inode, offset, length, maxPortion, deadline,
       make = kj::mv(make)](uint64_t cs) mutable -> kj::Promise<Status> {
        if (cs == 0) {
          return getattr(inode).then([](Result<FileAttr> r) {
            return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
          });
        }
        struct Portion {
          uint32_t index;
          ChunkMutation mutation;
        };
        auto portions = kj::heap<std::vector<Portion>>();
        for (uint64_t at = offset; at < offset + length;) {
          uint32_t index = static_cast<uint32_t>(at / cs);
          uint64_t inChunk = at % cs;
          uint64_t n = std::min<uint64_t>({cs - inChunk, offset + length - at, maxPortion});
          ChunkMutation m = make(index, static_cast<uint32_t>(inChunk), at, n);
          KJ_ASSERT(m.length > 0 && m.length <= n, "a portion must make progress", m.length, n);
          at += m.length;
          if (!m.skip) portions->push_back({index, std::move(m)});
        }
        auto& ref = *portions;
        return runLimited(ref.size(), 4,
                          [this, inode, &ref, deadline](size_t i) {
                            return mutateChunk(inode, ref[i].index, ref[i].mutation, deadline, 0,
                                               {}, 0);
                          })
            .attach(kj::mv(portions))
            .then([this, inode](Status s) {
              forgetLayout(inode);  // a read may have cached locations while this was under way
              return s;
            });
      });
}

kj::Promise<Result<ChunkInfo>> Client::prepareChunk(uint64_t inode, uint32_t index,
                                                    const std::vector<ReplicaFailure>& failures,
                                                    uint64_t failedVersion) {
  auto req = master().prepareWriteRequest();
  req.setInode(inode);
  req.setIndex(index);
  req.setFailedVersion(failedVersion);
  auto list = req.initFailures(static_cast<uint>(failures.size()));
  for (size_t i = 0; i < failures.size(); ++i) {
    list[static_cast<uint>(i)].setAddress(failures[i].address);
    toWire(failures[i].status, list[static_cast<uint>(i)].initStatus());
  }
  return callMaster<Result<ChunkInfo>>(
      std::nullopt, kj::mv(req),
      [](auto& r) -> Result<ChunkInfo> {
        Status s = fromWire(r.getStatus());
        if (!s.ok()) return s;
        return chunkFromWire(r.getChunk());
      },
      opts.rpcTimeout);
}

kj::Promise<Status> Client::mutateChunk(uint64_t inode, uint32_t index, const ChunkMutation& m,
                                        kj::TimePoint deadline, uint32_t attempt,
                                        std::vector<ReplicaFailure> failures,
                                        uint64_t failedVersion) {
  return prepareChunk(inode, index, failures, failedVersion)
      .then([this, &m](Result<ChunkInfo> r) -> kj::Promise<std::pair<DataOutcome, uint64_t>> {
        if (!r.ok()) return std::make_pair(DataOutcome(r.status), uint64_t{0});
        uint64_t version = r.value.version;
        return applyMutation(kj::mv(r.value), m).then([version](DataOutcome o) {
          return std::make_pair(kj::mv(o), version);
        });
      })
      .then([this, inode, index, &m, deadline,
             attempt](std::pair<DataOutcome, uint64_t> result) -> kj::Promise<Status> {
        DataOutcome& o = result.first;
        // Failures named by replica go back to the master, which decides what they mean
        // (drop the replica, or fail the write: e.g. noSpace when every replica is full).
        bool again = !o.failures.empty() || retryable(o.status.code());
        if (o.ok() || !again || timer.now() >= deadline) return o.status;
        logDebug("write of chunk {} of inode {} failed ({}); retrying", index, inode,
                 o.status.toString());
        auto failures = kj::mv(o.failures);
        uint64_t version = result.second;
        return timer.afterDelay(backoff(attempt))
            .then([this, inode, index, &m, deadline, attempt, failures = kj::mv(failures),
                   version]() mutable {
              return mutateChunk(inode, index, m, deadline, attempt + 1, kj::mv(failures), version);
            });
      });
}

struct Client::AppendTry {
  uint64_t inode = 0;
  uint64_t chunkSize = 0;
  uint32_t index = 0;      // the chunk appended to
  uint32_t minOffset = 0;  // the end of the file in it, as the master said
  kj::ArrayPtr<const kj::byte> record;
  kj::TimePoint deadline = kj::origin<kj::TimePoint>();
  uint32_t attempt = 0;
};

kj::Promise<Result<uint64_t>> Client::append(uint64_t inode, kj::ArrayPtr<const kj::byte> record) {
  forgetLayout(inode);  // the chunks' lengths change, and a chunk may be added
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then([this, inode, record,
                                      deadline](uint64_t cs) -> kj::Promise<Result<uint64_t>> {
    if (cs == 0) {
      return getattr(inode).then([](Result<FileAttr> r) -> Result<uint64_t> {
        return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
      });
    }
    if (record.size() == 0 || record.size() > cs / 4) {
      return Result<uint64_t>(Status::invalidArgument(
          fmt::format("a record of {} bytes: records are 1 byte to a quarter of a chunk ({} bytes)",
                      record.size(), cs / 4)));
    }
    // The end of the file as the master knows it: the record goes there or after it (past
    // appends whose size is not recorded yet). Appends in a row take it from the last
    // size commit's answer.
    pruneAppendHints();
    auto hint = appendHints.find(inode);
    kj::Promise<Result<FileAttr>> known = nullptr;
    if (hint != appendHints.end() && timer.now() - hint->second.sizeAt < APPEND_HINT_TTL) {
      FileAttr a;
      a.type = FileType::REGULAR;
      a.size = hint->second.size;
      known = Result<FileAttr>(a);
    } else {
      known = getattr(inode);
    }
    return known.then(
        [this, inode, record, deadline, cs](Result<FileAttr> a) -> kj::Promise<Result<uint64_t>> {
          if (!a.ok()) return Result<uint64_t>(a.status);
          if (a.value.type != FileType::REGULAR) {
            return Result<uint64_t>(Status::invalidArgument("records go to regular files only"));
          }
          AppendTry t;
          t.inode = inode;
          t.chunkSize = cs;
          t.index = static_cast<uint32_t>(a.value.size / cs);
          t.minOffset = static_cast<uint32_t>(a.value.size % cs);
          t.record = record;
          t.deadline = deadline;
          return appendAt(t, {}, 0);
        });
  });
}

void Client::pruneAppendHints() {
  // Hints of files appended to a while ago are of no use: a client appending to many files
  // in turn keeps only the recent ones.
  if (appendHints.size() < 64) return;
  auto now = timer.now();
  for (auto it = appendHints.begin(); it != appendHints.end();) {
    bool stale = now - it->second.sizeAt >= APPEND_HINT_TTL && now >= it->second.leaseUntil;
    it = stale ? appendHints.erase(it) : std::next(it);
  }
}

kj::Promise<Result<uint64_t>> Client::appendAt(AppendTry t, std::vector<ReplicaFailure> failures,
                                               uint64_t failedVersion) {
  struct Outcome {
    DataOutcome data;
    uint64_t version = 0;
    uint32_t offset = 0;
  };
  // The lease the last append used, while it holds and nothing failed.
  kj::Promise<Result<ChunkInfo>> prepared = nullptr;
  auto hint = appendHints.find(t.inode);
  if (failures.empty() && failedVersion == 0 && hint != appendHints.end() && hint->second.lease &&
      hint->second.lease->index == t.index && timer.now() < hint->second.leaseUntil) {
    prepared = Result<ChunkInfo>(*hint->second.lease);
  } else {
    prepared = prepareChunk(t.inode, t.index, failures, failedVersion)
                   .then([this, t](Result<ChunkInfo> r) {
                     if (r.ok()) {
                       // Kept until well before the lease or the token could run out.
                       int64_t tokenMs = r.value.token.expiresMs -
                                         (kj::systemPreciseCalendarClock().now() - kj::UNIX_EPOCH) /
                                             kj::MILLISECONDS;
                       int64_t ms = std::min<int64_t>(r.value.leaseRemainingMs, tokenMs) / 2;
                       auto& h = appendHints[t.inode];
                       h.lease = r.value;
                       h.leaseUntil = timer.now() + std::max<int64_t>(ms, 0) * kj::MILLISECONDS;
                     }
                     return r;
                   });
  }
  return prepared
      .then([this, t](Result<ChunkInfo> r) -> kj::Promise<Outcome> {
        if (!r.ok()) return Outcome{DataOutcome(r.status)};
        if (r.value.primary.empty() || r.value.replicas.empty()) {
          return Outcome{DataOutcome(
              Status::unavailable(fmt::format("chunk {:x} has no primary", r.value.handle)))};
        }
        auto chunk = kj::heap<ChunkInfo>(kj::mv(r.value));
        uint64_t dataId = rng() | 1;
        auto& c = *chunk;
        return pushInto(c, dataId, t.record)
            .then([this, &c, dataId, t](DataOutcome o) -> kj::Promise<Outcome> {
              if (!o.ok()) return Outcome{kj::mv(o), c.version};
              auto req = peers.get<wire::ChunkServer>(c.primary, Role::CHUNKSERVER).appendRequest();
              req.setHandle(c.handle);
              req.setVersion(c.version);
              req.setDataId(dataId);
              req.setLength(static_cast<uint32_t>(t.record.size()));
              req.setMinOffset(t.minOffset);
              toWire(c.token, req.initToken());
              std::vector<std::string> secondaries;
              for (auto& rep : c.replicas) {
                if (rep.address != c.primary) secondaries.push_back(rep.address);
              }
              auto list = req.initSecondaries(static_cast<uint>(secondaries.size()));
              for (size_t i = 0; i < secondaries.size(); ++i) {
                list.set(static_cast<uint>(i), secondaries[i]);
              }
              uint64_t version = c.version;
              std::string primary = c.primary;
              return timer.timeoutAfter(opts.rpcTimeout, req.send())
                  .then(
                      [version](auto&& response) {
                        return Outcome{DataOutcome(fromWire(response.getStatus()),
                                                   fromWire(response.getFailures())),
                                       version, response.getOffset()};
                      },
                      [this, version, primary](kj::Exception&& e) {
                        peers.drop(primary);
                        return Outcome{DataOutcome::of(primary, Status::unavailable(fmt::format(
                                                                    "chunkserver {}: {}", primary,
                                                                    e.getDescription().cStr()))),
                                       version};
                      });
            })
            .attach(kj::mv(chunk));
      })
      .then([this, t](Outcome o) mutable -> kj::Promise<Result<uint64_t>> {
        if (o.data.ok()) {
          uint64_t at = uint64_t{t.index} * t.chunkSize + o.offset;
          return commitSize(t.inode, at + t.record.size())
              .then([this, t, at](Result<FileAttr> r) -> Result<uint64_t> {
                if (!r.ok()) {
                  appendHints.erase(t.inode);
                  return r.status;
                }
                auto& h = appendHints[t.inode];
                h.size = r.value.size;
                h.sizeAt = timer.now();
                return at;
              });
        }
        // Whatever failed, the next attempt asks the master afresh.
        appendHints.erase(t.inode);
        if (o.data.status.code() == ErrorCode::CHUNK_FULL) {
          // Padded on every replica: the next chunk, from its start.
          t.index++;
          t.minOffset = 0;
          return appendAt(t, {}, 0);
        }
        bool again = !o.data.failures.empty() || retryable(o.data.status.code());
        if (!again || timer.now() >= t.deadline) return Result<uint64_t>(o.data.status);
        logDebug("append to chunk {} of inode {} failed ({}); retrying", t.index, t.inode,
                 o.data.status.toString());
        auto failures = kj::mv(o.data.failures);
        uint64_t version = o.version;
        uint32_t attempt = t.attempt++;
        return timer.afterDelay(backoff(attempt))
            .then([this, t, failures = kj::mv(failures), version]() mutable {
              return appendAt(t, kj::mv(failures), version);
            });
      });
}

kj::Promise<DataOutcome> Client::applyMutation(ChunkInfo chunk, const ChunkMutation& m) {
  if (chunk.primary.empty() || chunk.replicas.empty()) {
    return DataOutcome(Status::unavailable(fmt::format("chunk {:x} has no primary", chunk.handle)));
  }
  uint64_t dataId = rng() | 1;
  kj::Promise<DataOutcome> pushed = DataOutcome();
  if (m.kind == wire::Mutation::DATA) {
    pushed =
        m.source ? pullInto(chunk, dataId, *m.source, m.length) : pushInto(chunk, dataId, m.data);
  }
  // Control flow: the primary orders and applies, then has the secondaries apply.
  return pushed.then(
      [this, chunk = kj::mv(chunk), &m, dataId](DataOutcome o) -> kj::Promise<DataOutcome> {
        if (!o.ok()) return o;
        auto req = peers.get<wire::ChunkServer>(chunk.primary, Role::CHUNKSERVER).writeRequest();
        req.setHandle(chunk.handle);
        req.setVersion(chunk.version);
        req.setOffset(m.chunkOffset);
        req.setDataId(dataId);
        req.setLength(m.length);
        req.setMutation(m.kind);
        toWire(chunk.token, req.initToken());
        size_t n = 0;
        for (auto& r : chunk.replicas) n += r.address != chunk.primary;
        auto secondaries = req.initSecondaries(static_cast<uint>(n));
        size_t k = 0;
        for (auto& r : chunk.replicas) {
          if (r.address != chunk.primary) secondaries.set(static_cast<uint>(k++), r.address);
        }
        return dataCall(kj::mv(req), chunk.primary);
      });
}

kj::Promise<DataOutcome> Client::pushInto(const ChunkInfo& chunk, uint64_t dataId,
                                          kj::ArrayPtr<const kj::byte> data) {
  auto chain = kj::heap<std::vector<ReplicaInfo>>(orderReplicas(chunk));
  auto outcome = kj::heap<DataOutcome>();
  auto& c = *chain;
  DataOutcome* out = outcome.get();
  size_t pieces = (data.size() + opts.pieceBytes - 1) / opts.pieceBytes;
  // Data flow: to the closest replica, which forwards down the chain while receiving.
  return runLimited(
             pieces, opts.parallelPieces,
             [this, &c, dataId, data, out, token = chunk.token](size_t i) {
               size_t start = i * opts.pieceBytes;
               size_t end = std::min<size_t>(start + opts.pieceBytes, data.size());
               auto req =
                   peers.get<wire::ChunkServer>(c[0].address, Role::CHUNKSERVER).pushDataRequest();
               req.setDataId(dataId);
               req.setTotalLength(static_cast<uint32_t>(data.size()));
               req.setOffset(static_cast<uint32_t>(start));
               toWire(token, req.initToken());
               // The caller's bytes outlive the push (write() resolves after every
               // piece answered).
               setDataNoCopy(wire::ChunkServer::PushDataParams::Builder(req),
                             data.slice(start, end),
                             [&](capnp::Orphan<capnp::Data>&& o) { req.adoptData(kj::mv(o)); });
               auto rest = req.initChain(static_cast<uint>(c.size() - 1));
               for (size_t k = 1; k < c.size(); ++k) {
                 rest.set(static_cast<uint>(k - 1), c[k].address);
               }
               return dataCall(kj::mv(req), c[0].address).then([out](DataOutcome o) {
                 if (!o.ok() && out->ok()) *out = o;
                 return o.status;
               });
             })
      .then([outcome = kj::mv(outcome)](Status) mutable { return kj::mv(*outcome); })
      .attach(kj::mv(chain));
}

kj::Promise<DataOutcome> Client::pullInto(const ChunkInfo& chunk, uint64_t dataId,
                                          CopySource source, uint32_t length) {
  // The source chunk's replicas, asked afresh: copies are rare and must see the latest
  // version.
  return layout(source.inode, source.index, 1)
      .then(
          [this, chunk, dataId, source, length](Result<FileLayout> l) -> kj::Promise<DataOutcome> {
            if (!l.ok()) return DataOutcome(l.status);
            if (l.value.chunks.empty()) {
              return DataOutcome(Status::notFound("the source chunk is gone"));
            }
            auto sources = kj::heap<std::vector<ReplicaInfo>>(orderReplicas(l.value.chunks[0]));
            ChunkInfo from = l.value.chunks[0];
            return pullFrom(chunk, dataId, from, kj::mv(sources), 0, source.chunkOffset, length);
          });
}

kj::Promise<DataOutcome> Client::pullFrom(ChunkInfo chunk, uint64_t dataId, ChunkInfo from,
                                          kj::Own<std::vector<ReplicaInfo>> sources, size_t next,
                                          uint32_t fromOffset, uint32_t length) {
  if (next >= sources->size()) {
    return DataOutcome(Status::unavailable(
        fmt::format("no replica of source chunk {:x} could be read", from.handle)));
  }
  std::string source = (*sources)[next].address;
  // The chain starts at a replica on the source's chunkserver when there is one, so that
  // the first copy is a local read.
  auto chain = orderReplicas(chunk);
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i].address == source)
      std::rotate(chain.begin(), chain.begin() + i, chain.begin() + i + 1);
  }
  auto req = peers.get<wire::ChunkServer>(chain[0].address, Role::CHUNKSERVER).pushFromRequest();
  req.setDataId(dataId);
  req.setSource(source);
  req.setSourceHandle(from.handle);
  req.setSourceVersion(from.version);
  req.setSourceOffset(fromOffset);
  req.setLength(length);
  toWire(chunk.token, req.initToken());
  toWire(from.token, req.initSourceToken());
  auto rest = req.initChain(static_cast<uint>(chain.size() - 1));
  for (size_t k = 1; k < chain.size(); ++k) rest.set(static_cast<uint>(k - 1), chain[k].address);
  return dataCall(kj::mv(req), chain[0].address)
      .then([this, chunk = kj::mv(chunk), dataId, from = kj::mv(from), sources = kj::mv(sources),
             next, fromOffset, length, source](DataOutcome o) mutable -> kj::Promise<DataOutcome> {
        if (o.ok() || !o.failures.empty()) return o;
        // The source failed (no replica of the destination is named): try another.
        if (o.status.code() == ErrorCode::REPLICA_CORRUPT) {
          auto report = master().reportBadReplicaRequest();
          report.setHandle(from.handle);
          report.setVersion(from.version);
          report.setAddress(source);
          report.send().detach([](kj::Exception&&) {});
        }
        return pullFrom(kj::mv(chunk), dataId, kj::mv(from), kj::mv(sources), next + 1, fromOffset,
                        length);
      });
}

template <typename Req>
kj::Promise<DataOutcome> Client::dataCall(Req&& request, std::string address) {
  return timer.timeoutAfter(opts.rpcTimeout, request.send())
      .then(
          [](auto&& response) {
            return DataOutcome(fromWire(response.getStatus()), fromWire(response.getFailures()));
          },
          [this, address](kj::Exception&& e) {
            peers.drop(address);
            return DataOutcome::of(address,
                                   Status::unavailable(fmt::format("chunkserver {}: {}", address,
                                                                   e.getDescription().cStr())));
          });
}

}  // namespace cairn
