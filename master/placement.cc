#include "placement.h"

#include <algorithm>
#include <cmath>

namespace cairn {

std::vector<uint64_t> choosePlacement(
    const std::vector<PlacementCandidate>& candidates, size_t count,
    std::vector<std::string> usedRacks, uint64_t minFreeBytes, std::mt19937_64& rng,
    const std::function<bool(const PlacementCandidate&)>& eligible) {
  struct Scored {
    const PlacementCandidate* c;
    double use;
    uint64_t tie;
  };
  std::vector<Scored> pool;
  pool.reserve(candidates.size());
  for (auto& c : candidates) {
    if (eligible && !eligible(c)) continue;
    if (freeBytes(c) < minFreeBytes) continue;
    double use = c.capacityBytes == 0 ? 1.0 : static_cast<double>(c.usedBytes) / c.capacityBytes;
    // Recent creations count as a little use, so that a burst spreads out.
    use += 0.01 * c.recentCreations;
    pool.push_back({&c, use, rng()});
  }
  // Called for every candidate of every copy a repair tick starts (a thousand servers, a
  // thousand copies): one pass per choice, each rack looked up once.
  auto isUsed = [&usedRacks](const std::string& rack) {
    return std::find(usedRacks.begin(), usedRacks.end(), rack) != usedRacks.end();
  };
  std::vector<uint64_t> chosen;
  while (chosen.size() < count && !pool.empty()) {
    size_t best = 0;
    bool bestNew = !isUsed(pool[0].c->rack);
    for (size_t i = 1; i < pool.size(); ++i) {
      const Scored& a = pool[i];
      const Scored& b = pool[best];
      bool aNew = !isUsed(a.c->rack);
      bool better;
      if (aNew != bestNew) {
        better = aNew;
      } else if (std::abs(a.use - b.use) > 0.05) {
        // Use within 5% counts as equal; then chance decides, so equal servers share load.
        better = a.use < b.use;
      } else {
        better = a.tie < b.tie;
      }
      if (better) {
        best = i;
        bestNew = aNew;
      }
    }
    chosen.push_back(pool[best].c->id);
    usedRacks.push_back(pool[best].c->rack);
    pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(best));
  }
  return chosen;
}

}  // namespace cairn
