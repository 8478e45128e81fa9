#pragma once
// Where new replicas go: a pure function over a view of the chunkservers, so that it can
// be tested against an emulated cluster.

#include <climits>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace cairn {

struct PlacementCandidate {
  uint64_t id = 0;
  std::string rack;
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;
  uint32_t recentCreations = 0;
  uint64_t availableBytes = UINT64_MAX;  // free space above the reserve, as reported
};

// Free space for new chunks: below the capacity and above the server's reserve.
inline uint64_t freeBytes(const PlacementCandidate& c) {
  uint64_t free = c.capacityBytes > c.usedBytes ? c.capacityBytes - c.usedBytes : 0;
  return free < c.availableBytes ? free : c.availableBytes;
}

// Chooses up to `count` distinct candidates for new replicas of one chunk: first spread
// over racks (a rack in neither `usedRacks`, the racks of the chunk's other replicas, nor
// already chosen wins), then lower disk use and fewer recent creations, with `rng`
// breaking ties. Candidates with less than `minFreeBytes` free (and available above their
// reserve), and those `eligible` (if given) refuses, are never chosen. Returns fewer when
// there are not enough.
std::vector<uint64_t> choosePlacement(
    const std::vector<PlacementCandidate>& candidates, size_t count,
    std::vector<std::string> usedRacks, uint64_t minFreeBytes, std::mt19937_64& rng,
    const std::function<bool(const PlacementCandidate&)>& eligible = nullptr);

}  // namespace cairn
