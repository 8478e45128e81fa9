#include "tokens.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

namespace cairn {
namespace {

// What the MAC covers, in a fixed layout.
std::string signedPart(uint64_t handle, uint64_t version, TokenMode mode, int64_t expiresMs,
                       uint32_t keyId) {
  std::string s = "cairn-token-1";
  auto put = [&s](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
  uint8_t m = static_cast<uint8_t>(mode);
  put(&handle, 8);
  put(&version, 8);
  put(&m, 1);
  put(&expiresMs, 8);
  put(&keyId, 4);
  return s;
}

}  // namespace

std::string hmacSha256(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

uint32_t TokenKeys::rotate() {
  uint32_t id = keys.empty() ? 1 : keys.rbegin()->first + 1;
  std::string key(TOKEN_KEY_BYTES, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size()));
  keys[id] = std::move(key);
  return id;
}

void TokenKeys::keepNewest(size_t n) {
  while (keys.size() > n) keys.erase(keys.begin());
}

void TokenKeys::put(uint32_t id, std::string key) { keys[id] = std::move(key); }

ChunkToken TokenKeys::issue(uint64_t handle, uint64_t version, TokenMode mode, int64_t expiresMs,
                            uint32_t keyId) const {
  auto it = keys.find(keyId);
  if (it == keys.end()) it = std::prev(keys.end());
  auto& [id, key] = *it;
  ChunkToken t{handle, version, mode, expiresMs, id, ""};
  t.mac = hmacSha256(key, signedPart(handle, version, mode, expiresMs, id));
  return t;
}

Status TokenKeys::verify(const ChunkToken& t, uint64_t handle, uint64_t version, TokenMode mode,
                         int64_t nowMs) const {
  auto key = keys.find(t.keyId);
  if (key == keys.end()) {
    return Status::tokenInvalid(fmt::format("chunk token key {} is unknown or retired", t.keyId));
  }
  std::string mac =
      hmacSha256(key->second, signedPart(t.handle, t.version, t.mode, t.expiresMs, t.keyId));
  if (t.mac.size() != mac.size() || CRYPTO_memcmp(t.mac.data(), mac.data(), mac.size()) != 0) {
    return Status::tokenInvalid("chunk token forged");
  }
  if (t.expiresMs <= nowMs) return Status::tokenInvalid("chunk token expired");
  if (t.handle != handle || t.version != version) {
    return Status::tokenInvalid(
        fmt::format("chunk token is for chunk {:x} at version {}, not "
                    "{:x} at {}",
                    t.handle, t.version, handle, version));
  }
  if (mode == TokenMode::WRITE && t.mode != TokenMode::WRITE) {
    return Status::tokenInvalid("chunk token does not allow writing");
  }
  return Status::OK();
}

void toWire(const ChunkToken& t, wire::ChunkToken::Builder out) {
  out.setHandle(t.handle);
  out.setVersion(t.version);
  out.setWrite(t.mode == TokenMode::WRITE);
  out.setExpiresMs(t.expiresMs);
  out.setKeyId(t.keyId);
  out.setMac(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(t.mac.data()), t.mac.size()));
}

ChunkToken fromWire(wire::ChunkToken::Reader in) {
  ChunkToken t;
  t.handle = in.getHandle();
  t.version = in.getVersion();
  t.mode = in.getWrite() ? TokenMode::WRITE : TokenMode::READ;
  t.expiresMs = in.getExpiresMs();
  t.keyId = in.getKeyId();
  auto mac = in.getMac();
  t.mac.assign(reinterpret_cast<const char*>(mac.begin()), std::min<size_t>(mac.size(), 64));
  return t;
}

void toWire(const TokenKeys& keys, capnp::List<wire::TokenKey>::Builder out) {
  uint i = 0;
  for (auto& [id, key] : keys.all()) {
    out[i].setId(id);
    out[i].setKey(
        capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(key.data()), key.size()));
    ++i;
  }
}

void fromWire(capnp::List<wire::TokenKey>::Reader in, TokenKeys& keys) {
  keys.clear();
  for (auto k : in) {
    auto key = k.getKey();
    if (key.size() != TOKEN_KEY_BYTES || k.getId() == 0) continue;
    keys.put(k.getId(), std::string(reinterpret_cast<const char*>(key.begin()), key.size()));
  }
}

}  // namespace cairn
