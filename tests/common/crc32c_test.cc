#include "crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace cairn {
namespace {

TEST(Crc32cTest, KnownVectors) {
  // RFC 3720 appendix B.4 and the usual check value.
  EXPECT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(0, zeros.data(), zeros.size()), 0x8A9136AAu);
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c(0, ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32cTest, ExtendsAcrossCalls) {
  std::string data = "The quick brown fox jumps over the lazy dog, twice over.";
  uint32_t whole = crc32c(0, data.data(), data.size());
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t part = crc32c(0, data.data(), split);
    EXPECT_EQ(crc32c(part, data.data() + split, data.size() - split), whole) << split;
  }
}

}  // namespace
}  // namespace cairn
