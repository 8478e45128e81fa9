#pragma once
// Records as applications of record append write and read them (GFS section 3.3): each
// record carries its length, a checksum and an id (writer, sequence), so that a reader
// skips what failed attempts left behind (padding, a torn copy on one replica) and drops
// the duplicates that retries made. A record is framed as a 32-byte header and its
// payload, little-endian:
//
//   0  magic "CRec"      4  payload length    8  writer id    16  sequence
//   24 payload CRC32C    28 CRC32C of bytes 0..27
//
// Records need no alignment: a reader that meets bytes that are not a record looks for
// the next magic whose header and payload check out.

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace cairn {

constexpr size_t RECORD_HEADER = 32;
constexpr uint32_t MAX_RECORD_PAYLOAD = 512u << 20;

// Frames payloads as records of one writer: a random writer id, sequences from 1.
class RecordWriter {
 public:
  explicit RecordWriter(uint64_t writerId = 0);  // 0: a random id
  uint64_t writerId() const { return writer; }
  // Appends the framed record of `payload` to `out` (payloads of at most
  // MAX_RECORD_PAYLOAD bytes); returns its sequence number.
  uint64_t frame(std::string_view payload, std::string& out);

 private:
  uint64_t writer;
  uint64_t next = 1;
};

struct Record {
  uint64_t writer = 0;
  uint64_t sequence = 0;
  uint64_t offset = 0;  // of its header, in the stream fed
  std::string_view payload;
};

// Reads records out of a stream of bytes fed in order (a file read front to back, in
// pieces of any size). Bytes that are not a valid record are skipped; with `dropDuplicates`
// a record whose id was seen before is skipped too. A record cut by the end of the stream
// (end()) is not a record.
class RecordReader {
 public:
  explicit RecordReader(bool dropDuplicates = true) : dedup(dropDuplicates) {}
  // Feeds the next bytes; calls `emit` for each record completed by them.
  void feed(std::string_view bytes, const std::function<void(const Record&)>& emit);
  // Skipped bytes (padding, torn or foreign data) and duplicates dropped so far.
  uint64_t skippedBytes() const { return skipped; }
  uint64_t duplicates() const { return dups; }

 private:
  // Whether a whole valid record starts at `pos` of `buf`: 1 yes (its size in `size`), 0 no,
  // -1 not known until more bytes come.
  static int recordAt(std::string_view buf, size_t pos, size_t& size);

  bool dedup;
  std::string carry;     // bytes not yet parsed (a record that may go on)
  uint64_t carryAt = 0;  // stream offset of carry[0]
  std::set<std::pair<uint64_t, uint64_t>> seen;
  uint64_t skipped = 0, dups = 0;
};

}  // namespace cairn
