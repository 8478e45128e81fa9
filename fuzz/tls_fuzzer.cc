// libFuzzer target: a TLS server side fed noise and broken handshakes.

#include "rpc_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn::fuzz;
  static Harness* harness = new Harness();
  Choices choices(data, size);
  harness->handshake(choices);
  return 0;
}
