#include "chunk_manager.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include "log.h"

namespace cairn {

ChunkManager::ChunkManager(Namespace& ns, ReplicaControl& control, kj::Timer& timer,
                           ChunkManagerOptions options)
    : ns(ns),
      control(control),
      timer(timer),
      options(options),
      rng(options.seed),
      startedAt(timer.now()),
      copies(*this) {}

void ChunkManager::loadFromNamespace() {
  // A file's chunks come together: its goal is read once.
  uint64_t lastInode = 0;
  uint8_t lastGoal = 0;
  ns.forEachChunk([&](uint64_t inode, const ChunkRecord& record) {
    if (inode != lastInode) {
      auto n = ns.getattr(inode);
      lastInode = inode;
      lastGoal = n.ok() ? n.value.replication : 0;
    }
    Chunk& c = chunks[record.handle];
    c.inode = inode;
    assignRecord(c, record);
    c.goal = lastGoal;
    c.unchecked = true;
    ++startupLeft;
    if (record.cutAt != 0) owedCuts[record.handle] = OwedCut{};  // tried at the first tick
  });
  // A shared chunk has the highest goal of its files.
  ns.forEachSharedChunk([this](uint64_t handle, const std::vector<ChunkOwner>& owners) {
    if (Chunk* c = chunks.find(handle)) c->goal = highestGoal(owners);
  });
  // No replica is known yet: once safe mode ends, every chunk is looked at once (in
  // batches, a tick at a time), and those off their goal are put in line.
  auditCursor = 0;
  // Until chunkservers report, the master knows no replica: it changes nothing then.
  safeMode = !chunks.empty();
  startedAt = timer.now();
  logInfo("{} chunks in the namespace{}", chunks.size(),
          safeMode ? "; in safe mode until chunkservers report them" : "");
}

ChunkManager::~ChunkManager() noexcept(false) {
  // A step in line still holds a promise that, when dropped, looks its chunk up in
  // `activity`: the map must be whole (here empty) while they go.
  auto doomed = std::move(activity);
  activity.clear();
}

void ChunkManager::becomeActive() {
  // A server the standby heard nothing from for long is dead: its mirrored report is no
  // replica (it registers again when it comes back).
  sweepDeadServers();
  chunks.clear();
  attention.clear();
  repairLine.clear();
  inRepairLine.clear();
  owedCuts.clear();
  corruptReplicas.clear();
  reportedCount = 0;
  startupLeft = 0;
  loadFromNamespace();
  mirroring = false;
  // What each chunkserver reported to the standby is now judged as a registration would
  // judge it, against the namespace as the log left it: chunk by chunk, one look-up in the
  // chunk map each, with each server's accepted handles gathered and its set rebuilt from
  // them in order at the end (a look-up per replica, at random, was most of a takeover).
  // A replica its server's set lists but the mirror lacks cannot be: the two change
  // together. A dead server's report is no replica.
  std::vector<std::vector<uint64_t>> held(serverIndex.size());
  for (auto& [id, s] : serversById) {
    if (s.live) held[id].reserve(s.chunks.size());
    s.chunks.clear();
    s.pendingDeletes.clear();
  }
  size_t stale = 0, orphans = 0;
  mirror.forEach([&](ReportedCopies& m) {
    Chunk* c = chunks.find(m.handle);
    m.forEach([&](uint64_t id, uint64_t version) {
      Server* s = serverOf(id);
      if (s != nullptr && s->live && judgeReplica(*s, c, m.handle, version, stale, orphans)) {
        countReplica(*c, id);
      }
    });
    // The chunk's replicas once all of its reports are judged (adopting a newer version
    // drops those judged before it).
    if (c != nullptr) {
      for (uint32_t id : c->replicas) held[id].push_back(m.handle);
    }
  });
  for (size_t id = 0; id < held.size(); ++id) {
    if (held[id].empty()) continue;
    std::sort(held[id].begin(), held[id].end());
    serverIndex[id]->chunks.assignSorted(held[id]);
    std::vector<uint64_t>().swap(held[id]);
  }
  mirror.clear();
  updateSafeMode();
  logInfo("took over the replica map of {} chunkservers ({} stale and {} orphaned replicas){}",
          serversById.size(), stale, orphans,
          safeMode ? "; in safe mode until more chunkservers report" : "");
}

void ChunkManager::acceptReport(Server& s, const std::vector<ChunkReportEntry>& report,
                                size_t& stale, size_t& orphans) {
  for (auto& entry : report) {
    Chunk* c = chunks.find(entry.handle);
    if (judgeReplica(s, c, entry.handle, entry.version, stale, orphans)) addReplica(*c, s.id);
  }
}

bool ChunkManager::judgeReplica(Server& s, Chunk* c, uint64_t handle, uint64_t version,
                                size_t& stale, size_t& orphans) {
  if (c == nullptr) {
    // (A copy whose record is on its way waits: see heartbeat() and unqueueDelete().)
    ++orphans;
    s.pendingDeletes.push_back(handle);
    return false;
  }
  if (version < c->record.version) {
    // Missed mutations while it was away: never served, deleted.
    ++stale;
    s.pendingDeletes.push_back(handle);
    return false;
  }
  if (version > c->record.version && version <= issuedOf(*c)) {
    // It took a version change whose answer never came (a late order, a reply lost):
    // the change was undone or went on without it, so it missed what followed.
    ++stale;
    s.pendingDeletes.push_back(handle);
    return false;
  }
  if (version > c->record.version) {
    // The master failed after replicas moved to a new version but before it recorded
    // it: the chunkserver has the last word, and older replicas are now the stale ones.
    logWarn("chunk {:x}: {} reports version {} > {}; adopting it", handle, s.address, version,
            c->record.version);
    for (uint64_t other : c->replicas.toVector()) {
      removeReplica(*c, other);
      queueDelete(other, handle);
    }
    c->record.version = version;
    // A server holds it, so it was created (recordVersion would say so, but the replicas
    // are empty until the caller adds this one).
    setPending(*c, false);
    recordVersion(*c).detach([](kj::Exception&& e) {
      logError("cannot record adopted version: {}", e.getDescription().cStr());
    });
  }
  return true;
}

void ChunkManager::applyChanges(uint64_t id, const std::vector<ChunkReportEntry>& changes) {
  auto found = serversById.find(id);
  if (found == serversById.end()) return;
  Server& s = found->second;
  for (auto& change : changes) {
    if (mirroring) {
      if (change.handle == 0) continue;  // no chunk has it
      if (change.version == 0) {
        s.chunks.erase(change.handle);
        unmirror(change.handle, id);
      } else {
        s.chunks.insert(change.handle);
        mirror[change.handle].set(id, change.version);
      }
      continue;
    }
    // The active master knows the replicas from its own orders; a change report only
    // fills in a chunk it knows no live replica of, at its current version (one whose
    // report was on its way when this master took over).
    Chunk* c = chunks.find(change.handle);
    if (change.version == 0 || !s.live) continue;
    if (!c) {
      // No record names it (an early create whose master died before the record landed,
      // the create reaching the server after this master took over): it goes, as it would
      // with the server's next full report. A copy this master is making waits for its
      // record, which may name the server.
      if (!unrecorded.count(change.handle)) {
        logInfo("chunk {:x}: {} reports a replica no record names; deleting it", change.handle,
                s.address);
      }
      s.pendingDeletes.push_back(change.handle);
      continue;
    }
    if (change.version != c->record.version || !liveReplicas(*c).empty()) continue;
    logInfo("chunk {:x}: {} reports a current replica", change.handle, s.address);
    addReplica(*c, id);
    unqueueDelete(id, change.handle);
  }
}

void ChunkManager::unmirror(uint64_t handle, uint64_t id) {
  ReportedCopies* m = mirror.find(handle);
  if (m != nullptr && m->erase(id) && m->empty()) mirror.erase(handle);
}

std::vector<ChunkView> ChunkManager::mirrorLocate(uint64_t inode, uint32_t first, uint32_t count) {
  std::vector<ChunkView> out;
  auto now = timer.now();
  for (auto& record : ns.listChunks(inode, first, count)) {
    ChunkView v;
    v.record = record;
    std::vector<uint64_t> listed;
    if (const ReportedCopies* m = mirror.find(record.handle)) {
      m->forEach([&](uint64_t id, uint64_t version) {
        auto& server = serversById.at(id);
        if (version == record.version && now - server.lastHeartbeat <= options.deadAfter) {
          v.replicas.push_back({server.address, server.rack});
          listed.push_back(id);
        }
      });
    }
    v.inlineWrites = allHave(listed, wire::FEATURE_INLINE_WRITES);
    out.push_back(std::move(v));
  }
  return out;
}

uint64_t ChunkManager::registerServer(const std::string& address, const std::string& rack,
                                      uint64_t capacityBytes, uint64_t usedBytes,
                                      const std::vector<ChunkReportEntry>& report,
                                      std::optional<uint64_t> availableBytes, uint64_t features) {
  uint64_t id;
  auto known = serverByAddress.find(address);
  if (known != serverByAddress.end()) {
    id = known->second;
    // A re-registration replaces everything the master believed about this server.
    for (uint64_t h : serversById[id].chunks.toVector()) {
      if (mirroring) {
        unmirror(h, id);
        continue;
      }
      if (Chunk* c = chunks.find(h)) removeReplica(*c, id);
    }
  } else {
    id = nextServerId++;
    serverByAddress[address] = id;
    if (serverIndex.size() <= id) serverIndex.resize(id + 1, nullptr);
    serverIndex[id] = &serversById[id];
  }
  Server& s = serversById[id];
  s.id = id;
  s.address = address;
  s.rack = rack;
  s.capacityBytes = capacityBytes;
  s.usedBytes = usedBytes;
  s.availableBytes =
      availableBytes.value_or(capacityBytes > usedBytes ? capacityBytes - usedBytes : 0);
  s.lastHeartbeat = timer.now();
  s.live = true;
  s.features = features;
  s.chunks.clear();
  s.pendingDeletes.clear();
  size_t stale = 0, orphans = 0;
  if (mirroring) {
    // A standby only mirrors the report: the log may not have brought it the chunks yet.
    for (auto& entry : report) {
      if (entry.handle == 0) continue;  // no chunk has it (a stray file's name)
      s.chunks.insert(entry.handle);
      mirror[entry.handle].set(id, entry.version);
    }
  } else {
    acceptReport(s, report, stale, orphans);
  }
  logInfo("chunkserver {} (id {}, rack '{}') registered: {} chunks, {} stale, {} orphaned", address,
          id, rack, report.size(), stale, orphans);
  note(fmt::format("chunkserver {} (rack {}) registered with {} chunks", address, rack,
                   report.size()));
  if (!mirroring) updateSafeMode();
  return id;
}

bool ChunkManager::heartbeat(uint64_t id, uint64_t capacityBytes, uint64_t usedBytes,
                             std::vector<uint64_t>& deleteHandles,
                             std::optional<uint64_t> availableBytes) {
  auto it = serversById.find(id);
  if (it == serversById.end() || !it->second.live) return false;
  Server& s = it->second;
  s.capacityBytes = capacityBytes;
  s.usedBytes = usedBytes;
  s.availableBytes =
      availableBytes.value_or(capacityBytes > usedBytes ? capacityBytes - usedBytes : 0);
  s.lastHeartbeat = timer.now();
  s.recentCreations = 0;
  // Nothing is deleted until the reports cover the namespace, nor by a standby.
  if (safeMode || mirroring) return true;
  // A copy goes only while the rule allows it: a stale replica of a chunk whose current
  // replicas are all away waits for them (it is the best copy left until then).
  std::vector<uint64_t> waiting;
  for (uint64_t h : s.pendingDeletes) {
    Chunk* c = chunks.find(h);
    if (!c && unrecorded.count(h)) {
      waiting.push_back(h);  // its record may yet name this server (unqueueDelete)
    } else if (mayDelete(id, c != nullptr, c ? goodReplicas(*c) : std::vector<uint64_t>{})) {
      deleteHandles.push_back(h);
    } else {
      waiting.push_back(h);
    }
  }
  s.pendingDeletes = std::move(waiting);
  return true;
}

size_t ChunkManager::sweepDeadServers() {
  size_t dead = 0;
  auto now = timer.now();
  for (auto& [id, s] : serversById) {
    if (!s.live || now - s.lastHeartbeat <= options.deadAfter) continue;
    s.live = false;
    ++dead;
    logWarn("chunkserver {} (id {}) is dead: no heartbeat for {} s", s.address, id,
            (now - s.lastHeartbeat) / kj::SECONDS);
    note(fmt::format("chunkserver {} is dead: no heartbeat for {} s; {} chunks to copy elsewhere",
                     s.address, (now - s.lastHeartbeat) / kj::SECONDS, s.chunks.size()));
    for (uint64_t h : s.chunks.toVector()) {
      if (Chunk* c = chunks.find(h)) removeReplica(*c, id);
    }
  }
  return dead;
}

void ChunkManager::addReplica(Chunk& c, uint64_t server) {
  countReplica(c, server);
  if (Server* s = serverOf(server)) s->chunks.insert(c.record.handle);
}

void ChunkManager::countReplica(Chunk& c, uint64_t server) {
  bool before = reported(c);
  c.replicas.insert(server);
  reportedCount += reported(c) - before;
  mark(c);
}

void ChunkManager::removeReplica(Chunk& c, uint64_t server) {
  mark(c);
  bool before = reported(c);
  c.replicas.erase(server);
  reportedCount -= before - reported(c);
  if (c.hasCorrupt) {
    auto bad = corruptReplicas.find(c.record.handle);
    if (bad != corruptReplicas.end() && bad->second.erase(server) && bad->second.empty()) {
      corruptReplicas.erase(bad);
      c.hasCorrupt = false;
    }
  }
  // Whichever replica leaves, the lease ends: the next write needs a new lease, and so a
  // new version, so that the replica that left (which may come back) is recognisably stale
  // rather than silently missing the writes made without it.
  if (Activity* a = activityOf(c.record.handle)) a->primary.reset();
  if (Server* s = serverOf(server)) s->chunks.erase(c.record.handle);
}

void ChunkManager::mark(Chunk& c) {
  // A chunk the check after the start has not looked at yet waits for it (unless it is in
  // the repair line already: its place there changes now).
  if (!c.unchecked || inRepairLine.count(c.record.handle)) attention.insert(c.record.handle);
}

bool ChunkManager::reported(const Chunk& c) { return !c.replicas.empty() || c.record.pending; }

void ChunkManager::assignRecord(Chunk& c, const ChunkRecord& record) {
  bool before = reported(c);
  uint64_t handle = c.record.handle;
  c.record = record;
  c.record.handle = handle;  // the key stays
  reportedCount += reported(c) - before;
}

void ChunkManager::setPending(Chunk& c, bool pending) {
  bool before = reported(c);
  c.record.pending = pending;
  reportedCount += reported(c) - before;
}

void ChunkManager::forget(Chunk& c) {
  reportedCount -= reported(c);
  startupLeft -= c.unchecked;
  uint64_t handle = c.record.handle;
  attention.erase(handle);
  leaveRepairLine(handle);
  owedCuts.erase(handle);
  corruptReplicas.erase(handle);
  chunks.erase(handle);
}

ChunkManager::Activity* ChunkManager::activityOf(uint64_t handle) {
  auto it = activity.find(handle);
  return it == activity.end() ? nullptr : &it->second;
}

void ChunkManager::pruneActivity() {
  auto now = timer.now();
  for (auto it = activity.begin(); it != activity.end();) {
    // An expired lease is as good as none; the busy promise of finished steps is done.
    if (it->second.steps == 0 && now >= it->second.leaseExpiry) {
      it = activity.erase(it);
    } else {
      ++it;
    }
  }
}

bool ChunkManager::isCorrupt(const Chunk& c, uint64_t server) const {
  if (!c.hasCorrupt) return false;
  auto bad = corruptReplicas.find(c.record.handle);
  return bad != corruptReplicas.end() && bad->second.count(server);
}

size_t ChunkManager::corruptCount(const Chunk& c) const {
  if (!c.hasCorrupt) return 0;
  auto bad = corruptReplicas.find(c.record.handle);
  return bad == corruptReplicas.end() ? 0 : bad->second.size();
}

void ChunkManager::queueDelete(uint64_t server, uint64_t handle) {
  auto s = serversById.find(server);
  if (s != serversById.end()) s->second.pendingDeletes.push_back(handle);
}

void ChunkManager::unqueueDelete(uint64_t server, uint64_t handle) {
  auto s = serversById.find(server);
  if (s == serversById.end()) return;
  auto& pending = s->second.pendingDeletes;
  pending.erase(std::remove(pending.begin(), pending.end(), handle), pending.end());
}

bool ChunkManager::leaseValid(const Chunk& c) {
  Activity* a = activityOf(c.record.handle);
  if (!a || !a->primary || timer.now() >= a->leaseExpiry) return false;
  Server* s = serverOf(*a->primary);
  return s && s->live && c.replicas.count(*a->primary);
}

std::vector<uint64_t> ChunkManager::goodReplicas(const Chunk& c) {
  std::vector<uint64_t> out;
  for (uint64_t id : liveReplicas(c)) {
    if (!isCorrupt(c, id)) out.push_back(id);
  }
  return out;
}

std::vector<uint64_t> ChunkManager::liveReplicas(const Chunk& c) {
  std::vector<uint64_t> out;
  for (uint64_t id : c.replicas) {
    Server* s = serverOf(id);
    if (s && s->live) out.push_back(id);
  }
  return out;
}

bool ChunkManager::has(uint64_t id, uint64_t feature) {
  Server* s = serverOf(id);
  return s != nullptr && (s->features & feature) != 0;
}

bool ChunkManager::allHave(const std::vector<uint64_t>& ids, uint64_t feature) {
  return !ids.empty() &&
         std::all_of(ids.begin(), ids.end(), [&](uint64_t id) { return has(id, feature); });
}

ChunkView ChunkManager::view(const Chunk& c) {
  ChunkView v;
  v.record = c.record;
  auto live = liveReplicas(c);
  for (uint64_t id : live) {
    Server* s = serverOf(id);
    v.replicas.push_back({s->address, s->rack});
  }
  v.inlineWrites = allHave(live, wire::FEATURE_INLINE_WRITES);
  if (leaseValid(c)) {
    Activity* a = activityOf(c.record.handle);
    v.primary = serverOf(*a->primary)->address;
    v.leaseRemainingMs = static_cast<uint32_t>((a->leaseExpiry - timer.now()) / kj::MILLISECONDS);
  }
  return v;
}

std::vector<ChunkView> ChunkManager::locate(uint64_t inode, uint32_t first, uint32_t count) {
  if (mirroring) return mirrorLocate(inode, first, count);
  std::vector<ChunkView> out;
  for (auto& record : ns.listChunks(inode, first, count)) {
    Chunk& c = chunks[record.handle];
    c.inode = inode;
    c.record.index = record.index;
    if (c.record.version < record.version) c.record.version = record.version;
    out.push_back(view(c));
  }
  return out;
}

kj::Promise<void> ChunkManager::serialize(uint64_t handle, kj::Function<kj::Promise<void>()> step) {
  Activity& a = activity[handle];
  kj::Promise<void> before = kj::READY_NOW;
  KJ_IF_MAYBE (busy, a.busy) {
    before = busy->addBranch();
  }
  a.steps++;
  auto done = kj::defer([this, handle]() {
    if (Activity* a = activityOf(handle)) a->steps--;
  });
  auto run =
      before.then([step = kj::mv(step)]() mutable { return step(); }).attach(kj::mv(done)).fork();
  a.busy = run.addBranch()
               .catch_([](kj::Exception&&) {})  // the next step runs whatever this one did
               .fork();
  return run.addBranch();
}

kj::Promise<std::vector<ServerFailure>> ChunkManager::setVersionOn(std::vector<uint64_t> servers,
                                                                   uint64_t handle,
                                                                   uint64_t version, bool create,
                                                                   bool leaseFirst) {
  kj::Vector<kj::Promise<Status>> calls;
  uint32_t leaseMs = leaseFirst ? options.leaseDuration / kj::MILLISECONDS : 0;
  for (uint64_t s : servers) {
    calls.add(control.setVersion(s, handle, version, create, calls.empty() ? leaseMs : 0));
  }
  return kj::joinPromises(calls.releaseAsArray())
      .then([this, servers = std::move(servers), handle](kj::Array<Status> results) {
        std::vector<ServerFailure> out;
        for (size_t i = 0; i < servers.size(); ++i) {
          if (!results[i].ok()) {
            Server* s = serverOf(servers[i]);
            logWarn("chunk {:x}: setVersion on {} failed: {}", handle,
                    s ? s->address : std::string("?"), results[i].toString());
          }
          out.push_back({servers[i], results[i]});
        }
        return out;
      });
}

std::vector<uint64_t> ChunkManager::succeeded(const std::vector<ServerFailure>& results) {
  std::vector<uint64_t> out;
  for (auto& r : results) {
    // One declared dead while the order was on its way gets no writes from now on: it
    // counts as failed, and is fenced off like one that did not answer.
    Server* s = serverOf(r.server);
    if (r.status.ok() && s && s->live) out.push_back(r.server);
  }
  return out;
}

kj::Promise<std::vector<uint64_t>> ChunkManager::bumpVersion(uint64_t handle, int round) {
  Chunk& c = chunks.at(handle);
  auto live = liveReplicas(c);
  if (live.empty()) return std::vector<uint64_t>{};
  uint64_t oldVersion = c.record.version;
  Activity* a = activityOf(handle);
  std::optional<uint64_t> oldPrimary = a ? a->primary : std::nullopt;
  // GFS: record the new version before any replica learns it, so that a replica that
  // misses it is recognisably stale after any crash. A number is never handed out twice:
  // a replica may have taken a bump whose answer was lost.
  c.record.version = nextVersion(c);
  if (a) a->primary.reset();
  return recordVersion(c)
      .then([this, live, handle]() {
        return setVersionOn(live, handle, chunks.at(handle).record.version, false);
      })
      .then([this, handle, oldVersion, oldPrimary,
             round](std::vector<ServerFailure> results) -> kj::Promise<std::vector<uint64_t>> {
        Chunk* found = chunks.find(handle);
        if (!found) return std::vector<uint64_t>{};
        Chunk& c = *found;
        auto current = succeeded(results);
        if (current.empty()) {
          // Nobody moved: keep the old version so that the replicas stay current, and the
          // old lease as the primary may still hold it (no copy starts under it).
          // The record keeps the number handed out as `issued`: a replica that takes it
          // late is stale, never newer.
          c.record.version = oldVersion;
          if (oldPrimary) activity[handle].primary = oldPrimary;
          return recordVersion(c).then([]() { return std::vector<uint64_t>{}; });
        }
        bool failed = current.size() < results.size();
        for (auto& r : results) {
          if (std::find(current.begin(), current.end(), r.server) == current.end()) {
            removeReplica(c, r.server);
            queueDelete(r.server, handle);
          }
        }
        // Every replica that stays moved to the new version, which ends any lease there.
        if (Activity* a = activityOf(handle)) a->leaseExpiry = timer.now();
        if (failed) {
          // One that failed may still take the new version late (its answer lost, the order
          // delayed in the network) and would then look current without the writes that
          // follow: the others move once more, to a number it is never sent.
          if (round + 1 >= MAX_FENCE_ROUNDS) return std::vector<uint64_t>{};
          return bumpVersion(handle, round + 1);
        }
        return current;
      });
}

size_t ChunkManager::roomElsewhere(const Chunk& c) {
  size_t n = 0;
  for (auto& [id, s] : serversById) {
    if (!s.live || s.decommissioning || c.replicas.count(id)) continue;
    n += hasRoom(candidate(s));
  }
  return n;
}

uint64_t ChunkManager::issuedOf(const Chunk& c) {
  return std::max({c.issued, c.record.issued, c.record.version});
}

uint64_t ChunkManager::nextVersion(Chunk& c) {
  c.issued = issuedOf(c) + 1;
  return c.issued;
}

kj::Promise<void> ChunkManager::recordVersion(Chunk& c) {
  c.issued = issuedOf(c);
  // A version number not recorded before is synced before any replica learns it: after a
  // power cut the master must not hand it out again, to other replicas.
  bool newNumber = c.issued > c.record.issued;
  c.record.issued = c.issued;
  // A chunk some server holds is created, whoever created it (a master that died before
  // recording so, say): from now on it may hold bytes.
  if (!c.replicas.empty()) setPending(c, false);
  return ns.setChunkVersion(c.inode, c.record, newNumber);
}

PlacementCandidate ChunkManager::candidate(const Server& s) const {
  return {s.id, s.rack, s.capacityBytes, s.usedBytes, s.recentCreations, s.availableBytes};
}

Status ChunkManager::applyWriteFailures(Chunk& c, const std::vector<ReplicaFailure>& failures) {
  std::vector<ServerFailure> byServer;
  for (auto& f : failures) {
    auto s = serverByAddress.find(f.address);
    if (s != serverByAddress.end()) byServer.push_back({s->second, f.status});
  }
  auto decision = afterFailedWrite(goodReplicas(c), byServer, roomElsewhere(c));
  for (uint64_t id : decision.drop) {
    // The replica missed a write that the others hold: it leaves, and the new version of
    // the next lease fences it off (re-replication restores the goal).
    logWarn("chunk {:x}: a write through {} failed; dropping that replica", c.record.handle,
            serverOf(id)->address);
    removeReplica(c, id);
    queueDelete(id, c.record.handle);
  }
  if (Activity* a = activityOf(c.record.handle); a && decision.newLease) a->primary.reset();
  if (!decision.error.ok()) {
    logInfo("chunk {:x}: a write failed on every replica it could go to ({}); no replica dropped",
            c.record.handle, decision.error.toString());
  }
  return decision.error;
}

Status ChunkManager::chunkGone() {
  return Status::unavailable("the chunk went away while the write was prepared; try again");
}

kj::Promise<Result<ChunkView>> ChunkManager::prepareWrite(uint64_t inode, uint32_t index,
                                                          std::vector<ReplicaFailure> failures,
                                                          uint64_t failedVersion) {
  if (frozenInodes.count(inode)) {
    return nextChange().then(
        [this, inode, index, failures = std::move(failures), failedVersion]() mutable {
          return prepareWrite(inode, index, std::move(failures), failedVersion);
        });
  }
  Hold hold = underWay(inode);
  return prepareWriteNow(inode, index, std::move(failures), failedVersion, hold)
      .attach(kj::mv(hold));
}

ChunkManager::Hold ChunkManager::underWay(uint64_t inode) {
  writesUnderWay[inode]++;
  return Hold(nullptr, [this, inode](void*) { leave(inode); });
}

kj::Promise<Result<ChunkView>> ChunkManager::prepareWriteNow(uint64_t inode, uint32_t index,
                                                             std::vector<ReplicaFailure> failures,
                                                             uint64_t failedVersion, Hold hold) {
  if (safeMode) return Result<ChunkView>(safeModeRefusal());
  auto record = ns.getChunk(inode, index);
  if (record && !record->pending && ns.isShared(record->handle)) {
    // A chunk another file shares is copied first, and the write goes to the copy (the
    // failures reported were of the shared chunk's last lease, long revoked).
    return copyOnWrite(inode, *record, hold)
        .then([this, inode, index, hold](Status s) -> kj::Promise<Result<ChunkView>> {
          if (!s.ok()) return Result<ChunkView>(s);
          return prepareWriteNow(inode, index, {}, 0, hold);
        });
  }
  if (!record) {
    auto n = ns.getattr(inode);
    if (!n.ok()) return Result<ChunkView>(n.status);
    if (n.value.type != InodeType::REGULAR) {
      return Result<ChunkView>(Status::invalidArgument("not a regular file"));
    }
    return allocate(inode, index, n.value.replication, kj::mv(hold));
  }
  uint64_t handle = record->handle;
  Chunk& c = chunks[handle];
  c.inode = inode;
  assignRecord(c, *record);
  activity[handle].lastWrite = timer.now();
  return serialized<Result<ChunkView>>(
      handle,
      [this, handle, failures = std::move(failures),
       failedVersion]() -> kj::Promise<Result<ChunkView>> {
        Chunk* found = chunks.find(handle);
        if (!found) return Result<ChunkView>(chunkGone());
        Chunk& c = *found;
        // Allocated, but never confirmed created and no replica known: a master died before
        // the chunkservers created it. Made again.
        if (neverWritten(c)) return recreate(handle);
        // A report about an older version is stale: the set moved on since.
        if (!failures.empty() && failedVersion == c.record.version) {
          Status s = applyWriteFailures(c, failures);
          if (!s.ok()) return Result<ChunkView>(s);
        }
        if (c.record.cutAt != 0) {
          // Bytes a truncate removed may still be there past the end: cut first (the new
          // version that takes also ends the lease).
          return cutReplicas(handle, c.record.cutAt, nullptr)
              .then([this, handle](Status cut) -> kj::Promise<Result<ChunkView>> {
                if (!cut.ok()) return Result<ChunkView>(cut);
                return grantNewLease(handle);
              });
        }
        if (!leaseValid(c)) return grantNewLease(handle);
        Activity& a = activity[handle];  // a valid lease has one
        if (a.leaseExpiry - timer.now() > options.leaseDuration / 2) {
          return Result<ChunkView>(view(c));
        }
        // Extend the lease while writes continue; the version stays.
        uint64_t primary = *a.primary;
        return control
            .grantLease(primary, handle, c.record.version, options.leaseDuration / kj::MILLISECONDS)
            .then([this, handle, primary](Status s) -> Result<ChunkView> {
              Chunk* c = chunks.find(handle);
              if (!c) return chunkGone();
              if (s.ok()) {
                activity[handle].leaseExpiry = timer.now() + options.leaseDuration;
                return view(*c);
              }
              // The primary cannot take the lease: it leaves if the rule allows; either way
              // the next call grants a new lease.
              if (mayLeave(primary, goodReplicas(*c))) {
                removeReplica(*c, primary);
                queueDelete(primary, handle);
              }
              if (Activity* a = activityOf(handle)) a->primary.reset();
              return s;
            });
      },
      kj::mv(hold));
}

kj::Promise<Result<ChunkView>> ChunkManager::allocate(uint64_t inode, uint32_t index, uint8_t goal,
                                                      Hold hold) {
  std::vector<PlacementCandidate> candidates;
  for (auto& [id, s] : serversById) {
    if (s.live && !s.decommissioning) candidates.push_back(candidate(s));
  }
  auto targets = choosePlacement(candidates, goal, {}, options.minFreeBytes, rng);
  if (targets.empty()) {
    return Result<ChunkView>(Status::noSpace("no live chunkserver with free space"));
  }
  for (uint64_t t : targets) serverOf(t)->recentCreations++;
  // The record is visible from now on, so a concurrent caller for the same chunk finds it
  // and waits on serialize() below.
  auto durable = ns.allocateChunk(inode, index);
  auto record = ns.getChunk(inode, index);
  KJ_ASSERT(record.has_value());
  uint64_t handle = record->handle, version = record->version;
  Chunk& c = chunks[handle];
  c.inode = inode;
  assignRecord(c, *record);
  c.goal = goal;
  activity[handle].lastWrite = timer.now();
  // The replicas are made (the first taking the lease) while the record goes to the log
  // when its handle is in a reserve already on disk (Namespace::allocateHandle): no master
  // hands that handle out again, so a master that dies before the record lands leaves
  // only empty replicas of a handle no record names (deleted once a master hears of them,
  // in a full report or a change report). A handle from a reserve still on its way waits for the
  // record (the reserve's entry is before it in the log).
  bool early = ns.handleOnDisk(handle);
  return serialized<Result<ChunkView>>(
      handle,
      [this, handle, version, durable = kj::mv(durable), targets, early]() mutable {
        auto recorded =
            durable.then([](Result<ChunkRecord> r) { KJ_REQUIRE(r.ok(), r.status.toString()); });
        // The first lease goes with the creation to a server that takes it; else it is
        // granted in a call of its own (confirmCreated).
        bool leaseSent = has(targets[0], wire::FEATURE_LEASE_WITH_CREATE);
        auto create = [this, targets, handle, version, leaseSent]() {
          return setVersionOn(targets, handle, version, true, leaseSent);
        };
        auto made = early ? recorded.then([sent = create()]() mutable { return kj::mv(sent); })
                          : recorded.then(kj::mv(create));
        return made.then([this, handle, leaseSent](
                             std::vector<ServerFailure> results) -> kj::Promise<Result<ChunkView>> {
          Chunk* c = chunks.find(handle);
          if (!c) return Result<ChunkView>(chunkGone());
          auto created = succeeded(results);
          for (uint64_t s : created) addReplica(*c, s);
          if (created.empty()) {
            bool full = std::all_of(results.begin(), results.end(),
                                    [](auto& r) { return r.status.code() == ErrorCode::NO_SPACE; });
            Status failed = full ? Status::noSpace("no chunkserver has room for a new chunk")
                                 : Status::unavailable("no chunkserver could create the chunk");
            // Not one replica exists: the chunk never held a byte, and left behind it would
            // read as missing rather than as a hole.
            auto forgotten = ns.forgetChunk(c->inode, c->record);
            forget(*c);
            return forgotten.then([failed]() { return Result<ChunkView>(failed); });
          }
          return confirmCreated(handle, created, results.size(), leaseSent);
        });
      },
      kj::mv(hold));
}

bool ChunkManager::neverWritten(const Chunk& c) { return c.record.pending && c.replicas.empty(); }

kj::Promise<Result<ChunkView>> ChunkManager::confirmCreated(uint64_t handle,
                                                            std::vector<uint64_t> created,
                                                            size_t asked, bool leaseSent) {
  Chunk& c = chunks.at(handle);
  // Recorded before the lease is handed to a writer: a chunk still pending holds no byte.
  setPending(c, false);
  return recordVersion(c).then(
      [this, handle, created, asked, leaseSent]() -> kj::Promise<Result<ChunkView>> {
        if (!chunks.contains(handle)) return Result<ChunkView>(chunkGone());
        // A server that failed may still create the chunk late (the order delayed, its answer
        // lost), empty: the chunk then moves to a new version before its first write.
        // Otherwise the first lease keeps the version it was created at, taken by the first
        // server with the chunk (setVersionOn's `leaseFirst`; all succeeded, so it is
        // created[0]) if it was sent one, else by a call of its own.
        if (created.size() != asked) return grantNewLease(handle);
        if (!leaseSent) return grantLeaseTo(handle, created[0], created);
        return leaseTaken(handle, created[0], created);
      });
}

kj::Promise<Result<ChunkView>> ChunkManager::recreate(uint64_t handle) {
  Chunk& c = chunks.at(handle);
  std::vector<PlacementCandidate> candidates;
  for (auto& [id, s] : serversById) {
    if (s.live && !s.decommissioning) candidates.push_back(candidate(s));
  }
  auto targets = choosePlacement(candidates, goalOf(c), {}, options.minFreeBytes, rng);
  if (targets.empty()) {
    return Result<ChunkView>(Status::noSpace("no live chunkserver with free space"));
  }
  for (uint64_t t : targets) serverOf(t)->recentCreations++;
  // A number no replica was ever sent: a copy made before (on a server away now) is stale
  // against it.
  c.record.version = nextVersion(c);
  setPending(c, true);
  logWarn("chunk {:x}: allocated but never created; creating it at version {}", handle,
          c.record.version);
  uint64_t version = c.record.version;
  bool leaseSent = has(targets[0], wire::FEATURE_LEASE_WITH_CREATE);
  return recordVersion(c)
      .then([this, targets, handle, version, leaseSent]() {
        return setVersionOn(targets, handle, version, true, leaseSent);
      })
      .then([this, handle,
             leaseSent](std::vector<ServerFailure> results) -> kj::Promise<Result<ChunkView>> {
        Chunk* c = chunks.find(handle);
        if (!c) return Result<ChunkView>(chunkGone());
        auto created = succeeded(results);
        if (created.empty()) {
          return Result<ChunkView>(Status::unavailable("no chunkserver could create the chunk"));
        }
        for (uint64_t s : created) addReplica(*c, s);
        return confirmCreated(handle, created, results.size(), leaseSent);
      });
}

kj::Promise<Result<ChunkView>> ChunkManager::grantNewLease(uint64_t handle) {
  return bumpVersion(handle).then(
      [this, handle](std::vector<uint64_t> current) -> kj::Promise<Result<ChunkView>> {
        if (!chunks.contains(handle)) return Result<ChunkView>(chunkGone());
        if (current.empty()) {
          return Result<ChunkView>(
              Status::unavailable(fmt::format("no live replica of chunk {:x} answered", handle)));
        }
        return grantLeaseTo(handle, current[0], current);
      });
}

kj::Promise<Result<ChunkView>> ChunkManager::grantLeaseTo(uint64_t handle, uint64_t primary,
                                                          std::vector<uint64_t> members) {
  return control
      .grantLease(primary, handle, chunks.at(handle).record.version,
                  options.leaseDuration / kj::MILLISECONDS)
      .then([this, handle, primary,
             members = std::move(members)](Status s) -> kj::Promise<Result<ChunkView>> {
        if (!s.ok()) return chunks.contains(handle) ? Result<ChunkView>(s) : chunkGone();
        return leaseTaken(handle, primary, members);
      });
}

kj::Promise<Result<ChunkView>> ChunkManager::leaseTaken(uint64_t handle, uint64_t primary,
                                                        const std::vector<uint64_t>& members) {
  Chunk* c = chunks.find(handle);
  if (!c) return Result<ChunkView>(chunkGone());
  // A replica that left meanwhile (declared dead, say) holds this version and may come
  // back with it: the writes go to a version it never got.
  for (uint64_t m : members) {
    if (!c->replicas.count(m)) return grantNewLease(handle);
  }
  // The expiry counts from now, after the primary's answer, so the master never believes
  // a lease over before the primary does.
  Activity& a = activity[handle];
  a.primary = primary;
  a.leaseExpiry = timer.now() + options.leaseDuration;
  return Result<ChunkView>(view(*c));
}

void ChunkManager::release(const std::vector<uint64_t>& handles) {
  for (uint64_t h : handles) {
    Chunk* c = chunks.find(h);
    if (!c) continue;
    // Every server that holds the chunk is one of its replicas (a server leaves them when
    // it dies; a copy under way deletes what it made when it finds the chunk gone).
    for (uint64_t id : c->replicas) {
      Server* s = serverOf(id);
      if (s && s->chunks.erase(h)) s->pendingDeletes.push_back(h);
    }
    forget(*c);
  }
}

void ChunkManager::reportBadReplica(uint64_t handle, uint64_t version, const std::string& address) {
  auto s = serverByAddress.find(address);
  Chunk* c = chunks.find(handle);
  if (s == serverByAddress.end() || !c) return;
  if (version != c->record.version) return;
  dropCorrupt(*c, s->second, "a reader");
}

void ChunkManager::dropCorrupt(Chunk& c, uint64_t server, const char* finder) {
  if (!c.replicas.count(server)) return;
  const std::string& address = serverOf(server)->address;
  if (!mayLeave(server, goodReplicas(c))) {
    attention.insert(c.record.handle);
    c.hasCorrupt = true;
    if (corruptReplicas[c.record.handle].insert(server).second) {
      logError("chunk {:x}: {} found the replica on {} bad, but it is the last copy: kept",
               c.record.handle, finder, address);
      note(
          fmt::format("chunk {:x}: the last replica, on {}, is corrupt", c.record.handle, address));
    }
    return;
  }
  logWarn("chunk {:x}: {} found the replica on {} bad; dropping it", c.record.handle, finder,
          address);
  note(fmt::format("chunk {:x}: {} found the replica on {} bad; it is replaced", c.record.handle,
                   finder, address));
  repairCounters.replicasDropped++;
  removeReplica(c, server);
  queueDelete(server, c.record.handle);
}

std::vector<ServerView> ChunkManager::servers() const {
  std::vector<ServerView> out;
  for (auto& [id, s] : serversById) {
    out.push_back({id, s.address, s.rack, s.capacityBytes, s.usedBytes, s.chunks.size(), s.live,
                   s.decommissioning, s.availableBytes, timer.now() - s.lastHeartbeat});
  }
  return out;
}

void ChunkManager::note(std::string text) {
  recent.push_back({timer.now(), std::move(text)});
  while (recent.size() > 50) recent.pop_front();
}

size_t ChunkManager::leasesHeld() {
  size_t n = 0;
  for (auto& [h, a] : activity) {
    Chunk* c = a.primary ? chunks.find(h) : nullptr;
    n += c && leaseValid(*c);
  }
  return n;
}

}  // namespace cairn
