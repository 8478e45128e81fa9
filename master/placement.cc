#include "placement.h"

#include <algorithm>
#include <set>

namespace cairn {

std::vector<uint64_t> choosePlacement(const std::vector<PlacementCandidate>& candidates,
                                      size_t count, const std::vector<uint64_t>& exclude,
                                      uint64_t minFreeBytes, std::mt19937_64& rng) {
  std::set<uint64_t> taken(exclude.begin(), exclude.end());
  std::set<std::string> racksUsed;
  for (auto& c : candidates) {
    if (taken.count(c.id)) racksUsed.insert(c.rack);
  }
  struct Scored {
    const PlacementCandidate* c;
    double use;
    uint64_t tie;
  };
  std::vector<Scored> pool;
  for (auto& c : candidates) {
    if (taken.count(c.id)) continue;
    uint64_t free = c.capacityBytes > c.usedBytes ? c.capacityBytes - c.usedBytes : 0;
    free = std::min(free, c.availableBytes);
    if (free < minFreeBytes) continue;
    double use = c.capacityBytes == 0 ? 1.0 : static_cast<double>(c.usedBytes) / c.capacityBytes;
    // Recent creations count as a little use, so that a burst spreads out.
    use += 0.01 * c.recentCreations;
    pool.push_back({&c, use, rng()});
  }
  std::vector<uint64_t> chosen;
  while (chosen.size() < count && !pool.empty()) {
    auto better = [&](const Scored& a, const Scored& b) {
      bool aNew = !racksUsed.count(a.c->rack), bNew = !racksUsed.count(b.c->rack);
      if (aNew != bNew) return aNew;
      // Use within 5% counts as equal; then chance decides, so equal servers share load.
      if (std::abs(a.use - b.use) > 0.05) return a.use < b.use;
      return a.tie < b.tie;
    };
    auto best = std::min_element(pool.begin(), pool.end(), better);
    chosen.push_back(best->c->id);
    racksUsed.insert(best->c->rack);
    pool.erase(best);
  }
  return chosen;
}

}  // namespace cairn
