#pragma once
// Hostile input for every RPC interface, in one process: a master on an in-memory store and
// a chunkserver on an in-memory disk, fed connections of Cap'n Proto RPC messages. Calls
// are made to every method with arguments drawn from the schema (interesting numbers,
// names with '/', '..' and NUL, huge lists and data), and some messages are then flipped,
// truncated, padded or replaced by noise; other connections send random bytes or a broken
// TLS handshake. Choices come from a seeded generator (the fuzz test in CI) or from a
// fuzzer's input bytes (the libFuzzer targets in fuzz/, for longer runs).
//
// What must hold: no crash, no hang (every connection ends within a bound once its peer
// stops), and a peer without rights changes nothing (Harness::state() is the same before
// and after).

#include <kj/async-io.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "tls.h"

namespace cairn::fuzz {

// Where the fuzzer's choices come from.
class Choices {
 public:
  explicit Choices(uint64_t seed) : rng(seed), fromBytes(false) {}
  Choices(const uint8_t* data, size_t size) : data(data), size(size), fromBytes(true) {}

  uint64_t below(uint64_t n);  // in [0, n); 0 when n is 0
  uint64_t number();           // often an interesting value (0, 1, limits, powers of two)
  std::string text(size_t max);
  bool exhausted() const { return fromBytes && at >= size; }

 private:
  uint64_t raw();
  std::mt19937_64 rng;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t at = 0;
  bool fromBytes;
};

enum class Service : uint8_t { MASTER, CHUNKSERVER };

class Harness {
 public:
  Harness();
  ~Harness();

  // One connection's worth of messages to `service`, as `peer` (its certificate's identity:
  // what the service is served for). Throws if the connection does not end in time.
  void session(Service service, const Identity& peer, Choices& choices);
  // Random bytes, or a handshake made and then broken, to a TLS server side.
  void handshake(Choices& choices);
  // The namespace (names and attributes), the trash, and the chunk store, as text.
  std::string state();

 private:
  struct Parts;
  std::unique_ptr<Parts> parts;
};

// One libFuzzer input for `service`: its first byte picks a peer without rights (whose
// session must change nothing; aborts otherwise) or a privileged one; the rest are choices.
// Each kind of peer has a harness of its own, so that what a privileged session set going
// cannot change what the other is compared with.
void fuzzOneInput(Service service, const uint8_t* data, size_t size);

// The peers a fuzzer plays: without rights, a user with no files; and the privileged
// ones, which reach deeper code.
Identity unprivilegedUser();
Identity peerFor(Service service, Choices& choices);

}  // namespace cairn::fuzz
