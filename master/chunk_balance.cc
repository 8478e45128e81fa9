// ChunkManager's balancer: after `cairn admin balance`, each tick copies a few chunks from
// the fullest servers to the emptiest one (removeSurplus then drops the source's copy),
// never leaving a chunk on fewer racks, and looking at a bounded number of chunks a tick
// from a cursor per (target, source) pair. It stops when the spread of chunk counts is
// within the threshold, or when a whole round finds nothing that may move.

#include <algorithm>
#include <tuple>
#include <vector>

#include "chunk_manager.h"
#include "log.h"

namespace cairn {

double ChunkManager::balance(double threshold) {
  stopBalancing();  // a new request looks at every chunk again
  balanceThreshold = threshold;
  return spread();
}

double ChunkManager::spread() const {
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

bool ChunkManager::losesARack(const Chunk& c, uint64_t from, uint64_t to) {
  const std::string& fromRack = serverOf(from)->rack;
  const std::string& toRack = serverOf(to)->rack;
  if (fromRack == toRack || !effective(c, from)) return false;
  // Fewer racks exactly when no other replica stays on `from`'s rack and `to`'s rack has
  // one already.
  bool fromRackStays = false, toRackHeld = false;
  for (uint64_t id : c.replicas) {
    if (id == from || !effective(c, id)) continue;
    const std::string& rack = serverOf(id)->rack;
    fromRackStays |= rack == fromRack;
    toRackHeld |= rack == toRack;
  }
  return !fromRackStays && toRackHeld;
}

void ChunkManager::balanceStep() {
  if (balanceThreshold < 0) return;
  if (spread() <= balanceThreshold) {
    logInfo("balanced: chunk counts within {:.0f}% of the average", balanceThreshold * 100);
    stopBalancing();
    return;
  }
  // Moves go to the emptiest live server, a few chunks per tick, from the fullest server
  // that has a chunk to give: those of its rack first (a move within a rack keeps every
  // chunk's racks, as HDFS's balancer pairs servers within a rack first), then the others.
  uint64_t emptiest = 0;
  size_t least = SIZE_MAX;
  for (auto& [id, s] : serversById) {
    if (s.live && !s.decommissioning && s.chunks.size() < least) {
      least = s.chunks.size();
      emptiest = id;
    }
  }
  if (least == SIZE_MAX || !canCopy(emptiest)) return;  // no slot: nothing to look at
  const std::string& rack = serverOf(emptiest)->rack;
  std::vector<std::tuple<bool, size_t, uint64_t>> sources;  // (other rack, -count, id)
  for (auto& [id, s] : serversById) {
    if (s.live && !s.decommissioning && s.chunks.size() > least + 1) {
      sources.emplace_back(s.rack != rack, SIZE_MAX - s.chunks.size(), id);
    }
  }
  std::sort(sources.begin(), sources.end());
  // Each source looks at its share of balanceLooksPerTick chunks a tick, from where it
  // stopped. Whether some chunk may move later (busy now, a round not finished) rather
  // than never (it would leave a rack, or the emptiest holds it).
  size_t share =
      std::max<size_t>(1, options.balanceLooksPerTick / std::max<size_t>(1, sources.size()));
  bool later = false;
  for (auto& [otherRack, rank, fullest] : sources) {
    const HandleSet& held = serverOf(fullest)->chunks;
    BalanceCursor& cursor = balanceCursors[{emptiest, fullest}];
    if (cursor.done) {
      if (cursor.doneAt == held.size()) continue;
      cursor = BalanceCursor{cursor.next, cursor.next};  // its chunks changed: look again
    }
    // Half the difference at most, counting the moves under way, so that the two do not
    // trade places.
    size_t room = (held.size() - least) / 2;
    room -= std::min<size_t>(room, serverOf(emptiest)->copiesInFlight);
    if (room == 0 || !canCopy(fullest)) {
      later = true;
      continue;
    }
    bool moved = false, roundOver = false;
    for (uint64_t h : held.takeFrom(cursor.next, share)) {
      if (h < cursor.next) {  // went round past the largest handle
        if (cursor.wrapped) roundOver = true;
        cursor.wrapped = true;
      }
      if (roundOver || (cursor.wrapped && h >= cursor.start)) {
        roundOver = true;
        break;
      }
      ++repairCounters.balancerLooks;
      cursor.next = h + 1;
      Chunk* c = chunks.find(h);
      // A corrupt replica is not one to move (its copy would fail every time).
      if (!c || c->replicas.count(emptiest) || !effective(*c, fullest) ||
          losesARack(*c, fullest, emptiest)) {
        continue;
      }
      if (c->copying || deletePending(*serverOf(emptiest), h) || !readyForRepair(h, *c)) {
        cursor.waited = true;
        continue;
      }
      startCopy(h, fullest, emptiest, fullest);
      moved = true;
      if (--room == 0 || !canCopy(fullest) || !canCopy(emptiest)) break;
    }
    if (moved) cursor.waited = true;  // the round goes on; it ends only with nothing moved
    if (roundOver || held.empty()) {
      if (cursor.waited) {
        cursor = BalanceCursor{cursor.next, cursor.next};
      } else {
        cursor.done = true;
        cursor.doneAt = held.size();
      }
    }
    later |= !cursor.done;
    if (moved) return;
  }
  if (later) return;
  // Every source went a whole round with nothing to give this target.
  logInfo(
      "balanced as far as the racks allow: no move to {} keeps every chunk's racks and narrows "
      "the spread",
      serverOf(emptiest)->address);
  stopBalancing();
}

void ChunkManager::stopBalancing() {
  balanceThreshold = -1;
  balanceCursors.clear();
}

}  // namespace cairn
