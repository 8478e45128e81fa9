#include "address.h"

#include <gtest/gtest.h>

namespace cairn {
namespace {

TEST(AddressTest, Parses) {
  auto a = parseHostPort("127.0.0.2:7710");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value.host, "127.0.0.2");
  EXPECT_EQ(a.value.port, 7710);
  auto v6 = parseHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6.value.host, "::1");
  EXPECT_EQ(v6.value.toString(), "[::1]:80");
  EXPECT_EQ(hostOf("10.0.0.1:5"), "10.0.0.1");
}

TEST(AddressTest, RejectsBadInput) {
  for (auto bad : {"", "host", ":80", "h:", "h:65536", "h:-1", "h:8x"}) {
    EXPECT_EQ(parseHostPort(bad).status.code(), ErrorCode::INVALID_ARGUMENT) << bad;
  }
}

}  // namespace
}  // namespace cairn
