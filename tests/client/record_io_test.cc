// The record format of record append: framing, and a reader that skips padding, torn
// copies and foreign bytes and drops duplicates, over any split of the stream.

#include "record_io.h"

#include <gtest/gtest.h>

#include <random>

namespace cairn {
namespace {

struct Seen {
  uint64_t writer, sequence, offset;
  std::string payload;
};

std::vector<Seen> readAll(const std::string& stream, size_t piece, bool dedup = true,
                          RecordReader* out = nullptr) {
  RecordReader own(dedup);
  RecordReader& reader = out ? *out : own;
  std::vector<Seen> seen;
  for (size_t at = 0; at < stream.size(); at += piece) {
    reader.feed(std::string_view(stream).substr(at, piece), [&](const Record& r) {
      seen.push_back({r.writer, r.sequence, r.offset, std::string(r.payload)});
    });
  }
  return seen;
}

TEST(RecordsTest, FramedRecordsReadBackOverAnySplit) {
  RecordWriter w(7);
  std::string stream;
  std::vector<std::string> payloads = {"a", "", "hello\n", std::string(70000, 'x'), "CRec"};
  std::vector<uint64_t> offsets;
  for (auto& p : payloads) {
    offsets.push_back(stream.size());
    w.frame(p, stream);
  }
  for (size_t piece : {size_t{1}, size_t{3}, size_t{31}, size_t{4096}, stream.size()}) {
    auto seen = readAll(stream, piece);
    ASSERT_EQ(seen.size(), payloads.size()) << "piece " << piece;
    for (size_t i = 0; i < seen.size(); ++i) {
      EXPECT_EQ(seen[i].payload, payloads[i]);
      EXPECT_EQ(seen[i].writer, 7u);
      EXPECT_EQ(seen[i].sequence, i + 1);
      EXPECT_EQ(seen[i].offset, offsets[i]);
    }
  }
}

TEST(RecordsTest, PaddingTornCopiesAndForeignBytesAreSkipped) {
  RecordWriter w(1);
  std::string first, torn, last;
  w.frame("first", first);
  w.frame(std::string(1000, 't'), torn);
  w.frame("last", last);
  std::string cut = torn.substr(0, 500);  // a copy that stopped half way, then zeros
  std::string flipped = torn;
  flipped[600] ^= 1;  // a payload that does not match its checksum
  std::string stream = first + std::string(3000, '\0') + cut + std::string(700, '\0') + flipped +
                       "CCCRe garbage C" + last;
  for (size_t piece : {size_t{1}, size_t{17}, stream.size()}) {
    RecordReader reader;
    auto seen = readAll(stream, piece, true, &reader);
    ASSERT_EQ(seen.size(), 2u) << "piece " << piece;
    EXPECT_EQ(seen[0].payload, "first");
    EXPECT_EQ(seen[1].payload, "last");
    EXPECT_EQ(seen[1].offset, stream.size() - last.size());
    EXPECT_EQ(reader.skippedBytes(), stream.size() - first.size() - last.size());
  }
}

TEST(RecordsTest, DuplicatesAreDroppedUnlessAsked) {
  RecordWriter a(1), b(2);
  std::string ra, rb, stream;
  a.frame("from a", ra);
  b.frame("from b", rb);
  stream = ra + rb + ra + std::string(10, '\0') + rb;  // retries landed twice
  RecordReader reader;
  auto seen = readAll(stream, 5, true, &reader);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(reader.duplicates(), 2u);
  EXPECT_EQ(readAll(stream, 5, false).size(), 4u);
}

TEST(RecordsTest, RandomBytesNeverReadAsRecords) {
  std::mt19937_64 rng(42);
  std::string noise(1 << 20, '\0');
  for (auto& c : noise) c = static_cast<char>(rng() % 4 == 0 ? 'C' : rng());
  RecordReader reader;
  EXPECT_TRUE(readAll(noise, 65536, true, &reader).empty());
  EXPECT_EQ(reader.skippedBytes() + 31 >= noise.size(), true);
}

}  // namespace
}  // namespace cairn
