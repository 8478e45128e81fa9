// The fuzz harness (fuzz/rpc_fuzz.h) with a fixed seed for a bounded time: every RPC
// interface fed calls with hostile arguments, spoiled messages and noise, before and after
// the handshake. No crash, no hang; a peer without rights changes nothing.
// CAIRN_FUZZ_SECONDS sets the time (default 20), CAIRN_FUZZ_SEED the seed.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include "rpc_fuzz.h"

namespace cairn {
namespace {

using namespace cairn::fuzz;

double budgetSeconds() {
  const char* s = getenv("CAIRN_FUZZ_SECONDS");
  return s != nullptr ? atof(s) : 20;
}

uint64_t seed() {
  const char* s = getenv("CAIRN_FUZZ_SEED");
  return s != nullptr ? strtoull(s, nullptr, 10) : 20261125;
}

TEST(FuzzTest, HostileInputChangesNothingAndBreaksNothing) {
  // Peers without rights get their own services, so that nothing a privileged session
  // set going (a copy, a commit) can change what they are compared with.
  Harness unprivileged, privileged;
  const std::string before = unprivileged.state();
  Choices choices(seed());
  auto start = std::chrono::steady_clock::now();
  auto budget = std::chrono::duration<double>(budgetSeconds());
  int sessions = 0, withRights = 0;
  while (std::chrono::steady_clock::now() - start < budget) {
    Service service = sessions % 2 == 0 ? Service::MASTER : Service::CHUNKSERVER;
    if (sessions % 4 < 2) {
      unprivileged.session(service, unprivilegedUser(), choices);
      ASSERT_EQ(unprivileged.state(), before) << "after session " << sessions;
    } else {
      privileged.session(service, peerFor(service, choices), choices);
      ++withRights;
    }
    unprivileged.handshake(choices);
    ++sessions;
  }
  EXPECT_GT(sessions, 20);
  printf("%d sessions (%d with rights), %d handshakes\n", sessions, withRights, sessions);
}

}  // namespace
}  // namespace cairn
