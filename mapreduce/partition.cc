#include "partition.h"

namespace cairn::mapreduce {

uint64_t keyHash(std::string_view key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace cairn::mapreduce
