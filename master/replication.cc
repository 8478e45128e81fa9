#include "replication.h"

#include <fmt/format.h>
#include <kj/debug.h>
#include <kj/vector.h>

#include <algorithm>

#include "log.h"

namespace cairn {
namespace {

constexpr size_t BATCH_ENTRIES = 512;
constexpr size_t BATCH_BYTES = 4 << 20;

size_t entryBytes(const LogEntry& e) {
  size_t n = 32;
  for (auto& [key, value] : e.mutation.ops) n += key.size() + (value ? value->size() : 0) + 16;
  return n;
}

void toWire(const Mutation& m, capnp::List<wire::LogOp>::Builder out) {
  for (size_t i = 0; i < m.ops.size(); ++i) {
    auto op = out[static_cast<uint>(i)];
    auto& [key, value] = m.ops[i];
    op.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
    if (value) {
      op.setValue(
          capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value->data()), value->size()));
    } else {
      op.setDelete(true);
    }
  }
}

std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

}  // namespace

struct LogShipper::Follower {
  std::string id;
  uint64_t session = 0;
  wire::LogSink::Client sink;
  uint64_t sent = 0;   // the last entry sent
  uint64_t acked = 0;  // the last entry it holds
  bool live = false;   // caught up: entries go to it as they commit
  bool snapshot = false;
  bool inSync = false;  // acknowledgements wait for it
  kj::TimePoint lastProgress = kj::origin<kj::TimePoint>();
  kj::Own<kj::PromiseFulfiller<Status>> done;
  kj::Promise<void> work = nullptr;

  Follower(wire::LogSink::Client sink) : sink(kj::mv(sink)) {}
};

LogShipper::LogShipper(NamespaceStore& store, kj::Timer& timer, ReplicationOptions options,
                       RecordInSync recordInSync)
    : store(store),
      timer(timer),
      opts(options),
      recordInSync(kj::mv(recordInSync)),
      baseEpoch(store.lastEpoch()),
      baseLsn(store.lastLsn()),
      released(store.lastLsn()),
      tasks(*this) {
  // Until ZooKeeper says that only this master holds everything, nothing is acknowledged:
  // a standby named there from before might otherwise win while lacking new entries.
  updateInSync();
  watcher = watchLoop().eagerlyEvaluate([](kj::Exception&& e) {
    logError("replication watch stopped: {}", e.getDescription().cStr());
  });
}

LogShipper::~LogShipper() { stop("shutting down"); }

void LogShipper::taskFailed(kj::Exception&& exception) {
  logWarn("replication: {}", exception.getDescription().cStr());
}

LogShipper::Follower* LogShipper::find(const std::string& id, uint64_t session) {
  auto it = followers_.find(id);
  return it != followers_.end() && it->second->session == session ? it->second.get() : nullptr;
}

kj::Promise<void> LogShipper::ship(const LogEntry& entry) {
  if (stopped) return KJ_EXCEPTION(DISCONNECTED, "this master is no longer active");
  tail.push_back(entry);
  tailBytes += entryBytes(entry);
  for (auto& [id, f] : followers_) {
    if (!f->live) continue;
    if (f->acked == f->sent) f->lastProgress = timer.now();
    f->sent = entry.lsn;
    tasks.add(send(*f, tail.size() - 1, 1));
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  pending.push_back(Pending{entry.lsn, kj::mv(paf.fulfiller)});
  release();
  trim();
  return kj::mv(paf.promise);
}

kj::Promise<void> LogShipper::send(Follower& f, size_t from, size_t count) {
  auto req = f.sink.appendRequest();
  auto list = req.initEntries(static_cast<uint>(count));
  for (size_t i = 0; i < count; ++i) {
    const LogEntry& e = tail[from + i];
    auto out = list[static_cast<uint>(i)];
    out.setEpoch(e.epoch);
    out.setLsn(e.lsn);
    out.setSync(e.sync);
    toWire(e.mutation, out.initOps(static_cast<uint>(e.mutation.ops.size())));
  }
  std::string id = f.id;
  uint64_t session = f.session;
  return req.send().then(
      [this, id, session](auto response) {
        Follower* f = find(id, session);
        if (f == nullptr) return;
        Status s = fromWire(response.getStatus());
        if (!s.ok()) {
          drop(*f, s);
          return;
        }
        acked(*f, response.getLsn());
      },
      [this, id, session](kj::Exception&& e) {
        if (Follower* f = find(id, session)) {
          drop(*f, Status::unavailable(e.getDescription().cStr()));
        }
      });
}

void LogShipper::acked(Follower& f, uint64_t lsn) {
  if (lsn > f.acked) {
    f.acked = lsn;
    f.lastProgress = timer.now();
  }
  // A standby that holds every acknowledged entry and receives each new one joins the set:
  // from now on acknowledgements wait for it (while ZooKeeper is told).
  if (!f.inSync && f.live && f.acked >= released && !stopped) {
    f.inSync = true;
    logInfo("standby {} is in sync at entry {}", f.id, f.acked);
    updateInSync();
  }
  release();
  trim();
}

void LogShipper::release() {
  if (!inSyncKnown) return;
  uint64_t safe = store.lastLsn();
  size_t inSyncNow = 0;
  for (auto& [id, f] : followers_) {
    if (!f->inSync) continue;
    safe = std::min(safe, f->acked);
    ++inSyncNow;
  }
  for (auto& [id, lsn] : departed) safe = std::min(safe, lsn);
  if (inSyncNow < opts.minSyncStandbys) safe = released;
  released = std::max(released, safe);
  while (!pending.empty() && pending.front().lsn <= released) {
    pending.front().done->fulfill();
    pending.pop_front();
  }
}

void LogShipper::updateInSync() {
  if (recording || stopped) return;
  std::vector<std::string> desired;
  for (auto& [id, f] : followers_) {
    if (f->inSync) desired.push_back(id);
  }
  if (inSyncKnown && desired == recordedInSync) return;
  recording = true;
  tasks.add(recordInSync(desired).then(
      [this, desired]() {
        recording = false;
        recordedInSync = desired;
        inSyncKnown = true;
        // Those that left and are no longer named are no longer waited for.
        for (auto it = departed.begin(); it != departed.end();) {
          bool named = std::find(desired.begin(), desired.end(), it->first) != desired.end();
          it = named ? std::next(it) : departed.erase(it);
        }
        release();
        updateInSync();  // the set may have moved while this was written
      },
      [this](kj::Exception&& e) {
        recording = false;  // watchLoop tries again
        logWarn("cannot record the in-sync standbys: {}", e.getDescription().cStr());
      }));
}

kj::Promise<void> LogShipper::watchLoop() {
  return timer.afterDelay(250 * kj::MILLISECONDS).then([this]() {
    if (stopped) return kj::Promise<void>(kj::READY_NOW);
    std::vector<Follower*> silent;
    for (auto& [id, f] : followers_) {
      if (f->acked < f->sent && timer.now() - f->lastProgress > opts.standbyTimeout) {
        silent.push_back(f.get());
      }
    }
    for (Follower* f : silent) {
      drop(*f, Status::unavailable(
                   fmt::format("no acknowledgement for {} s", opts.standbyTimeout / kj::SECONDS)));
    }
    updateInSync();
    return watchLoop();
  });
}

void LogShipper::trim() {
  // Entries every standby holds go, beyond the last keepEntries or keepBytes.
  uint64_t needed = store.lastLsn();
  for (auto& [id, f] : followers_) needed = std::min(needed, f->acked);
  while ((tail.size() > opts.keepEntries || tailBytes > opts.keepBytes) &&
         tail.front().lsn <= needed) {
    baseEpoch = tail.front().epoch;
    baseLsn = tail.front().lsn;
    tailBytes -= entryBytes(tail.front());
    tail.pop_front();
  }
}

void LogShipper::drop(Follower& f, Status why) {
  logWarn("standby {} stops following: {}", f.id, why.toString());
  f.done->fulfill(kj::mv(why));
  auto it = followers_.find(f.id);
  bool wasInSync = f.inSync;
  // ZooKeeper may name it still: until it does not, it is waited for, at what it held.
  if (wasInSync) departed[f.id] = f.acked;
  // Destroyed later: this may run inside the follower's own work.
  tasks.add(kj::evalLater([dead = kj::mv(it->second)]() {}));
  followers_.erase(it);
  if (wasInSync) updateInSync();
}

void LogShipper::stop(const std::string& why) {
  if (stopped) return;
  stopped = true;
  while (!pending.empty()) {
    pending.front().done->reject(
        KJ_EXCEPTION(DISCONNECTED, "this master is no longer active", why));
    pending.pop_front();
  }
  std::vector<Follower*> all;
  for (auto& [id, f] : followers_) all.push_back(f.get());
  for (Follower* f : all) drop(*f, Status(ErrorCode::NOT_ACTIVE, why));
}

std::vector<FollowerView> LogShipper::followers() const {
  std::vector<FollowerView> out;
  for (auto& [id, f] : followers_) out.push_back({id, f->acked, f->inSync, f->snapshot});
  return out;
}

kj::Promise<Status> LogShipper::follow(std::string id, uint64_t lastEpoch, uint64_t lastLsn,
                                       wire::LogSink::Client sink) {
  if (stopped) return Status(ErrorCode::NOT_ACTIVE, "this master is no longer active");
  auto old = followers_.find(id);
  if (old != followers_.end()) drop(*old->second, Status::unavailable("replaced by a new session"));

  // The standby goes on from its last entry if this master has that same entry (same lsn,
  // same epoch) in its log; otherwise it is sent a snapshot first.
  bool resumes = false;
  if (lastEpoch == baseEpoch && lastLsn == baseLsn) {
    resumes = true;
  } else if (!tail.empty() && lastLsn >= tail.front().lsn && lastLsn <= tail.back().lsn) {
    resumes = tail[lastLsn - tail.front().lsn].epoch == lastEpoch;
  }
  std::shared_ptr<NamespaceStore::Snapshot> snap;
  if (!resumes) {
    snap = store.snapshot();
    if (snap->lsn() < baseLsn) {
      return Status::unavailable("the log no longer reaches back to the snapshot; try again");
    }
  }

  auto f = std::make_unique<Follower>(kj::mv(sink));
  f->id = id;
  f->session = nextSession++;
  f->sent = f->acked = resumes ? lastLsn : snap->lsn();
  f->snapshot = !resumes;
  f->lastProgress = timer.now();
  auto paf = kj::newPromiseAndFulfiller<Status>();
  f->done = kj::mv(paf.fulfiller);
  uint64_t session = f->session;
  logInfo("standby {} follows from entry {}{}", id, lastLsn,
          resumes ? "" : fmt::format(" (snapshot at entry {} first)", snap->lsn()));
  Follower& ref = *f;
  followers_[id] = std::move(f);
  auto start = resumes ? sendFrom(id, session) : sendSnapshot(id, session, snap, true);
  ref.work = start.eagerlyEvaluate([this, id, session](kj::Exception&& e) {
    if (Follower* f = find(id, session)) drop(*f, Status::unavailable(e.getDescription().cStr()));
  });
  return kj::mv(paf.promise);
}

kj::Promise<void> LogShipper::sendSnapshot(std::string id, uint64_t session,
                                           std::shared_ptr<NamespaceStore::Snapshot> snap,
                                           bool first) {
  Follower* f = find(id, session);
  if (f == nullptr) return kj::READY_NOW;
  std::vector<std::pair<std::string, std::string>> pairs;
  bool more = snap->next(opts.snapshotPieceBytes, pairs);
  auto req = f->sink.snapshotRequest();
  req.setEpoch(snap->epoch());
  req.setLsn(snap->lsn());
  req.setFirst(first);
  req.setLast(!more);
  auto ops = req.initOps(static_cast<uint>(pairs.size()));
  for (size_t i = 0; i < pairs.size(); ++i) {
    auto& [key, value] = pairs[i];
    auto op = ops[static_cast<uint>(i)];
    op.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
    op.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
  }
  return req.send().then([this, id, session, snap, more](auto response) mutable {
    Follower* f = find(id, session);
    if (f == nullptr) return kj::Promise<void>(kj::READY_NOW);
    Status s = fromWire(response.getStatus());
    if (!s.ok()) {
      drop(*f, s);
      return kj::Promise<void>(kj::READY_NOW);
    }
    f->lastProgress = timer.now();
    if (more) return sendSnapshot(id, session, kj::mv(snap), false);
    f->snapshot = false;
    return sendFrom(id, session);
  });
}

kj::Promise<void> LogShipper::sendFrom(std::string id, uint64_t session) {
  Follower* f = find(id, session);
  if (f == nullptr) return kj::READY_NOW;
  if (f->sent >= store.lastLsn()) {
    // Caught up: from now on each entry goes as it commits.
    f->live = true;
    acked(*f, f->acked);
    return kj::READY_NOW;
  }
  if (tail.empty() || f->sent + 1 < tail.front().lsn) {
    drop(*f, Status::unavailable("fell behind the log; a snapshot follows"));
    return kj::READY_NOW;
  }
  size_t from = f->sent + 1 - tail.front().lsn;
  if (from >= tail.size()) {
    drop(*f, Status::unavailable("the log does not reach its position"));
    return kj::READY_NOW;
  }
  size_t count = 0, bytes = 0;
  while (from + count < tail.size() && count < BATCH_ENTRIES && bytes < BATCH_BYTES) {
    bytes += entryBytes(tail[from + count]);
    ++count;
  }
  f->sent = tail[from + count - 1].lsn;
  return send(*f, from, count).then([this, id, session]() { return sendFrom(id, session); });
}

LogSinkImpl::LogSinkImpl(NamespaceStore& store, bool ackWritten,
                         kj::Function<void(bool installing)> onState)
    : store(store), ackWritten(ackWritten), onState(kj::mv(onState)) {}

kj::Promise<void> LogSinkImpl::append(AppendContext context) {
  auto results = context.getResults();
  auto entries = context.getParams().getEntries();
  if (closed || store.isWritable()) {
    toWire(Status(ErrorCode::NOT_ACTIVE, "this standby no longer follows that master"),
           results.initStatus());
    return kj::READY_NOW;
  }
  kj::Vector<kj::Promise<void>> durable;
  bool synced = false;  // an entry asks to be acknowledged once synced
  for (auto e : entries) {
    // Anything from an older epoch than this standby has seen is a deposed master's.
    if (e.getEpoch() < store.currentEpoch() || e.getLsn() != store.lastLsn() + 1) {
      toWire(Status::invalidArgument(
                 fmt::format("log entry {} at epoch {} does not follow entry {} at epoch {}",
                             e.getLsn(), e.getEpoch(), store.lastLsn(), store.currentEpoch())),
             results.initStatus());
      closed = true;
      return kj::joinPromises(durable.releaseAsArray());
    }
    LogEntry entry;
    entry.epoch = e.getEpoch();
    entry.lsn = e.getLsn();
    entry.sync = e.getSync();
    synced = synced || entry.sync;
    for (auto op : e.getOps()) {
      if (op.getDelete()) {
        entry.mutation.del(str(op.getKey()));
      } else {
        entry.mutation.put(str(op.getKey()), str(op.getValue()));
      }
    }
    sessionEpoch = std::max(sessionEpoch, entry.epoch);
    lastReceived = entry.lsn;
    durable.add(store.apply(std::move(entry)));
  }
  uint64_t lsn = store.lastLsn();
  toWire(Status::OK(), results.initStatus());
  auto all = kj::joinPromises(durable.releaseAsArray());
  if (synced) {
    // Until this call's sync is done, no answer may claim the entries it syncs.
    syncing.insert(lsn);
    all = all.then([this, lsn]() { syncing.erase(lsn); });
  }
  // Answered before the entries are in the log only while no sync is in progress: the
  // active takes the highest answer as held, and a sync covers every entry before it.
  // Otherwise the answer waits for these entries' write, which the committer makes after
  // that sync. (An earlier answer would have to claim less than these entries, and nothing
  // would tell the active of them once the sync was done: a client that waits for one
  // sends nothing more.)
  results.setLsn(lsn);
  if (!ackWritten && !synced && syncing.empty()) {
    all.detach([](kj::Exception&& e) {
      logError("standby: applying the log failed: {}", e.getDescription().cStr());
    });
    return kj::READY_NOW;
  }
  return all;
}

kj::Promise<void> LogSinkImpl::snapshot(SnapshotContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  if (closed || store.isWritable() || p.getEpoch() < sessionEpoch) {
    toWire(Status(ErrorCode::NOT_ACTIVE, "this standby no longer follows that master"),
           results.initStatus());
    return kj::READY_NOW;
  }
  if (p.getFirst()) onState(true);
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(p.getOps().size());
  for (auto op : p.getOps()) pairs.emplace_back(str(op.getKey()), str(op.getValue()));
  std::optional<std::pair<uint64_t, uint64_t>> end;
  if (p.getLast()) end = std::make_pair(p.getEpoch(), p.getLsn());
  bool last = p.getLast();
  return store.install(p.getFirst(), std::move(pairs), end).then([this, results, last]() mutable {
    if (last) onState(false);
    toWire(Status::OK(), results.initStatus());
  });
}

}  // namespace cairn
