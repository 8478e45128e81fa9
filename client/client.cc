#include "client.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include <algorithm>
#include <cstring>

#include "log.h"
#include "names.h"

namespace cairn {
namespace {

constexpr uint32_t LAYOUT_BATCH = 1024;
constexpr size_t MAX_CLOSES_PER_CALL = 1024;  // closeAll's limit is 4,096

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
  out.inlineWrites = c.getInlineWrites();
  return out;
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

Client::~Client() { watchLink->client = nullptr; }

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
  ++readerSession;
  return callerService(service, readerCallers, as);
}

void Client::readerFailed(uint64_t session) {
  // As for masterFailed(): the calls of one session fail together, and move on once.
  if (session != readerSession || readerService == nullptr) return;
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
  auto service =
      peers.get<wire::Master>(currentMaster(), Role::MASTER).clientRequest().send().getService();
  masterService = service;
  watchLost(watchedId);  // (the last session's watch, if it was not seen to end)
  ++sessionNumber;
  startWatch(service);  // the first call of the session: every answer after it is watched
  closing.clear();      // ends of opens of the last session, which held them (its end ends them)
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
  // While the session is watched, every second: a master that cannot be reached (or is
  // paused) no longer tells this client of changes, which must then drop what it cached.
  auto period = watching() ? 1 * kj::SECONDS : 10 * kj::SECONDS;
  return timer.afterDelay(period).then([this]() -> kj::Promise<void> {
    // A session the master refused to watch (it was not yet active, say) asks again.
    if (nsWatcher != nullptr && !watching()) {
      KJ_IF_MAYBE (service, masterService) {
        startWatch(*service);
      }
    }
    if (held.empty() && !watching()) return keepSession();
    auto req = master().sessionRequest();
    uint64_t session = sessionNumber;
    // A watched session's master is asked within 2 s: one paused or cut off is given up
    // (and what it answered dropped) before a standby can take over (ZooKeeper's session
    // timeout, 4 s at least), so that no change made there goes untold here.
    auto timeout = watching() ? std::min(opts.metaTimeout, 2 * kj::SECONDS) : opts.metaTimeout;
    return timer.timeoutAfter(timeout, req.send())
        .then([](auto&&) {}, [this, session](kj::Exception&&) { masterFailed(session); })
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

void Client::masterFailed(uint64_t session) {
  // The calls of one session fail together (a standby answers each of them notActive): the
  // first moves on to the next master, and the others find that done. Each moving on
  // again would, with two masters and an even number of calls, come back to the one that
  // failed, as often as they are retried.
  if (session != sessionNumber || masterService == nullptr) return;
  watchLost(watchedId);
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
      uint64_t session = readerSession;
      return sendCall(*standby, *call)
          .then(
              [this, call, onResponse,
               session](capnp::Response<capnp::AnyPointer>&& response) -> kj::Promise<T> {
                auto r = response.getAs<R>();
                bool answered = true;
                if constexpr (requires { r.getStatus(); }) {
                  answered = r.getStatus().getCode() != wire::ErrorCode::NOT_ACTIVE;
                  if (!answered) readerFailed(session);
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
              [this, call, onResponse, session](kj::Exception&&) -> kj::Promise<T> {
                readerFailed(session);
                return attemptMaster<T, R>(call, onResponse);
              });
    }
  }
  auto service = master(call->as);
  uint64_t session = sessionNumber;
  return sendCall(service, *call)
      .then(
          [this, call, onResponse,
           session](capnp::Response<capnp::AnyPointer>&& response) -> kj::Promise<T> {
            auto r = response.getAs<R>();
            if constexpr (requires { r.getStatus(); }) {
              if (r.getStatus().getCode() == wire::ErrorCode::NOT_ACTIVE) {
                masterFailed(session);
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
          [this, call, onResponse, session](kj::Exception&& e) -> kj::Promise<T> {
            masterFailed(session);
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
  if (watching()) {
    auto known = knownDirs.find(parent);
    if (known != knownDirs.end() && known->second.complete && !known->second.names.count(name)) {
      return Result<FileAttr>(Status::notFound(name + ": no such entry"));
    }
  }
  auto req = master(as).lookupRequest();
  req.setParent(parent);
  req.setName(name);
  return callMaster<Result<FileAttr>>(as, kj::mv(req), [this, parent, as](auto& r) {
    auto a = attrResult(r);
    // A name found missing: the next ones may be answered here once the directory is known.
    if (a.status.code() == ErrorCode::NOT_FOUND && watching() && !knownDirs.count(parent)) {
      learnDir(parent, as);
    }
    return a;
  });
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
  mayExist(parent, name);
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
  mayExist(parent, name);
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
  mayExist(dstParent, dstName);
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
  mayExist(parent, name);
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
  mayExist(newParent, newName);
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
  mayExist(parent, name);
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
  mayExist(parent, name);
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
                          r.getCorrupt(),  r.getUnchecked(),      r.getOnOneRack()};
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

}  // namespace cairn
