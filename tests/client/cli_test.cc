#include <gtest/gtest.h>

#include "commands.h"

namespace cairn {
namespace {

TEST(CliTest, SplitParent) {
  EXPECT_EQ(splitParent("/a/b/c"), (std::pair<std::string, std::string>{"/a/b", "c"}));
  EXPECT_EQ(splitParent("/a"), (std::pair<std::string, std::string>{"/", "a"}));
  EXPECT_EQ(splitParent("/a/b/"), (std::pair<std::string, std::string>{"/a", "b"}));
  EXPECT_EQ(splitParent("/"), (std::pair<std::string, std::string>{"/", ""}));
}

}  // namespace
}  // namespace cairn
