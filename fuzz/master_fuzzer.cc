// libFuzzer target: one connection of RPC messages to the master's service per input. A
// peer without rights must change nothing; the others must not crash it or hang it.

#include <cstdlib>

#include "rpc_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn::fuzz;
  // Peers without rights have services of their own: what a privileged session set going
  // cannot change what they are compared with.
  static Harness* unprivileged = new Harness();
  static Harness* privileged = new Harness();
  static const std::string before = unprivileged->state();
  if (size == 0) return 0;
  Choices choices(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    unprivileged->session(Service::MASTER, unprivilegedUser(), choices);
    if (unprivileged->state() != before) abort();  // a peer without rights changed something
  } else {
    privileged->session(Service::MASTER, peerFor(Service::MASTER, choices), choices);
  }
  return 0;
}
