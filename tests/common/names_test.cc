#include "names.h"

#include <gtest/gtest.h>

namespace cairn {
namespace {

TEST(NamesTest, RejectsBadNames) {
  EXPECT_EQ(validateName("").code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(validateName(".").code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(validateName("..").code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(validateName("a/b").code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(validateName(std::string("a\0b", 3)).code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(validateName(std::string(256, 'x')).code(), ErrorCode::NAME_TOO_LONG);
}

TEST(NamesTest, AcceptsOrdinaryNames) {
  EXPECT_TRUE(validateName("a").ok());
  EXPECT_TRUE(validateName("...").ok());
  EXPECT_TRUE(validateName(".hidden").ok());
  EXPECT_TRUE(validateName(std::string(255, 'x')).ok());
  EXPECT_TRUE(validateName("ünïcode ☃").ok());
}

TEST(NamesTest, SplitsPaths) {
  auto r = splitPath("//a///b/c/");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(splitPath("/").value.empty());
  EXPECT_EQ(splitPath("a/b").status.code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(splitPath("/a/../b").status.code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(splitPath("/" + std::string(300, 'y')).status.code(), ErrorCode::NAME_TOO_LONG);
}

}  // namespace
}  // namespace cairn
