#pragma once
// The byte formats of the master's metadata records, shared by the files that implement
// Namespace (namespace.cc, namespace_share.cc). Not for use outside the master.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "namespace.h"

namespace cairn::codec {

// Keys: "i"+inode, "d"+parent+name, "c"+inode+index (big-endian, so that a directory's
// entries and a file's chunks are contiguous and ordered), "m"+name for counters,
// "h"+handle for the owners of a chunk that files share (snapshots, copies).
inline void putBe64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline void putBe32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline uint64_t getBe(std::string_view s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}

template <typename T>
inline void putLe(std::string& out, T v) {
  char buf[sizeof(T)];
  memcpy(buf, &v, sizeof(T));  // x86-64 and arm64 are little-endian; the format is LE
  out.append(buf, sizeof(T));
}
template <typename T>
inline bool getLe(std::string_view s, size_t& pos, T& v) {
  if (pos + sizeof(T) > s.size()) return false;
  memcpy(&v, s.data() + pos, sizeof(T));
  pos += sizeof(T);
  return true;
}

inline std::string encodeU64(uint64_t v) {
  std::string s;
  putLe(s, v);
  return s;
}
inline uint64_t decodeU64(const std::string& s) {
  uint64_t v = 0;
  size_t pos = 0;
  getLe(s, pos, v);
  return v;
}

inline std::string encodeChunk(const ChunkRecord& r) {
  std::string s;
  putLe(s, r.handle);
  putLe(s, r.version);
  // Older records end after the version; the fields after it are there when they say
  // something: issued, then flags (1: pending, 2: a cut owed, at the offset that follows).
  if (r.issued > r.version || r.pending || r.cutAt) putLe(s, std::max(r.issued, r.version));
  if (r.pending || r.cutAt) s.push_back(static_cast<char>((r.pending ? 1 : 0) | (r.cutAt ? 2 : 0)));
  if (r.cutAt) putLe(s, r.cutAt);
  return s;
}
inline ChunkRecord decodeChunk(uint32_t index, std::string_view bytes) {
  ChunkRecord r;
  r.index = index;
  size_t pos = 0;
  getLe(bytes, pos, r.handle);
  getLe(bytes, pos, r.version);
  r.issued = r.version;
  if (bytes.size() >= pos + 8) getLe(bytes, pos, r.issued);
  if (bytes.size() > pos) {
    uint8_t flags = static_cast<uint8_t>(bytes[pos++]);
    r.pending = (flags & 1) != 0;
    if (flags & 2) getLe(bytes, pos, r.cutAt);
  }
  return r;
}

}  // namespace cairn::codec
