#pragma once
// Map output: records go to one of R partitions by a hash of their key, the same on every
// worker and every run.

#include <cstdint>
#include <string_view>

namespace cairn::mapreduce {

// FNV-1a, 64 bits: stable across processes and builds (std::hash is not).
uint64_t keyHash(std::string_view key);

inline uint32_t partitionOf(std::string_view key, uint32_t reducers) {
  return static_cast<uint32_t>(keyHash(key) % reducers);
}

}  // namespace cairn::mapreduce
