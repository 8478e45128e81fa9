// libFuzzer target: one connection of RPC messages to the master's service per input.

#include "rpc_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cairn::fuzz::fuzzOneInput(cairn::fuzz::Service::MASTER, data, size);
  return 0;
}
