// ChunkManager's background work: safe mode, re-replication by urgency, removal of
// surplus replicas, rack spreading and decommissioning (balancing is in chunk_balance.cc).
// Everything here runs from tick() on the master's loop; copies run as tasks, bounded per
// chunkserver. A tick looks only at the chunks that something moved off their goal
// (`attention`), never at all of them: its work follows what changed, not the size of the
// namespace.

#include <fmt/format.h>
#include <kj/debug.h>

#include <algorithm>
#include <map>
#include <set>

#include "chunk_manager.h"
#include "log.h"

namespace cairn {

// Chunks the audit puts in `attention` only because they sit on one rack, at most.
constexpr size_t SPREAD_BACKLOG = 10000;
// How long a chunk whose copy to another rack did not leave it on two waits to try again.
constexpr kj::Duration SPREAD_RETRY = 10 * kj::MINUTES;

void ChunkManager::taskFailed(kj::Exception&& exception) {
  logError("re-replication task failed: {}", exception.getDescription().cStr());
}

uint8_t ChunkManager::goalOf(Chunk& c) {
  if (c.goal != 0) return c.goal;
  auto owners = ns.ownersOf(c.record.handle);
  if (owners.empty()) owners.push_back({c.inode, c.record.index});
  c.goal = highestGoal(owners);
  return c.goal;
}

uint8_t ChunkManager::highestGoal(const std::vector<ChunkOwner>& owners) {
  // A shared chunk has the highest goal of its files.
  uint8_t goal = 0;
  for (auto& o : owners) {
    auto n = ns.getattr(o.inode);
    if (n.ok()) goal = std::max(goal, n.value.replication);
  }
  return goal != 0 ? goal : DEFAULT_REPLICATION;
}

ChunkManager::Counts ChunkManager::counts(const Chunk& c) {
  Counts n;
  for (uint64_t id : c.replicas) {
    Server* s = serverOf(id);
    if (!s || !s->live) continue;
    ++n.live;
    n.effective += effective(c, id);
  }
  return n;
}

bool ChunkManager::effective(const Chunk& c, uint64_t server) {
  Server* s = serverOf(server);
  return s && s->live && !s->decommissioning && !isCorrupt(c, server);
}

bool ChunkManager::deletePending(const Server& s, uint64_t handle) {
  return std::find(s.pendingDeletes.begin(), s.pendingDeletes.end(), handle) !=
         s.pendingDeletes.end();
}

bool ChunkManager::canCopy(uint64_t server) {
  Server* s = serverOf(server);
  return s && s->live && s->copiesInFlight < options.copiesPerServer;
}

void ChunkManager::goalChanged(uint64_t inode, uint8_t goal) {
  for (auto& record : ns.listChunks(inode, 0, UINT32_MAX)) {
    Chunk* c = chunks.find(record.handle);
    // A shared chunk's goal is worked out again from all its files.
    if (!c) continue;
    c->goal = ns.isShared(record.handle) ? 0 : goal;
    attention.insert(record.handle);
  }
}

void ChunkManager::ownersChanged(uint64_t inode, uint32_t first, uint32_t count) {
  for (auto& record : ns.listChunks(inode, first, count)) {
    if (Chunk* c = chunks.find(record.handle)) {
      c->goal = 0;  // worked out again from all its files
      attention.insert(record.handle);
    }
  }
}

void ChunkManager::reportCorrupt(uint64_t server, uint64_t handle) {
  if (Chunk* c = chunks.find(handle)) dropCorrupt(*c, server, "the scrubber");
}

void ChunkManager::enterSafeMode() {
  if (!manualSafeMode) {
    logWarn("entering safe mode by an admin's order: the cluster is read only");
    note("an admin put the cluster in safe mode (read only)");
  }
  safeMode = manualSafeMode = true;
}

void ChunkManager::leaveSafeMode() {
  if (safeMode) {
    logWarn("leaving safe mode by an admin's order");
    note("an admin took the cluster out of safe mode");
  }
  safeMode = manualSafeMode = false;
}

Status ChunkManager::safeModeRefusal() const {
  if (manualSafeMode)
    return Status(ErrorCode::READ_ONLY, "the cluster is in safe mode (an admin's)");
  if (safeMode) return Status(ErrorCode::SAFE_MODE, "master in safe mode; retry");
  return Status::OK();
}

void ChunkManager::updateSafeMode() {
  if (!safeMode || manualSafeMode) return;
  // Called at every registration: the chunks with a replica (every replica is on a live
  // server: a server's replicas leave when it dies), or allocated but never created
  // (nothing to wait for: its master died first), are counted as they change.
  auto enough = [this](size_t n) {
    return chunks.empty() || static_cast<double>(n) / chunks.size() >= options.safeModeThreshold;
  };
  bool timedOut = timer.now() - startedAt > options.safeModeTimeout;
  size_t reported = reportedCount;
  if (enough(reported) || timedOut) {
    safeMode = false;
    if (timedOut && !enough(reported)) {
      logWarn("leaving safe mode after {} s with {} of {} chunks reported",
              options.safeModeTimeout / kj::SECONDS, reported, chunks.size());
    } else {
      logInfo("leaving safe mode: {} of {} chunks have a live replica", reported, chunks.size());
      note(fmt::format("left safe mode: {} of {} chunks reported", reported, chunks.size()));
    }
  }
}

void ChunkManager::tick() {
  sweepDeadServers();
  updateSafeMode();
  if (safeMode) return;
  pruneActivity();
  settleOwedCuts();
  surveyServers();
  audit(options.auditPerTick);
  auto offGoal = needingWork();
  scheduleRepairs();
  spreadRacks(offGoal);
  removeSurplus(offGoal);
  balanceStep();
}

bool ChunkManager::replicasAtGoal(Chunk& c) {
  Counts n = counts(c);
  size_t goal = goalOf(c);
  return !c.copying && n.live == goal && n.effective == goal;
}

bool ChunkManager::atGoal(Chunk& c) { return replicasAtGoal(c) && !onOneRack(c); }

void ChunkManager::surveyServers() {
  copyTargets.clear();
  roomByRack.clear();
  roomTotal = 0;
  for (auto& [id, s] : serversById) {
    if (!s.live || s.decommissioning) continue;
    copyTargets.push_back(candidate(s));
    if (!hasRoom(copyTargets.back())) continue;
    roomByRack[s.rack]++;
    roomTotal++;
  }
}

bool ChunkManager::onOneRack(const Chunk& c) {
  if (roomByRack.empty()) return false;
  const std::string* rack = nullptr;
  size_t effectiveCount = 0;
  for (uint64_t id : c.replicas) {
    if (!effective(c, id)) continue;
    const std::string& r = serverOf(id)->rack;
    if (rack && r != *rack) return false;
    rack = &r;
    ++effectiveCount;
  }
  if (effectiveCount < 2) return false;
  // Asked of chunks at their replica goal (replicasAtGoal): none has a replica outside the
  // rack then, so any server of another rack with room could take one.
  auto same = roomByRack.find(*rack);
  return roomTotal > (same == roomByRack.end() ? 0 : same->second);
}

void ChunkManager::spreadRacks(const std::vector<uint64_t>& handles) {
  // Servers with room and a free copy slot, by rack: counted at the first chunk that needs
  // them, then kept as copies take slots, so that a tick with no slot outside a chunk's
  // rack costs no placement pass.
  bool counted = false;
  std::map<std::string, size_t> slotsByRack;
  size_t slotsTotal = 0;
  std::set<uint64_t> withSlot;
  auto takeSlot = [&](uint64_t id) {
    if (canCopy(id) || !withSlot.erase(id)) return;
    slotsByRack[serverOf(id)->rack]--;
    slotsTotal--;
  };
  auto now = timer.now();
  while (!spreadOrder.empty() && now - spreadOrder.front().first >= SPREAD_RETRY) {
    auto old = spreadTried.find(spreadOrder.front().second);
    if (old != spreadTried.end() && old->second == spreadOrder.front().first)
      spreadTried.erase(old);
    spreadOrder.pop_front();
  }
  for (uint64_t h : handles) {
    Chunk* found = chunks.find(h);
    if (!found || found->copying) continue;
    Chunk& c = *found;
    // Short chunks are the repair line's; a surplus goes first (it may be on the rack).
    if (!replicasAtGoal(c) || !onOneRack(c)) continue;
    // A copy that did not leave it on two racks (it failed, or the room was not there) is
    // tried again after a while, not every tick.
    auto tried = spreadTried.find(h);
    if (tried != spreadTried.end() && now - tried->second < SPREAD_RETRY) continue;
    std::optional<uint64_t> source;
    std::vector<std::string> racks;
    for (uint64_t id : c.replicas) {
      racks.push_back(serverOf(id)->rack);
      if (!source && canCopy(id)) source = id;
    }
    if (!source) continue;
    if (!counted) {
      counted = true;
      for (auto& p : copyTargets) {
        if (!canCopy(p.id) || !hasRoom(p)) continue;
        withSlot.insert(p.id);
        slotsByRack[p.rack]++;
        slotsTotal++;
      }
    }
    auto same = slotsByRack.find(racks[0]);
    if (slotsTotal == (same == slotsByRack.end() ? 0 : same->second)) continue;
    auto target =
        choosePlacement(copyTargets, 1, racks, minRoom(), rng, [&](const PlacementCandidate& p) {
          return p.rack != racks[0] && canCopy(p.id) && !c.replicas.count(p.id) &&
                 !deletePending(*serverOf(p.id), h);
        });
    if (target.empty() || !readyForRepair(h, c)) continue;
    logInfo("chunk {:x}: all {} replicas on rack '{}'; copying one to rack '{}'", h, racks.size(),
            racks[0], serverOf(target[0])->rack);
    spreadTried.insert_or_assign(h, now);
    spreadOrder.emplace_back(now, h);
    startCopy(h, *source, target[0], std::nullopt);
    takeSlot(*source);
    takeSlot(target[0]);
  }
}

std::vector<uint64_t> ChunkManager::needingWork() {
  std::vector<uint64_t> out;
  for (auto it = attention.begin(); it != attention.end();) {
    uint64_t h = *it;
    leaveRepairLine(h);  // looked at again: its place in line may have changed
    Chunk* c = chunks.find(h);
    if (!c || atGoal(*c)) {
      it = attention.erase(it);
      continue;
    }
    if (auto key = shortOf(*c)) {
      // Short of copies (nothing to remove then: see removeSurplus): it waits in the repair
      // line until something changes it again.
      repairLine.insert(*key);
      inRepairLine.emplace(h, *key);
      it = attention.erase(it);
      continue;
    }
    out.push_back(h);
    ++it;
  }
  return out;
}

std::optional<ChunkManager::Urgency> ChunkManager::shortOf(Chunk& c) {
  Counts n = counts(c);
  size_t goal = goalOf(c);
  if (n.live == 0 || n.effective >= goal) return std::nullopt;
  return Urgency{static_cast<uint32_t>(n.effective),
                 static_cast<uint32_t>(UINT8_MAX - (goal - n.effective)), c.record.handle};
}

bool ChunkManager::attended(Chunk& c) {
  uint64_t h = c.record.handle;
  if (attention.count(h)) return true;
  auto line = inRepairLine.find(h);
  if (line != inRepairLine.end()) return shortOf(c) == line->second;
  return atGoal(c);
}

void ChunkManager::leaveRepairLine(uint64_t handle) {
  auto found = inRepairLine.find(handle);
  if (found == inRepairLine.end()) return;
  repairLine.erase(found->second);
  inRepairLine.erase(found);
}

size_t ChunkManager::awaitingAttention() const {
  size_t n = attention.size();
  for (auto& [h, key] : inRepairLine) n += !attention.count(h);
  return n;
}

void ChunkManager::audit(size_t n) {
  bool startup = startupLeft > 0;
  if (startup) n = std::max({n, options.startupCheckPerTick, size_t{1}});
  size_t slots = chunks.slots();
  size_t queued = 0;
  for (size_t i = 0; i < n && slots > 0; ++i) {
    if (auditCursor >= slots) auditCursor = 0;
    Chunk* c = chunks.atSlot(auditCursor++);
    if (!c) continue;
    bool first = c->unchecked;
    if (first) {
      c->unchecked = false;
      if (--startupLeft == 0) {
        logInfo("looked at every chunk since the start");
        n = i + 1;  // the usual audit from the next tick
      }
    }
    if (attended(*c)) continue;
    if (replicasAtGoal(*c) && !inRepairLine.count(c->record.handle)) {
      // Only its racks are off (see onOneRack): no change asks for a look at these (a rack
      // gained room, a last copy went to its own rack), the audit finds them, a bounded
      // number waiting at once.
      if (attention.size() < SPREAD_BACKLOG) attention.insert(c->record.handle);
      continue;
    }
    // Every change of a chunk's replicas or goal asks for attention: but for the first look
    // after the start, this is a bug's trace.
    if (!first) {
      logWarn(
          "chunk {:x} is off its goal (or its place in the repair line is) and nothing "
          "asked for a look; looking at it",
          c->record.handle);
    }
    attention.insert(c->record.handle);
    ++queued;
  }
  if (startup && queued > 0) logInfo("{} chunks off their goal since the start", queued);
}

size_t ChunkManager::offGoalUnattended() {
  size_t n = 0;
  for (size_t i = 0; i < chunks.slots(); ++i) {
    // Chunks not yet looked at since the start are not in line yet.
    Chunk* c = chunks.atSlot(i);
    // Chunks only on one rack wait for the audit (nothing asks for a look at them).
    n += c && !c->unchecked && !attended(*c) &&
         !(replicasAtGoal(*c) && !inRepairLine.count(c->record.handle));
  }
  return n;
}

constexpr kj::Duration IDLE_LEASE = 3 * kj::SECONDS;

bool ChunkManager::readyForRepair(uint64_t handle, Chunk& c) {
  if (c.copying) return false;
  // A chunkserver may hold a lease until the last one granted expires, whether or not the
  // master still names it primary: a write under it could slip past a copy.
  Activity* a = activityOf(handle);
  if (!a || timer.now() >= a->leaseExpiry) return true;
  if (timer.now() - a->lastWrite < IDLE_LEASE) return false;
  c.copying = true;  // nothing else touches it until the revocation is done
  attention.insert(handle);
  copies.add(serialize(handle, [this, handle]() -> kj::Promise<void> {
    if (!chunks.contains(handle)) return kj::READY_NOW;
    return bumpVersion(handle).then([this, handle](std::vector<uint64_t>) {
      if (Chunk* c = chunks.find(handle)) c->copying = false;
      attention.insert(handle);
    });
  }));
  return false;
}

void ChunkManager::scheduleRepairs() {
  // Each copy takes a slot on two servers: once fewer than two are free, no more can start.
  size_t slots = 0;
  for (auto& [id, s] : serversById) {
    if (s.live)
      slots += options.copiesPerServer - std::min(s.copiesInFlight, options.copiesPerServer);
  }
  // The line is in order of urgency; a tick goes only as far into it as copies can start.
  // (Starting a copy, or revoking a lease first, puts the chunk in `attention`; the line
  // itself changes only in needingWork.)
  // The racks outside which no slot was free.
  std::set<std::string> slotsFullOutside;
  for (auto it = repairLine.begin(); it != repairLine.end() && slots >= 2;) {
    Urgency key = *it++;
    uint64_t handle = std::get<2>(key);
    Chunk* found = chunks.find(handle);
    if (!found || found->copying) continue;
    if (shortOf(*found) != key) {
      // A change that asked for no look: the chunk is looked at again, not copied blindly.
      attention.insert(handle);
      continue;
    }
    if (!readyForRepair(handle, *found)) continue;
    Chunk& c = *found;
    std::optional<uint64_t> source;
    for (uint64_t id : c.replicas) {
      if (canCopy(id) && !isCorrupt(c, id)) {
        source = id;
        break;
      }
    }
    if (!source) continue;
    // The new copy goes to another rack than the replicas that stay, where one has a free
    // slot. A chunk with two copies or more, all on one rack, waits for a slot on another
    // rack while one has room (HDFS's rule: two racks at least), first in line to get it;
    // one down to a single copy takes the best free slot at once.
    std::vector<std::string> racks;
    for (uint64_t id : c.replicas) {
      if (effective(c, id)) racks.push_back(serverOf(id)->rack);
    }
    bool oneRack = racks.size() >= 2 &&
                   std::all_of(racks.begin(), racks.end(), [&](auto& r) { return r == racks[0]; });
    auto waits = [&]() {
      // Servers of other racks with room (counted at the tick's start), against those of
      // them that hold the chunk (a corrupt or draining replica): room for it elsewhere, in
      // time.
      auto same = roomByRack.find(racks[0]);
      size_t outside = roomTotal - (same == roomByRack.end() ? 0 : same->second);
      size_t held = 0;
      for (uint64_t id : c.replicas) {
        Server* s = serverOf(id);
        held += s->live && !s->decommissioning && s->rack != racks[0];
      }
      return outside > held;
    };
    // Once a tick found no free slot outside a rack, later chunks on it wait without
    // looking again (slots only fill during a tick).
    if (oneRack && slotsFullOutside.count(racks[0]) && waits()) continue;
    auto target =
        choosePlacement(copyTargets, 1, racks, minRoom(), rng, [&](const PlacementCandidate& p) {
          return canCopy(p.id) && !c.replicas.count(p.id) &&
                 !deletePending(*serverOf(p.id), handle);
        });
    if (target.empty()) continue;
    if (oneRack && serverOf(target[0])->rack == racks[0]) {
      slotsFullOutside.insert(racks[0]);
      if (waits()) continue;
    }
    startCopy(handle, *source, target[0], std::nullopt);
    slots -= 2;
  }
}

void ChunkManager::startCopy(uint64_t handle, uint64_t source, uint64_t target,
                             std::optional<uint64_t> moveFrom) {
  Chunk& c = chunks.at(handle);
  c.copying = true;
  attention.insert(handle);
  serverOf(source)->copiesInFlight++;
  serverOf(target)->copiesInFlight++;
  uint64_t version = c.record.version;
  std::string sourceAddress = serverOf(source)->address;
  logInfo("chunk {:x}: copying from {} to {}", handle, sourceAddress, serverOf(target)->address);
  copies.add(
      control.replicate(target, handle, version, sourceAddress)
          .then([this, handle, source, target, version, moveFrom](Status s) {
            for (uint64_t id : {source, target}) {
              Server* server = serverOf(id);
              if (server && server->copiesInFlight > 0) server->copiesInFlight--;
            }
            Chunk* found = chunks.find(handle);
            if (!found) {
              if (s.ok()) queueDelete(target, handle);  // deleted meanwhile
              return;
            }
            Chunk& c = *found;
            c.copying = false;
            attention.insert(handle);
            if (!s.ok()) {
              logWarn("chunk {:x}: copy to server {} failed: {}", handle, target, s.toString());
              repairCounters.copiesFailed++;
              return;
            }
            repairCounters.copiesDone++;
            Server* t = serverOf(target);
            if (c.record.version != version || !t || !t->live) {
              // A new lease moved the chunk on while it was copied: the copy is stale.
              queueDelete(target, handle);
              return;
            }
            addReplica(c, target);
            // A delete queued for an older replica there must not take this one.
            auto& pending = t->pendingDeletes;
            pending.erase(std::remove(pending.begin(), pending.end(), handle), pending.end());
            if (moveFrom && c.replicas.count(*moveFrom)) {
              removeReplica(c, *moveFrom);
              queueDelete(*moveFrom, handle);
            }
          }));
}

void ChunkManager::removeSurplus(const std::vector<uint64_t>& handles) {
  for (uint64_t h : handles) {
    Chunk* found = chunks.find(h);
    if (!found) continue;
    Chunk& c = *found;
    if (c.copying) continue;
    Counts n = counts(c);
    size_t goal = goalOf(c);
    if (n.live <= goal && (n.effective < goal || n.live == n.effective)) continue;
    if (!readyForRepair(h, c)) continue;
    // Remove replicas that are retiring (decommissioning, or found corrupt and kept only as
    // the last copy) once the others meet the goal, then those whose rack keeps another
    // replica (so that the chunk stays on as many racks), then those on the servers holding
    // the most chunks. One at a time: each removal changes which racks are shared.
    auto retiring = [this, &c](uint64_t id) {
      return serverOf(id)->decommissioning || isCorrupt(c, id);
    };
    auto rackShared = [this, &c](uint64_t id) {
      const std::string& rack = serverOf(id)->rack;
      for (uint64_t other : c.replicas) {
        if (other != id && effective(c, other) && serverOf(other)->rack == rack) return true;
      }
      return false;
    };
    auto before = [&](uint64_t a, uint64_t b) {
      if (retiring(a) != retiring(b)) return retiring(a);
      if (rackShared(a) != rackShared(b)) return rackShared(a);
      return serverOf(a)->chunks.size() > serverOf(b)->chunks.size();
    };
    for (;;) {
      Counts now = counts(c);
      std::optional<uint64_t> leaving;
      for (uint64_t id : c.replicas) {
        if (!serverOf(id)->live) continue;
        bool surplus = retiring(id) ? now.effective >= goal : now.effective > goal;
        if (surplus && (!leaving || before(id, *leaving))) leaving = id;
      }
      if (!leaving) break;
      removeReplica(c, *leaving);
      queueDelete(*leaving, h);
    }
  }
}

Status ChunkManager::decommission(const std::string& address, uint64_t& remaining, bool& done) {
  auto it = serverByAddress.find(address);
  if (it == serverByAddress.end()) {
    return Status::notFound(fmt::format("no chunkserver {}", address));
  }
  Server& s = serversById[it->second];
  if (!s.decommissioning) {
    s.decommissioning = true;
    s.chunks.forEach([this](uint64_t h) { attention.insert(h); });
    logInfo("decommissioning chunkserver {}: copying its {} chunks elsewhere", address,
            s.chunks.size());
    note(fmt::format("decommissioning chunkserver {}: {} chunks to copy elsewhere", address,
                     s.chunks.size()));
  }
  remaining = s.chunks.size();
  done = remaining == 0;
  return Status::OK();
}

std::vector<ChunkCheck> ChunkManager::check(uint64_t inode, uint32_t first, uint32_t count) {
  std::vector<ChunkCheck> out;
  for (auto& record : ns.listChunks(inode, first, count)) {
    ChunkCheck check;
    check.index = record.index;
    check.handle = record.handle;
    check.version = record.version;
    check.files = static_cast<uint32_t>(std::max<size_t>(1, ns.ownersOf(record.handle).size()));
    Chunk* found = chunks.find(record.handle);
    if (!found) {
      check.verdict = wire::ChunkVerdict::MISSING;
      out.push_back(std::move(check));
      continue;
    }
    Chunk& c = *found;
    check.goal = static_cast<uint8_t>(goalOf(c));
    size_t live = 0, readable = 0, good = 0;  // readable: good or draining
    for (uint64_t id : c.replicas) {
      Server* s = serverOf(id);
      if (!s) continue;
      auto state = !s->live             ? wire::ReplicaState::DEAD
                   : isCorrupt(c, id)   ? wire::ReplicaState::CORRUPT
                   : s->decommissioning ? wire::ReplicaState::DRAINING
                                        : wire::ReplicaState::GOOD;
      live += s->live;
      readable += state == wire::ReplicaState::GOOD || state == wire::ReplicaState::DRAINING;
      good += state == wire::ReplicaState::GOOD;
      check.replicas.push_back({s->address, state});
    }
    check.verdict = live == 0           ? wire::ChunkVerdict::MISSING
                    : readable == 0     ? wire::ChunkVerdict::CORRUPT
                    : good < check.goal ? wire::ChunkVerdict::UNDER_REPLICATED
                                        : wire::ChunkVerdict::HEALTHY;
    out.push_back(std::move(check));
  }
  return out;
}

ClusterHealth ChunkManager::health() {
  ClusterHealth out;
  out.safeMode = safeMode;
  out.manualSafeMode = manualSafeMode;
  out.chunks = chunks.size();
  out.unchecked = startupLeft;
  // Every chunk off its goal is in `attention` or the repair line: the others add nothing.
  auto count = [&](uint64_t h) {
    Chunk* found = chunks.find(h);
    if (!found) return;
    Chunk& c = *found;
    Counts n = counts(c);
    size_t goal = goalOf(c);
    if (n.live == 0) out.missing++;
    if (n.effective < goal) out.underReplicated++;
    if (n.live > goal) out.overReplicated++;
    out.copiesInFlight += c.copying;
    out.corrupt += corruptCount(c);
    out.onOneRack += replicasAtGoal(c) && onOneRack(c);
  };
  for (uint64_t h : attention) count(h);
  for (auto& [h, key] : inRepairLine) {
    if (!attention.count(h)) count(h);
  }
  return out;
}

}  // namespace cairn
