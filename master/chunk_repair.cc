// ChunkManager's background work: safe mode, re-replication by urgency, removal of
// surplus replicas, decommissioning and balancing. Everything here runs from tick() on the
// master's loop; copies run as tasks, bounded per chunkserver. A tick looks only at the
// chunks that something moved off their goal (`attention`), never at all of them: its work
// follows what changed, not the size of the namespace.

#include <fmt/format.h>
#include <kj/debug.h>

#include <algorithm>

#include "chunk_manager.h"
#include "log.h"

namespace cairn {

void ChunkManager::taskFailed(kj::Exception&& exception) {
  logError("re-replication task failed: {}", exception.getDescription().cStr());
}

uint8_t ChunkManager::goalOf(Chunk& c) {
  if (c.goal != 0) return c.goal;
  // A shared chunk has the highest goal of its files.
  auto owners = ns.ownersOf(c.record.handle);
  if (owners.empty()) owners.push_back({c.inode, c.record.index});
  for (auto& o : owners) {
    auto n = ns.getattr(o.inode);
    if (n.ok()) c.goal = std::max(c.goal, n.value.replication);
  }
  if (c.goal == 0) c.goal = DEFAULT_REPLICATION;
  return c.goal;
}

ChunkManager::Counts ChunkManager::counts(const Chunk& c) {
  Counts n;
  for (uint64_t id : c.replicas) {
    auto s = serversById.find(id);
    if (s == serversById.end() || !s->second.live) continue;
    ++n.live;
    if (!s->second.decommissioning && !c.corrupt.count(id)) ++n.effective;
  }
  return n;
}

bool ChunkManager::deletePending(const Server& s, uint64_t handle) {
  return std::find(s.pendingDeletes.begin(), s.pendingDeletes.end(), handle) !=
         s.pendingDeletes.end();
}

bool ChunkManager::canCopy(uint64_t server) {
  auto s = serversById.find(server);
  return s != serversById.end() && s->second.live &&
         s->second.copiesInFlight < options.copiesPerServer;
}

void ChunkManager::goalChanged(uint64_t inode, uint8_t goal) {
  for (auto& record : ns.listChunks(inode, 0, UINT32_MAX)) {
    auto it = chunks.find(record.handle);
    // A shared chunk's goal is worked out again from all its files.
    if (it == chunks.end()) continue;
    it->second.goal = ns.isShared(record.handle) ? 0 : goal;
    attention.insert(record.handle);
  }
}

void ChunkManager::reportCorrupt(uint64_t server, uint64_t handle) {
  auto c = chunks.find(handle);
  if (c != chunks.end()) dropCorrupt(c->second, server, "the scrubber");
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
  // Called at every registration: the chunks with a replica are counted as replicas come
  // and go, and the chunks are walked only once that count, with every chunk allocated but
  // never created (nothing to wait for: its master died first), may be enough.
  auto enough = [this](size_t n) {
    return chunks.empty() || static_cast<double>(n) / chunks.size() >= options.safeModeThreshold;
  };
  bool timedOut = timer.now() - startedAt > options.safeModeTimeout;
  if (!enough(covered + neverWrittenAtLoad) && !timedOut) return;
  size_t reported = 0;
  for (auto& [h, c] : chunks) reported += counts(c).live > 0 || neverWritten(c);
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
  settleOwedCuts();
  audit(options.auditPerTick);
  auto offGoal = needingWork();
  scheduleRepairs(offGoal);
  removeSurplus(offGoal);
  balanceStep();
}

bool ChunkManager::atGoal(Chunk& c) {
  Counts n = counts(c);
  size_t goal = goalOf(c);
  return !c.copying && n.live == goal && n.effective == goal;
}

std::vector<uint64_t> ChunkManager::needingWork() {
  std::vector<uint64_t> out;
  for (auto it = attention.begin(); it != attention.end();) {
    auto c = chunks.find(*it);
    if (c == chunks.end() || atGoal(c->second)) {
      it = attention.erase(it);
    } else {
      out.push_back(*it);
      ++it;
    }
  }
  return out;
}

void ChunkManager::audit(size_t n) {
  auto it = chunks.upper_bound(auditedUpTo);
  for (size_t i = 0; i < n; ++i, ++it) {
    if (it == chunks.end()) {
      auditedUpTo = 0;
      return;
    }
    auditedUpTo = it->first;
    if (attention.count(it->first) || atGoal(it->second)) continue;
    // Every change of a chunk's replicas or goal asks for attention: this is a bug's trace.
    logWarn("chunk {:x} is off its goal and nothing asked for its repair; repairing it", it->first);
    attention.insert(it->first);
  }
}

size_t ChunkManager::offGoalUnattended() {
  size_t n = 0;
  for (auto& [h, c] : chunks) n += !attention.count(h) && !atGoal(c);
  return n;
}

constexpr kj::Duration IDLE_LEASE = 3 * kj::SECONDS;

bool ChunkManager::readyForRepair(uint64_t handle, Chunk& c) {
  if (c.copying) return false;
  // A chunkserver may hold a lease until the last one granted expires, whether or not the
  // master still names it primary: a write under it could slip past a copy.
  if (timer.now() >= c.leaseExpiry) return true;
  if (timer.now() - c.lastWrite < IDLE_LEASE) return false;
  c.copying = true;  // nothing else touches it until the revocation is done
  attention.insert(handle);
  copies.add(serialize(handle, [this, handle]() -> kj::Promise<void> {
    if (!chunks.count(handle)) return kj::READY_NOW;
    return bumpVersion(handle).then([this, handle](std::vector<uint64_t>) {
      auto it = chunks.find(handle);
      if (it != chunks.end()) it->second.copying = false;
      attention.insert(handle);
    });
  }));
  return false;
}

void ChunkManager::scheduleRepairs(const std::vector<uint64_t>& handles) {
  struct Need {
    uint64_t handle;
    size_t effective;
    size_t deficit;
  };
  std::vector<Need> needs;
  for (uint64_t h : handles) {
    auto found = chunks.find(h);
    if (found == chunks.end()) continue;
    Chunk& c = found->second;
    if (c.copying) continue;
    Counts n = counts(c);
    size_t goal = goalOf(c);
    if (n.live == 0 || n.effective >= goal) continue;
    if (!readyForRepair(h, c)) continue;
    needs.push_back({h, n.effective, goal - n.effective});
  }
  // Urgency: the fewest copies left first (one live replica before two), then the
  // largest shortfall.
  std::sort(needs.begin(), needs.end(), [](const Need& a, const Need& b) {
    return a.effective != b.effective ? a.effective < b.effective : a.deficit > b.deficit;
  });
  // Each copy takes a slot on two servers: once fewer than two are free, no more can start.
  size_t slots = 0;
  for (auto& [id, s] : serversById) {
    if (s.live)
      slots += options.copiesPerServer - std::min(s.copiesInFlight, options.copiesPerServer);
  }
  for (auto& need : needs) {
    if (slots < 2) break;
    Chunk& c = chunks.at(need.handle);
    std::optional<uint64_t> source;
    for (uint64_t id : c.replicas) {
      if (canCopy(id) && !c.corrupt.count(id)) {
        source = id;
        break;
      }
    }
    if (!source) continue;
    std::vector<PlacementCandidate> candidates;
    for (auto& [id, s] : serversById) {
      if (s.live && !s.decommissioning && canCopy(id) && !c.replicas.count(id) &&
          !deletePending(s, need.handle)) {
        candidates.push_back(candidate(s));
      }
    }
    std::vector<uint64_t> exclude(c.replicas.begin(), c.replicas.end());
    auto target = choosePlacement(candidates, 1, exclude, options.minFreeBytes, rng);
    if (target.empty()) continue;
    startCopy(need.handle, *source, target[0], std::nullopt);
    slots -= 2;
  }
}

void ChunkManager::startCopy(uint64_t handle, uint64_t source, uint64_t target,
                             std::optional<uint64_t> moveFrom) {
  Chunk& c = chunks.at(handle);
  c.copying = true;
  attention.insert(handle);
  serversById[source].copiesInFlight++;
  serversById[target].copiesInFlight++;
  uint64_t version = c.record.version;
  std::string sourceAddress = serversById[source].address;
  logInfo("chunk {:x}: copying from {} to {}", handle, sourceAddress, serversById[target].address);
  copies.add(
      control.replicate(target, handle, version, sourceAddress)
          .then([this, handle, source, target, version, moveFrom](Status s) {
            for (uint64_t id : {source, target}) {
              auto it = serversById.find(id);
              if (it != serversById.end() && it->second.copiesInFlight > 0) {
                it->second.copiesInFlight--;
              }
            }
            auto it = chunks.find(handle);
            if (it == chunks.end()) {
              if (s.ok()) queueDelete(target, handle);  // deleted meanwhile
              return;
            }
            Chunk& c = it->second;
            c.copying = false;
            attention.insert(handle);
            if (!s.ok()) {
              logWarn("chunk {:x}: copy to server {} failed: {}", handle, target, s.toString());
              repairCounters.copiesFailed++;
              return;
            }
            repairCounters.copiesDone++;
            auto t = serversById.find(target);
            if (c.record.version != version || t == serversById.end() || !t->second.live) {
              // A new lease moved the chunk on while it was copied: the copy is stale.
              queueDelete(target, handle);
              return;
            }
            addReplica(c, target);
            // A delete queued for an older replica there must not take this one.
            auto& pending = t->second.pendingDeletes;
            pending.erase(std::remove(pending.begin(), pending.end(), handle), pending.end());
            if (moveFrom && c.replicas.count(*moveFrom)) {
              removeReplica(c, *moveFrom);
              queueDelete(*moveFrom, handle);
            }
          }));
}

void ChunkManager::removeSurplus(const std::vector<uint64_t>& handles) {
  for (uint64_t h : handles) {
    auto found = chunks.find(h);
    if (found == chunks.end()) continue;
    Chunk& c = found->second;
    if (c.copying) continue;
    Counts n = counts(c);
    size_t goal = goalOf(c);
    if (n.live <= goal && (n.effective < goal || n.live == n.effective)) continue;
    if (!readyForRepair(h, c)) continue;
    // Remove replicas that are retiring (decommissioning, or found corrupt and kept only as
    // the last copy) once the others meet the goal, then those on the servers holding the
    // most chunks.
    const auto& corrupt = c.corrupt;
    auto retiring = [this, &corrupt](uint64_t id) {
      return serversById[id].decommissioning || corrupt.count(id) != 0;
    };
    std::vector<uint64_t> order(c.replicas.begin(), c.replicas.end());
    std::sort(order.begin(), order.end(), [this, &retiring](uint64_t a, uint64_t b) {
      if (retiring(a) != retiring(b)) return retiring(a);
      return serversById[a].chunks.size() > serversById[b].chunks.size();
    });
    for (uint64_t id : order) {
      Counts now = counts(c);
      if (!serversById[id].live) continue;
      bool surplus = retiring(id) ? now.effective >= goal : now.effective > goal;
      if (!surplus) continue;
      removeReplica(c, id);
      queueDelete(id, h);
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
    for (uint64_t h : s.chunks) attention.insert(h);
    logInfo("decommissioning chunkserver {}: copying its {} chunks elsewhere", address,
            s.chunks.size());
    note(fmt::format("decommissioning chunkserver {}: {} chunks to copy elsewhere", address,
                     s.chunks.size()));
  }
  remaining = s.chunks.size();
  done = remaining == 0;
  return Status::OK();
}

double ChunkManager::balance(double threshold) {
  balanceThreshold = threshold;
  size_t minCount = SIZE_MAX, maxCount = 0, total = 0, n = 0;
  for (auto& [id, s] : serversById) {
    if (!s.live || s.decommissioning) continue;
    minCount = std::min(minCount, s.chunks.size());
    maxCount = std::max(maxCount, s.chunks.size());
    total += s.chunks.size();
    ++n;
  }
  if (n < 2 || total == 0) return 0;
  double avg = static_cast<double>(total) / n;
  return (maxCount - minCount) / avg;
}

void ChunkManager::balanceStep() {
  if (balanceThreshold < 0) return;
  if (balance(balanceThreshold) <= balanceThreshold) {
    logInfo("balanced: chunk counts within {:.0f}% of the average", balanceThreshold * 100);
    balanceThreshold = -1;
    return;
  }
  // Move from the fullest live server to the emptiest, a few chunks per tick.
  uint64_t fullest = 0, emptiest = 0;
  size_t most = 0, least = SIZE_MAX;
  for (auto& [id, s] : serversById) {
    if (!s.live || s.decommissioning) continue;
    if (s.chunks.size() >= most) most = s.chunks.size(), fullest = id;
    if (s.chunks.size() < least) least = s.chunks.size(), emptiest = id;
  }
  if (fullest == emptiest) return;
  for (uint64_t h : std::set<uint64_t>(serversById[fullest].chunks)) {
    if (!canCopy(fullest) || !canCopy(emptiest)) break;
    auto it = chunks.find(h);
    if (it == chunks.end() || it->second.copying || it->second.replicas.count(emptiest) ||
        deletePending(serversById[emptiest], h) || !readyForRepair(h, it->second)) {
      continue;
    }
    startCopy(h, fullest, emptiest, fullest);
  }
}

std::vector<ChunkCheck> ChunkManager::check(uint64_t inode, uint32_t first, uint32_t count) {
  std::vector<ChunkCheck> out;
  for (auto& record : ns.listChunks(inode, first, count)) {
    ChunkCheck check;
    check.index = record.index;
    check.handle = record.handle;
    check.version = record.version;
    check.files = static_cast<uint32_t>(std::max<size_t>(1, ns.ownersOf(record.handle).size()));
    auto it = chunks.find(record.handle);
    if (it == chunks.end()) {
      check.verdict = wire::ChunkVerdict::MISSING;
      out.push_back(std::move(check));
      continue;
    }
    Chunk& c = it->second;
    check.goal = static_cast<uint8_t>(goalOf(c));
    size_t live = 0, readable = 0, good = 0;  // readable: good or draining
    for (uint64_t id : c.replicas) {
      auto s = serversById.find(id);
      if (s == serversById.end()) continue;
      auto state = !s->second.live             ? wire::ReplicaState::DEAD
                   : c.corrupt.count(id)       ? wire::ReplicaState::CORRUPT
                   : s->second.decommissioning ? wire::ReplicaState::DRAINING
                                               : wire::ReplicaState::GOOD;
      live += s->second.live;
      readable += state == wire::ReplicaState::GOOD || state == wire::ReplicaState::DRAINING;
      good += state == wire::ReplicaState::GOOD;
      check.replicas.push_back({s->second.address, state});
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
  // Every chunk off its goal is in `attention`: the others add nothing.
  for (uint64_t h : attention) {
    auto found = chunks.find(h);
    if (found == chunks.end()) continue;
    Chunk& c = found->second;
    Counts n = counts(c);
    size_t goal = goalOf(c);
    if (n.live == 0) out.missing++;
    if (n.effective < goal) out.underReplicated++;
    if (n.live > goal) out.overReplicated++;
    out.copiesInFlight += c.copying;
    out.corrupt += c.corrupt.size();
  }
  return out;
}

}  // namespace cairn
