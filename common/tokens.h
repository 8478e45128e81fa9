#pragma once
// Chunk tokens (as HDFS's block tokens): the master hands one out with every chunk location,
// an HMAC-SHA256 over the chunk's handle and version, read or write, an expiry and the id
// of the key; a chunkserver serves only holders of a valid token for that chunk and mode.
// The master makes the keys, rotates them, and gives them to chunkservers over their
// authenticated link.

#include <cstdint>
#include <map>
#include <string>

#include "common.capnp.h"
#include "status.h"

namespace cairn {

enum class TokenMode : uint8_t { READ = 1, WRITE = 2 };

struct ChunkToken {
  uint64_t handle = 0;
  uint64_t version = 0;
  TokenMode mode = TokenMode::READ;
  int64_t expiresMs = 0;  // wall clock, milliseconds since the epoch
  uint32_t keyId = 0;
  std::string mac;  // 32 bytes
};

constexpr size_t TOKEN_KEY_BYTES = 32;

// The keys tokens are made with, by id. Not thread-safe: one event loop owns it.
class TokenKeys {
 public:
  // A fresh random key with the next id; it signs from now on.
  uint32_t rotate();
  // Keeps only the newest `n` keys (the older ones' tokens are refused from then on).
  void keepNewest(size_t n);
  void put(uint32_t id, std::string key);
  void clear() { keys.clear(); }
  uint32_t newest() const { return keys.empty() ? 0 : keys.rbegin()->first; }
  const std::map<uint32_t, std::string>& all() const { return keys; }
  bool empty() const { return keys.empty(); }

  // A token for `handle` at `version`, signed with key `keyId` (if not here: the newest).
  // REQUIRES: !empty().
  ChunkToken issue(uint64_t handle, uint64_t version, TokenMode mode, int64_t expiresMs,
                   uint32_t keyId = 0) const;
  // OK if `token` is signed by a key here, not expired at `nowMs`, and for this chunk at
  // this version in this mode (a write token also reads); tokenInvalid otherwise, with
  // the reason.
  Status verify(const ChunkToken& token, uint64_t handle, uint64_t version, TokenMode mode,
                int64_t nowMs) const;

 private:
  std::map<uint32_t, std::string> keys;
};

void toWire(const ChunkToken& token, wire::ChunkToken::Builder out);
ChunkToken fromWire(wire::ChunkToken::Reader in);
void toWire(const TokenKeys& keys, capnp::List<wire::TokenKey>::Builder out);
// Replaces every key of `keys` with those of `in` (malformed ones are skipped).
void fromWire(capnp::List<wire::TokenKey>::Reader in, TokenKeys& keys);

// HMAC-SHA256 of `data` under `key`.
std::string hmacSha256(const std::string& key, const std::string& data);

}  // namespace cairn
