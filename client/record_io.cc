#include "record_io.h"

#include <cstring>
#include <random>

#include "crc32c.h"

namespace cairn {
namespace {

constexpr char MAGIC[4] = {'C', 'R', 'e', 'c'};

template <typename T>
T load(const char* p) {
  T v;
  memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

RecordWriter::RecordWriter(uint64_t writerId) : writer(writerId) {
  while (writer == 0)
    writer = std::random_device()() * (uint64_t{1} << 32) ^ std::random_device()();
}

uint64_t RecordWriter::frame(std::string_view payload, std::string& out) {
  char h[RECORD_HEADER];
  uint32_t length = static_cast<uint32_t>(payload.size());
  uint64_t sequence = next++;
  uint32_t payloadCrc = crc32c(0, payload.data(), payload.size());
  memcpy(h, MAGIC, 4);
  memcpy(h + 4, &length, 4);
  memcpy(h + 8, &writer, 8);
  memcpy(h + 16, &sequence, 8);
  memcpy(h + 24, &payloadCrc, 4);
  uint32_t headerCrc = crc32c(0, h, 28);
  memcpy(h + 28, &headerCrc, 4);
  out.append(h, RECORD_HEADER);
  out.append(payload);
  return sequence;
}

int RecordReader::recordAt(std::string_view buf, size_t pos, size_t& size) {
  if (buf.size() - pos < RECORD_HEADER)
    return memcmp(buf.data() + pos, MAGIC, std::min<size_t>(4, buf.size() - pos)) == 0 ? -1 : 0;
  const char* h = buf.data() + pos;
  if (memcmp(h, MAGIC, 4) != 0 || crc32c(0, h, 28) != load<uint32_t>(h + 28)) return 0;
  uint32_t length = load<uint32_t>(h + 4);
  if (length > MAX_RECORD_PAYLOAD) return 0;
  if (buf.size() - pos - RECORD_HEADER < length) return -1;
  if (crc32c(0, h + RECORD_HEADER, length) != load<uint32_t>(h + 24)) return 0;
  size = RECORD_HEADER + length;
  return 1;
}

void RecordReader::feed(std::string_view bytes, const std::function<void(const Record&)>& emit) {
  carry.append(bytes);
  std::string_view buf(carry);
  size_t pos = 0;
  while (pos < buf.size()) {
    size_t size = 0;
    int at = recordAt(buf, pos, size);
    if (at < 0) break;  // may be a record: wait for more bytes
    if (at > 0) {
      const char* h = buf.data() + pos;
      Record r{load<uint64_t>(h + 8), load<uint64_t>(h + 16), carryAt + pos,
               buf.substr(pos + RECORD_HEADER, size - RECORD_HEADER)};
      if (!dedup || seen.insert({r.writer, r.sequence}).second) {
        emit(r);
      } else {
        dups++;
      }
      pos += size;
      continue;
    }
    // Not a record here: on to the next place the magic's first byte appears.
    const void* next = memchr(buf.data() + pos + 1, MAGIC[0], buf.size() - pos - 1);
    size_t to =
        next ? static_cast<size_t>(static_cast<const char*>(next) - buf.data()) : buf.size();
    skipped += to - pos;
    pos = to;
  }
  carry.erase(0, pos);
  carryAt += pos;
}

}  // namespace cairn
