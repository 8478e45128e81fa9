#include "placement.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace cairn {
namespace {

std::vector<PlacementCandidate> cluster(size_t n, size_t racks) {
  std::vector<PlacementCandidate> out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back({i + 1, "rack" + std::to_string(i % racks), 1000, 100, 0});
  }
  return out;
}

TEST(PlacementTest, NeverTwoReplicasOnOneChunkserver) {
  std::mt19937_64 rng(42);
  for (size_t n = 1; n <= 8; ++n) {
    auto candidates = cluster(n, 2);
    for (int trial = 0; trial < 200; ++trial) {
      auto chosen = choosePlacement(candidates, 3, {}, 0, rng);
      EXPECT_EQ(chosen.size(), std::min<size_t>(3, n));
      EXPECT_EQ(std::set<uint64_t>(chosen.begin(), chosen.end()).size(), chosen.size());
    }
  }
}

TEST(PlacementTest, RefusedServersAreNeverChosen) {
  std::mt19937_64 rng(7);
  auto candidates = cluster(5, 1);
  for (int trial = 0; trial < 100; ++trial) {
    auto chosen = choosePlacement(candidates, 3, {}, 0, rng,
                                  [](const PlacementCandidate& c) { return c.id > 2; });
    EXPECT_EQ(chosen.size(), 3u);
    for (auto id : chosen) EXPECT_GT(id, 2u);
  }
}

TEST(PlacementTest, TheRacksOfTheOtherReplicasAreAvoided) {
  std::mt19937_64 rng(11);
  auto candidates = cluster(9, 3);
  for (auto& c : candidates) {
    if (c.rack == "rack2") c.usedBytes = 900;  // fuller than the others
  }
  for (int trial = 0; trial < 100; ++trial) {
    // A rack without a replica wins over disk use...
    auto one = choosePlacement(candidates, 1, {"rack0", "rack1"}, 0, rng);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(candidates[one[0] - 1].rack, "rack2");
    // ...and with every rack used, disk use decides.
    auto two = choosePlacement(candidates, 2, {"rack0", "rack1", "rack2"}, 0, rng);
    ASSERT_EQ(two.size(), 2u);
    for (auto id : two) EXPECT_NE(candidates[id - 1].rack, "rack2");
  }
}

TEST(PlacementTest, SpreadsOverRacks) {
  std::mt19937_64 rng(1);
  auto candidates = cluster(9, 3);
  for (int trial = 0; trial < 100; ++trial) {
    std::set<std::string> racks;
    for (auto id : choosePlacement(candidates, 3, {}, 0, rng))
      racks.insert(candidates[id - 1].rack);
    EXPECT_EQ(racks.size(), 3u);
  }
}

TEST(PlacementTest, PrefersEmptierServersAndSkipsFullOnes) {
  std::mt19937_64 rng(3);
  auto candidates = cluster(4, 1);
  candidates[0].usedBytes = 900;  // 90% used
  candidates[1].usedBytes = 999;  // 1 byte free
  auto chosen = choosePlacement(candidates, 2, {}, 10, rng);
  ASSERT_EQ(chosen.size(), 2u);
  EXPECT_EQ(std::set<uint64_t>(chosen.begin(), chosen.end()), (std::set<uint64_t>{3, 4}));
  auto three = choosePlacement(candidates, 3, {}, 10, rng);
  EXPECT_EQ(three.size(), 3u);
  EXPECT_EQ(three.back(), 1u);  // the fuller one only when needed; the full one never
}

TEST(PlacementTest, EqualServersShareTheLoad) {
  std::mt19937_64 rng(5);
  auto candidates = cluster(6, 1);
  std::map<uint64_t, int> count;
  for (int trial = 0; trial < 600; ++trial) {
    for (auto id : choosePlacement(candidates, 1, {}, 0, rng)) count[id]++;
  }
  for (auto& [id, n] : count) EXPECT_GT(n, 50) << id;
}

}  // namespace
}  // namespace cairn
