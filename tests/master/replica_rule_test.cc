// The replica-set rule (master/replica_rule.h) over every combination of what three
// replicas can answer to a write, with and without room elsewhere.

#include "replica_rule.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace cairn {
namespace {

const ErrorCode OUTCOMES[] = {
    ErrorCode::OK,           ErrorCode::NO_SPACE,        ErrorCode::IO_ERROR,
    ErrorCode::UNAVAILABLE,  ErrorCode::STALE_VERSION,   ErrorCode::REPLICA_CORRUPT,
    ErrorCode::BUSY,         ErrorCode::DATA_NOT_PUSHED, ErrorCode::NOT_PRIMARY,
    ErrorCode::LEASE_EXPIRED};

TEST(ReplicaRuleTest, EveryFailureCombinationOfThreeReplicas) {
  const std::vector<uint64_t> current = {1, 2, 3};
  size_t n = std::size(OUTCOMES);
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b < n; ++b) {
      for (size_t c = 0; c < n; ++c) {
        for (size_t room : {0, 1, 2, 3}) {
          std::vector<ServerFailure> failures;
          ErrorCode codes[3] = {OUTCOMES[a], OUTCOMES[b], OUTCOMES[c]};
          for (uint64_t s = 1; s <= 3; ++s) {
            if (codes[s - 1] != ErrorCode::OK) failures.push_back({s, Status(codes[s - 1], "x")});
          }
          // A failure reported for a server that is not a current replica counts for nothing.
          failures.push_back({9, Status::ioError("not a replica")});
          auto d = afterFailedWrite(current, failures, room);
          std::string what = std::string(errorName(codes[0])) + "," + errorName(codes[1]) + "," +
                             errorName(codes[2]) + " room for " + std::to_string(room);
          size_t atFault = 0, noSpace = 0;
          for (auto code : codes) {
            atFault += replicaAtFault(code);
            noSpace += code == ErrorCode::NO_SPACE;
          }
          // Never every current replica: the acknowledged bytes stay somewhere.
          EXPECT_LT(d.drop.size(), current.size()) << what;
          // Only replicas at fault leave, and never for a failed write.
          for (uint64_t s : d.drop) EXPECT_TRUE(replicaAtFault(codes[s - 1])) << what;
          if (!d.error.ok()) {
            EXPECT_TRUE(d.drop.empty()) << what;
          }
          EXPECT_TRUE(std::find(d.drop.begin(), d.drop.end(), 9) == d.drop.end()) << what;
          if (atFault == 0) {
            EXPECT_TRUE(d.drop.empty() && d.error.ok()) << what;  // retry as it was
          } else if (atFault == 3 || noSpace > room) {
            // Every replica failed, or full disks have nowhere to move to: the write fails,
            // with noSpace when a disk was full.
            EXPECT_FALSE(d.error.ok()) << what;
            if (noSpace > 0) {
              EXPECT_EQ(d.error.code(), ErrorCode::NO_SPACE) << what;
            }
          } else {
            EXPECT_TRUE(d.error.ok()) << what;
            EXPECT_EQ(d.drop.size(), atFault) << what;
            EXPECT_TRUE(d.newLease) << what;
          }
          bool leaseLost = std::count(codes, codes + 3, ErrorCode::NOT_PRIMARY) +
                               std::count(codes, codes + 3, ErrorCode::LEASE_EXPIRED) >
                           0;
          if (d.error.ok() && leaseLost) {
            EXPECT_TRUE(d.newLease) << what;
          }
        }
      }
    }
  }
}

TEST(ReplicaRuleTest, ASingleReplicaIsNeverDropped) {
  for (auto code : OUTCOMES) {
    auto d = afterFailedWrite({7}, {{7, Status(code, "x")}}, 5);
    EXPECT_TRUE(d.drop.empty()) << errorName(code);
  }
}

TEST(ReplicaRuleTest, LeavingAndDeletingNeedAnotherLiveCurrentReplica) {
  EXPECT_TRUE(mayLeave(1, {1, 2}));
  EXPECT_FALSE(mayLeave(1, {1}));
  EXPECT_FALSE(mayLeave(1, {}));
  EXPECT_TRUE(mayLeave(3, {1}));  // not a replica: nothing is lost by it leaving
  // A stale copy goes only while a current one is live elsewhere.
  EXPECT_TRUE(mayDelete(3, true, {1, 2}));
  EXPECT_FALSE(mayDelete(3, true, {}));
  // A current replica is never deleted this way.
  EXPECT_FALSE(mayDelete(1, true, {1, 2}));
  // A chunk whose file is gone: every copy goes.
  EXPECT_TRUE(mayDelete(1, false, {}));
}

}  // namespace
}  // namespace cairn
