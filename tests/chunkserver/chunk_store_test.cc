#include "chunk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <kj/common.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "cluster.h"
#include "crc32c.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 4 << 20;

// What readNow answered, where it answered at all.
Status answered(std::optional<Status> s) {
  EXPECT_TRUE(s.has_value()) << "readNow would have waited";
  return s.value_or(Status(ErrorCode::UNAVAILABLE, "readNow would have waited"));
}

class ChunkStoreTest : public ::testing::Test {
 protected:
  ChunkStoreTest() : store(disk, {"/d0", "/d1"}, CHUNK) { EXPECT_TRUE(store.open().ok()); }
  std::string read(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length) {
    std::string out;
    Status s = store.read(handle, version, offset, length, out);
    EXPECT_TRUE(s.ok()) << s.toString();
    return out;
  }

  MemDisk disk;
  ChunkStore store;
};

TEST_F(ChunkStoreTest, RoundTripAtAnyOffset) {
  ASSERT_TRUE(store.create(1, 7).ok());
  std::string model;
  auto apply = [&](uint64_t off, const std::string& data) {
    ASSERT_TRUE(store.write(1, 7, off, data).ok());
    if (model.size() < off + data.size()) model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
  };
  apply(0, testing::randomBytes(100000, 1));
  apply(65530, testing::randomBytes(20, 2));     // across a block boundary
  apply(300000, testing::randomBytes(1000, 3));  // leaves a gap of zeros
  apply(10, "x");                                // a single byte inside a block
  apply(CHUNK - 5, "tail!");                     // the very end of the chunk
  EXPECT_EQ(read(1, 7, 0, CHUNK), model);
  EXPECT_EQ(read(1, 7, 65000, 2000), model.substr(65000, 2000));
  EXPECT_EQ(read(1, 7, 150000, 10), std::string(10, '\0'));
  EXPECT_EQ(store.list()[0].length, CHUNK);
}

TEST_F(ChunkStoreTest, ChangesAreNumberedInOrderUntilTrimmed) {
  uint64_t start = store.lastChange();
  ASSERT_TRUE(store.create(7, 1).ok());
  ASSERT_TRUE(store.setVersion(7, 3).ok());
  ASSERT_TRUE(store.setVersion(7, 3).ok());       // no change, not noted
  ASSERT_TRUE(store.write(7, 3, 0, "abc").ok());  // data is not a replica change
  ASSERT_TRUE(store.truncate(7, 4, 1).ok());
  ASSERT_TRUE(store.create(8, 2).ok());
  ASSERT_TRUE(store.remove(7).ok());
  EXPECT_FALSE(store.setVersion(8, 1).ok());  // refused, not noted
  std::vector<ChunkStore::Change> out;
  ASSERT_TRUE(store.changesSince(start, 100, out));
  std::vector<std::pair<uint64_t, uint64_t>> seen;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].seq, start + i + 1);
    seen.push_back({out[i].handle, out[i].version});
  }
  EXPECT_EQ(seen,
            (std::vector<std::pair<uint64_t, uint64_t>>{{7, 1}, {7, 3}, {7, 4}, {8, 2}, {7, 0}}));
  out.clear();
  ASSERT_TRUE(store.changesSince(start + 3, 1, out));  // from the middle, bounded
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].handle, 8u);
  store.trimChanges(start + 2);
  out.clear();
  EXPECT_FALSE(store.changesSince(start + 1, 100, out));  // forgotten: a full report is needed
  EXPECT_TRUE(store.changesSince(start + 2, 100, out));
  EXPECT_EQ(out.size(), 3u);
  out.clear();
  EXPECT_TRUE(store.changesSince(store.lastChange(), 100, out));
  EXPECT_TRUE(out.empty());
}

TEST_F(ChunkStoreTest, TheScrubbersNextIsTheNextHandleHeld) {
  EXPECT_EQ(store.nextAfter(0), 0u);
  for (uint64_t h : {30, 10, 20}) ASSERT_TRUE(store.create(h, 1).ok());
  EXPECT_EQ(store.nextAfter(0), 10u);
  EXPECT_EQ(store.nextAfter(10), 20u);
  EXPECT_EQ(store.nextAfter(25), 30u);
  EXPECT_EQ(store.nextAfter(30), 0u);  // round again from the start
  ASSERT_TRUE(store.remove(20).ok());
  EXPECT_EQ(store.nextAfter(10), 30u);
}

TEST_F(ChunkStoreTest, ReadsPastTheEndAreShort) {
  ASSERT_TRUE(store.create(2, 1).ok());
  ASSERT_TRUE(store.write(2, 1, 0, "hello").ok());
  EXPECT_EQ(read(2, 1, 3, 100), "lo");
  EXPECT_EQ(read(2, 1, 10, 100), "");
}

TEST_F(ChunkStoreTest, DetectsAFlippedByte) {
  ASSERT_TRUE(store.create(3, 1).ok());
  std::string data = testing::randomBytes(200000, 9);
  ASSERT_TRUE(store.write(3, 1, 0, data).ok());
  // Flip one byte in the second block on "disk".
  std::string byte;
  ASSERT_TRUE(disk.read(store.dataPath(3), CHUNK_DATA_OFFSET + 70000, 1, byte).ok());
  byte[0] ^= 0x40;
  ASSERT_TRUE(disk.write(store.dataPath(3), CHUNK_DATA_OFFSET + 70000, byte.data(), 1, false).ok());
  std::string out;
  EXPECT_EQ(store.read(3, 1, 69000, 2000, out).code(), ErrorCode::REPLICA_CORRUPT);
  EXPECT_TRUE(out.empty());
  // Blocks that were not touched still read.
  EXPECT_EQ(read(3, 1, 0, 1000), data.substr(0, 1000));
  EXPECT_EQ(store.verify(3).code(), ErrorCode::REPLICA_CORRUPT);
}

TEST_F(ChunkStoreTest, VersionsGuardReadsAndWrites) {
  ASSERT_TRUE(store.create(4, 5).ok());
  std::string out;
  EXPECT_EQ(store.read(4, 4, 0, 1, out).code(), ErrorCode::STALE_VERSION);
  EXPECT_EQ(store.write(4, 6, 0, "x").code(), ErrorCode::STALE_VERSION);
  EXPECT_TRUE(store.setVersion(4, 6).ok());
  EXPECT_EQ(store.setVersion(4, 5).code(), ErrorCode::STALE_VERSION);
  EXPECT_TRUE(store.write(4, 6, 0, "x").ok());
}

TEST_F(ChunkStoreTest, TruncateCutsAndExtendsWithZeros) {
  ASSERT_TRUE(store.create(5, 1).ok());
  std::string data = testing::randomBytes(150000, 4);
  ASSERT_TRUE(store.write(5, 1, 0, data).ok());
  ASSERT_TRUE(store.truncate(5, 2, 70000).ok());
  EXPECT_EQ(read(5, 2, 0, CHUNK), data.substr(0, 70000));
  ASSERT_TRUE(store.truncate(5, 3, 140000).ok());
  EXPECT_EQ(read(5, 3, 0, CHUNK), data.substr(0, 70000) + std::string(70000, '\0'));
  EXPECT_TRUE(store.verify(5).ok());
}

TEST_F(ChunkStoreTest, ChunksSurviveReopenWithTheirVersions) {
  ASSERT_TRUE(store.create(0xabcdef, 9).ok());
  ASSERT_TRUE(store.write(0xabcdef, 9, 0, "persist").ok());
  EXPECT_NE(store.dataPath(0xabcdef).find("/chunks/ab/abcdef"), std::string::npos);
  ChunkStore again(disk, {"/d0", "/d1"}, CHUNK);
  ASSERT_TRUE(again.open().ok());
  auto list = again.list();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].handle, 0xabcdefu);
  EXPECT_EQ(list[0].version, 9u);
  EXPECT_EQ(list[0].length, 7u);
  std::string out;
  EXPECT_TRUE(again.read(0xabcdef, 9, 0, 7, out).ok());
  EXPECT_EQ(out, "persist");
}

TEST_F(ChunkStoreTest, RemoveDeletesTheFile) {
  ASSERT_TRUE(store.create(6, 1).ok());
  std::string data = store.dataPath(6);
  ASSERT_TRUE(store.remove(6).ok());
  EXPECT_EQ(disk.size(data).status.code(), ErrorCode::NOT_FOUND);
  EXPECT_FALSE(store.has(6));
}

TEST_F(ChunkStoreTest, AFullDiskRefusesNewChunksAndKeepsOldOnes) {
  MemDisk small(3 << 20);
  ChunkStore tiny(small, {"/d"}, 1 << 20, /*reserveBytes=*/1 << 20);
  ASSERT_TRUE(tiny.open().ok());
  ASSERT_TRUE(tiny.create(1, 1).ok());
  std::string full = testing::randomBytes(1 << 20, 12);
  ASSERT_TRUE(tiny.write(1, 1, 0, full).ok());
  ASSERT_TRUE(tiny.create(2, 1).ok());
  ASSERT_TRUE(tiny.write(2, 1, 0, full).ok());
  // Less than the reserve is left: a new chunk is refused, not started.
  EXPECT_EQ(tiny.create(3, 1).code(), ErrorCode::NO_SPACE);
  EXPECT_FALSE(tiny.has(3));
  EXPECT_LT(tiny.available(), 1u << 20);
  std::string out;
  ASSERT_TRUE(tiny.read(1, 1, 0, 1 << 20, out).ok());
  EXPECT_TRUE(out == full);
}

TEST_F(ChunkStoreTest, AWriteThatFindsNoRoomChangesNothing) {
  MemDisk tight(1 << 20);
  ChunkStore store2(tight, {"/d"}, 1 << 20, /*reserveBytes=*/0);
  ASSERT_TRUE(store2.open().ok());
  ASSERT_TRUE(store2.create(1, 1).ok());
  std::string first = testing::randomBytes(100000, 3);
  ASSERT_TRUE(store2.write(1, 1, 0, first).ok());
  auto used = tight.space("/d").value;
  tight.setCapacity(tight.space("/d").value.capacityBytes - used.freeBytes + 8192);
  // Overwrites part of the old bytes and runs past them: no room for the new blocks.
  std::string second = testing::randomBytes(300000, 4);
  EXPECT_EQ(store2.write(1, 1, 50000, second).code(), ErrorCode::NO_SPACE);
  std::string out;
  ASSERT_TRUE(store2.read(1, 1, 0, 1 << 20, out).ok());
  EXPECT_TRUE(out == first) << "a failed write changed the replica";
  EXPECT_TRUE(store2.verify(1).ok());
  // Once there is room again, the same write works.
  tight.setCapacity(8 << 20);
  ASSERT_TRUE(store2.write(1, 1, 50000, second).ok());
  ASSERT_TRUE(store2.read(1, 1, 0, 1 << 20, out).ok());
  EXPECT_TRUE(out == first.substr(0, 50000) + second);
}

TEST_F(ChunkStoreTest, HolesTakeNoDiskAndReadAsZeros) {
  ASSERT_TRUE(store.create(7, 1).ok());
  ASSERT_TRUE(store.write(7, 1, CHUNK - 100, "x").ok());
  EXPECT_EQ(store.list()[0].length, CHUNK - 99);
  // One byte near the end of the chunk: one page of data, the header and records.
  EXPECT_LE(disk.allocated(store.dataPath(7)).value, 3 * MemDisk::PAGE);
  std::string out = read(7, 1, 0, CHUNK);
  std::string expected(CHUNK - 99, '\0');
  expected[CHUNK - 100] = 'x';
  EXPECT_TRUE(out == expected);
  // Blocks of zeros written over data become holes again.
  ASSERT_TRUE(store.write(7, 1, 0, testing::randomBytes(3 * CHECKSUM_BLOCK, 5)).ok());
  uint64_t before = disk.allocated(store.dataPath(7)).value;
  ASSERT_TRUE(store.write(7, 1, CHECKSUM_BLOCK, std::string(CHECKSUM_BLOCK, '\0')).ok());
  EXPECT_EQ(disk.allocated(store.dataPath(7)).value, before - CHECKSUM_BLOCK);
  std::string map;
  uint64_t length = 0;
  ASSERT_TRUE(store.blockMap(7, 1, map, length).ok());
  EXPECT_EQ(map[0] & 7, 5);  // blocks 0 and 2 hold data, block 1 is a hole
  EXPECT_TRUE(store.verify(7).ok());
}

TEST_F(ChunkStoreTest, PunchFreesWholeBlocksAndZerosTheEdges) {
  ASSERT_TRUE(store.create(8, 1).ok());
  std::string data = testing::randomBytes(6 * CHECKSUM_BLOCK, 6);
  ASSERT_TRUE(store.write(8, 1, 0, data).ok());
  uint64_t before = disk.allocated(store.dataPath(8)).value;
  // From the middle of block 1 to the middle of block 4: blocks 2 and 3 are freed.
  uint64_t from = CHECKSUM_BLOCK + 1000, to = 4 * CHECKSUM_BLOCK + 500;
  ASSERT_TRUE(store.punch(8, 1, from, to - from).ok());
  EXPECT_EQ(disk.allocated(store.dataPath(8)).value, before - 2 * CHECKSUM_BLOCK);
  std::string expected = data;
  std::fill(expected.begin() + static_cast<long>(from), expected.begin() + static_cast<long>(to),
            '\0');
  EXPECT_TRUE(read(8, 1, 0, CHUNK) == expected);
  EXPECT_EQ(store.list()[0].length, data.size());  // the length stays
  EXPECT_TRUE(store.verify(8).ok());
  // A punch past the length changes nothing.
  ASSERT_TRUE(store.punch(8, 1, 7 * CHECKSUM_BLOCK, 100).ok());
  EXPECT_EQ(store.list()[0].length, data.size());
}

TEST_F(ChunkStoreTest, ExtentsLeaveHolesOut) {
  ASSERT_TRUE(store.create(9, 1).ok());
  ASSERT_TRUE(store.write(9, 1, 10, "head").ok());
  ASSERT_TRUE(store.write(9, 1, 3 * CHECKSUM_BLOCK + 7, "tail").ok());
  std::vector<Extent> extents;
  uint64_t length = 0;
  ASSERT_TRUE(store.readExtents(9, 1, 0, CHUNK, extents, length).ok());
  EXPECT_EQ(length, 3 * CHECKSUM_BLOCK + 11);
  ASSERT_EQ(extents.size(), 2u);
  EXPECT_EQ(extents[0].offset, 0u);
  EXPECT_EQ(extents[0].bytes.size(), CHECKSUM_BLOCK);
  EXPECT_EQ(extents[0].bytes.substr(10, 4), "head");
  EXPECT_EQ(extents[1].offset, 3 * CHECKSUM_BLOCK);
  EXPECT_EQ(extents[1].bytes.size(), 11u);  // clipped to the length
  // A copy made from the extents is the same chunk, and as sparse.
  ASSERT_TRUE(store.create(10, 1).ok());
  for (auto& x : extents) ASSERT_TRUE(store.write(10, 1, x.offset, x.bytes).ok());
  ASSERT_TRUE(store.truncate(10, 1, length).ok());
  EXPECT_EQ(read(10, 1, 0, CHUNK), read(9, 1, 0, CHUNK));
  EXPECT_EQ(disk.allocated(store.dataPath(10)).value, disk.allocated(store.dataPath(9)).value);
}

TEST_F(ChunkStoreTest, ATornWriteLeavesOtherBytesReadable) {
  FaultyDisk faulty(disk);
  ChunkStore s2(faulty, {"/t"}, CHUNK, 0);
  ASSERT_TRUE(s2.open().ok());
  ASSERT_TRUE(s2.create(11, 1).ok());
  std::string data = testing::randomBytes(4 * CHECKSUM_BLOCK, 7);
  ASSERT_TRUE(s2.write(11, 1, 0, data).ok());
  // An I/O error after half of a write that starts and ends inside blocks.
  std::string update = testing::randomBytes(2 * CHECKSUM_BLOCK, 8);
  uint64_t at = CHECKSUM_BLOCK / 2;
  faulty.failNext(FaultyDisk::Op::WRITE, 1, ErrorCode::IO_ERROR, "/t/chunks/0b/0b", CHECKSUM_BLOCK);
  EXPECT_EQ(s2.write(11, 1, at, update).code(), ErrorCode::IO_ERROR);
  std::string out;
  ASSERT_TRUE(s2.read(11, 1, 0, CHUNK, out).ok()) << "the replica must stay readable";
  // Bytes outside the failed write are what they were.
  EXPECT_TRUE(out.substr(0, at) == data.substr(0, at));
  EXPECT_TRUE(out.substr(at + update.size()) == data.substr(at + update.size()));
  EXPECT_TRUE(s2.verify(11).ok());
}

// A chunkserver killed in the middle of a write: the disk keeps what reached it and
// nothing after. Bytes outside the write read back after a restart, whatever step it
// stopped at; bytes inside are the old or the new ones, each whole block one or the other.
TEST_F(ChunkStoreTest, AKillAtAnyStepOfAWriteLosesNoOtherByte) {
  std::string data = testing::randomBytes(4 * CHECKSUM_BLOCK, 21);
  std::string update = testing::randomBytes(CHECKSUM_BLOCK + 5000, 22);
  uint64_t at = CHECKSUM_BLOCK / 2;
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE("killed before write number " + std::to_string(step + 1));
    MemDisk mem;
    FaultyDisk faulty(mem);
    {
      ChunkStore live(faulty, {"/k"}, CHUNK, 0);
      ASSERT_TRUE(live.open().ok());
      ASSERT_TRUE(live.create(1, 1).ok());
      ASSERT_TRUE(live.write(1, 1, 0, data).ok());
      // From this write on, nothing more reaches the disk (the process is gone).
      faulty.failNext(FaultyDisk::Op::WRITE, 1000, ErrorCode::IO_ERROR, "", 0, step);
      faulty.failNext(FaultyDisk::Op::PUNCH, 1000, ErrorCode::IO_ERROR);
      faulty.failNext(FaultyDisk::Op::TRUNCATE, 1000, ErrorCode::IO_ERROR);
      live.write(1, 1, at, update);
    }
    faulty.clear();
    ChunkStore restarted(mem, {"/k"}, CHUNK, 0);
    ASSERT_TRUE(restarted.open().ok());
    std::string out;
    ASSERT_TRUE(restarted.read(1, 1, 0, CHUNK, out).ok());
    EXPECT_TRUE(out.substr(0, at) == data.substr(0, at));
    EXPECT_TRUE(out.substr(at + update.size()) == data.substr(at + update.size()));
    for (uint64_t b = at / CHECKSUM_BLOCK; b * CHECKSUM_BLOCK < at + update.size(); ++b) {
      uint64_t from = std::max<uint64_t>(at, b * CHECKSUM_BLOCK);
      uint64_t to = std::min<uint64_t>(at + update.size(), (b + 1) * CHECKSUM_BLOCK);
      std::string got = out.substr(from, to - from);
      EXPECT_TRUE(got == data.substr(from, to - from) || got == update.substr(from - at, to - from))
          << "block " << b << " is neither the old nor the new";
    }
    EXPECT_TRUE(restarted.verify(1).ok());
  }
}

TEST_F(ChunkStoreTest, AWriteIntoACorruptBlockIsRefused) {
  ASSERT_TRUE(store.create(12, 1).ok());
  std::string data = testing::randomBytes(CHECKSUM_BLOCK, 9);
  ASSERT_TRUE(store.write(12, 1, 0, data).ok());
  std::string byte = "\x55";
  ASSERT_TRUE(
      disk.write(store.dataPath(12), CHUNK_DATA_OFFSET + 60000, byte.data(), 1, false).ok());
  // Merging the block's other bytes would give the flipped byte a good checksum.
  EXPECT_EQ(store.write(12, 1, 10, "abc").code(), ErrorCode::REPLICA_CORRUPT);
  EXPECT_EQ(store.truncate(12, 1, 30000 + 70000).code(), ErrorCode::OK);  // extends: no merge
  EXPECT_EQ(store.truncate(12, 1, 1000).code(), ErrorCode::REPLICA_CORRUPT);
}

TEST_F(ChunkStoreTest, FirstFormatSidecarsAreConverted) {
  // A chunk as format 1 wrote it: gaps written as zeros, 4-byte CRCs of partial blocks.
  std::string data = testing::randomBytes(1000, 10) + std::string(2 * CHECKSUM_BLOCK, '\0') + "end";
  std::string path = "/d0/chunks/2a/2a";
  ASSERT_TRUE(disk.write(path, 0, data.data(), data.size(), true).ok());
  std::string meta(32, '\0');
  memcpy(meta.data(), "CAIRNCHK", 8);
  uint32_t format = 1;
  uint64_t version = 4;
  memcpy(meta.data() + 8, &format, 4);
  memcpy(meta.data() + 16, &version, 8);
  for (size_t off = 0; off < data.size(); off += CHECKSUM_BLOCK) {
    size_t n = std::min<size_t>(CHECKSUM_BLOCK, data.size() - off);
    uint32_t crc = crc32c(0, data.data() + off, n);
    meta.append(reinterpret_cast<const char*>(&crc), 4);
  }
  ASSERT_TRUE(disk.write(path + ".meta", 0, meta.data(), meta.size(), true).ok());
  ChunkStore again(disk, {"/d0"}, CHUNK);
  ASSERT_TRUE(again.open().ok());
  EXPECT_EQ(again.versionOf(0x2a), 4u);
  std::string out;
  ASSERT_TRUE(again.read(0x2a, 4, 0, CHUNK, out).ok());
  EXPECT_TRUE(out == data);
  EXPECT_TRUE(again.verify(0x2a).ok());
  // One file now, and the zero blocks in the middle are holes in it.
  EXPECT_EQ(disk.size(path + ".meta").status.code(), ErrorCode::NOT_FOUND);
  EXPECT_LE(disk.allocated(path).value, data.size() - CHECKSUM_BLOCK + 3 * MemDisk::PAGE);
}

// readNow answers exactly as read() does, or not at all.
TEST_F(ChunkStoreTest, ReadNowAnswersAsReadDoesOrNotAtAll) {
  ASSERT_TRUE(store.create(9, 2).ok());
  ASSERT_TRUE(store.write(9, 2, 0, testing::randomBytes(150000, 4)).ok());
  ASSERT_TRUE(store.write(9, 2, 400000, testing::randomBytes(70000, 5)).ok());  // after a hole
  std::mt19937_64 rng(6);
  for (int i = 0; i < 200; ++i) {
    uint64_t offset = rng() % 500000;
    uint32_t length = static_cast<uint32_t>(rng() % 140000);
    std::string now;
    Status s = answered(store.readNow(9, 2, offset, length, now));
    ASSERT_TRUE(s.ok()) << s.toString();
    ASSERT_EQ(now, read(9, 2, offset, length)) << offset << "+" << length;
  }
  std::string out;
  EXPECT_EQ(answered(store.readNow(9, 1, 0, 10, out)).code(), ErrorCode::STALE_VERSION);
  EXPECT_EQ(answered(store.readNow(99, 1, 0, 10, out)).code(), ErrorCode::NOT_FOUND);

  // A flipped byte is found as read() finds it.
  std::string byte;
  ASSERT_TRUE(disk.read(store.dataPath(9), CHUNK_DATA_OFFSET + 70000, 1, byte).ok());
  byte[0] ^= 0x01;
  ASSERT_TRUE(disk.write(store.dataPath(9), CHUNK_DATA_OFFSET + 70000, byte.data(), 1, false).ok());
  EXPECT_EQ(answered(store.readNow(9, 2, 69000, 2000, out)).code(), ErrorCode::REPLICA_CORRUPT);
  EXPECT_TRUE(out.empty());

  // Bytes that are not in memory are left to read().
  disk.setCached(false);
  EXPECT_FALSE(store.readNow(9, 2, 0, 10, out).has_value());
  EXPECT_EQ(read(9, 2, 0, 10), testing::randomBytes(150000, 4).substr(0, 10));
}

// A store on an in-memory disk that fails or hangs on demand.
class ChunkStoreFaultTest : public ::testing::Test {
 protected:
  ChunkStoreFaultTest() : disk(mem), store(disk, {"/d0"}, CHUNK) { EXPECT_TRUE(store.open().ok()); }
  MemDisk mem;
  FaultyDisk disk;
  ChunkStore store;
};

TEST_F(ChunkStoreFaultTest, ReadNowLeavesAFailingReadToThePool) {
  ASSERT_TRUE(store.create(1, 1).ok());
  ASSERT_TRUE(store.write(1, 1, 0, "abc").ok());
  disk.failNext(FaultyDisk::Op::READ, 1, ErrorCode::IO_ERROR);
  std::string out;
  EXPECT_FALSE(store.readNow(1, 1, 0, 3, out).has_value());
  EXPECT_FALSE(store.read(1, 1, 0, 3, out).ok());  // the rule is taken here, once
  EXPECT_EQ(answered(store.readNow(1, 1, 0, 3, out)).code(), ErrorCode::OK);
  EXPECT_EQ(out, "abc");
}

// A disk that hangs in a write holds that chunk's lock: readNow leaves that chunk to the
// pool at once and reads the others; remove() of the chunk waits for the write without
// holding up anyone else's calls.
TEST_F(ChunkStoreFaultTest, NothingAnEventLoopCallsWaitsForAHungDisk) {
  ASSERT_TRUE(store.create(1, 1).ok());
  ASSERT_TRUE(store.create(2, 1).ok());
  ASSERT_TRUE(store.write(1, 1, 0, "abc").ok());
  ASSERT_TRUE(store.write(2, 1, 0, "xyz").ok());
  disk.stallNext(FaultyDisk::Op::WRITE, store.dataPath(1));
  std::thread writer([&]() { EXPECT_TRUE(store.write(1, 1, 0, "ABC").ok()); });
  std::thread remover;
  auto waitFor = [](auto done) {
    for (int i = 0; i < 10000 && !done(); ++i) usleep(1000);
    return done();
  };
  auto cleanup = kj::defer([&]() {
    disk.release();
    writer.join();
    if (remover.joinable()) remover.join();
  });
  ASSERT_TRUE(waitFor([&]() { return disk.stalled(); }));
  std::string out;
  EXPECT_FALSE(store.readNow(1, 1, 0, 3, out).has_value());  // the write holds its lock
  EXPECT_EQ(store.versionOf(1), 1u);
  EXPECT_EQ(answered(store.readNow(2, 1, 0, 3, out)).code(), ErrorCode::OK);
  EXPECT_EQ(out, "xyz");
  std::atomic<bool> removed{false};
  remover = std::thread([&]() {
    EXPECT_TRUE(store.remove(1).ok());
    removed = true;
  });
  ASSERT_TRUE(waitFor([&]() { return !store.has(1); }));
  usleep(20000);
  EXPECT_FALSE(removed);  // it waits for the write
  EXPECT_EQ(answered(store.readNow(2, 1, 0, 3, out)).code(), ErrorCode::OK);
  EXPECT_EQ(out, "xyz");
  EXPECT_EQ(store.versionOf(2), 1u);
  EXPECT_EQ(store.count(), 1u);
  disk.release();
  EXPECT_TRUE(waitFor([&]() { return removed.load(); }));
}

// On a real file system: bytes in the page cache are read at once, bytes that are not are
// left to read().
TEST(PosixDiskTest, ReadNowReadsOnlyWhatIsInMemory) {
  testing::TempDir dir;
  PosixDisk disk;
  std::string path = dir.path() + "/f";
  std::string data = testing::randomBytes(1 << 20, 7);
  ASSERT_TRUE(disk.write(path, 0, data.data(), data.size(), true).ok());
  ASSERT_TRUE(disk.sync(path).ok());
  std::string out;
  ASSERT_TRUE(disk.read(path, 0, data.size(), out).ok());
  // tmpfs keeps files in the page cache itself: nothing there is ever dropped from it.
  struct statfs fs {};
  ASSERT_EQ(statfs(dir.path().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << dir.path() << " is on tmpfs";
  // The read above keeps the file open in `disk`; a disk of its own opens it here.
  PosixDisk fresh;
  Status now = answered(fresh.readNow(path, 1000, 70000, out));
  ASSERT_TRUE(now.ok()) << now.toString();
  EXPECT_EQ(out, data.substr(1000, 70000));
  EXPECT_EQ(answered(fresh.readNow(path, data.size() - 10, 100, out)).code(), ErrorCode::OK);
  EXPECT_EQ(out, data.substr(data.size() - 10));  // short at the end, as read()

  // Dropped from the page cache: not read now.
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  close(fd);
  EXPECT_FALSE(fresh.readNow(path, 300000, 4096, out).has_value());
  EXPECT_FALSE(fresh.readNow(dir.path() + "/missing", 0, 1, out).has_value());
  ASSERT_TRUE(disk.read(path, 300000, 4096, out).ok());
  EXPECT_EQ(out, data.substr(300000, 4096));
}

// Descriptors this process has open on `path` after it was deleted.
size_t openDeleted(const std::string& name) {
  std::string path = std::filesystem::canonical(std::filesystem::path(name).parent_path()) /
                     std::filesystem::path(name).filename();
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    n += std::filesystem::read_symlink(e.path(), ec).string() == path + " (deleted)";
  }
  return n;
}

size_t openDescriptors() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                           std::filesystem::directory_iterator()));
}

std::string readAllOf(PosixDisk& disk, const std::string& path) {
  std::string out;
  Status s = disk.read(path, 0, 1 << 20, out);
  return s.ok() ? out : s.toString();
}

// Files stay open between calls, but a call always reaches the file a name has now: one
// removed, renamed over or made again by name is not read through the old descriptor, and
// a removed file is closed (its space freed) with the remove.
TEST(PosixDiskTest, FilesKeptOpenFollowTheirNames) {
  testing::TempDir dir;
  PosixDisk disk;
  std::string a = dir.path() + "/a", b = dir.path() + "/b", out;
  ASSERT_TRUE(disk.write(a, 0, "first", 5, true).ok());
  EXPECT_EQ(readAllOf(disk, a), "first");
  ASSERT_TRUE(disk.write(a, 5, "+more", 5, false).ok());  // through the kept descriptor
  EXPECT_EQ(readAllOf(disk, a), "first+more");

  ASSERT_TRUE(disk.remove(a).ok());
  EXPECT_EQ(openDeleted(a), 0u);
  EXPECT_EQ(disk.read(a, 0, 10, out).code(), ErrorCode::NOT_FOUND);
  ASSERT_TRUE(disk.write(a, 0, "second", 6, true).ok());
  EXPECT_EQ(readAllOf(disk, a), "second");

  ASSERT_TRUE(disk.write(b, 0, "renamed", 7, true).ok());
  EXPECT_EQ(readAllOf(disk, b), "renamed");
  ASSERT_TRUE(disk.rename(b, a).ok());  // over a file kept open
  EXPECT_EQ(readAllOf(disk, a), "renamed");
  EXPECT_EQ(openDeleted(a), 0u);
  EXPECT_EQ(disk.read(b, 0, 10, out).code(), ErrorCode::NOT_FOUND);

  // Removed behind the disk's back, then made again through it.
  ASSERT_EQ(unlink(a.c_str()), 0);
  ASSERT_TRUE(disk.write(a, 0, "third", 5, true).ok());
  EXPECT_EQ(readAllOf(disk, a), "third");
  EXPECT_EQ(openDeleted(a), 0u);

  // readNow() goes through the same files: it reads a kept one, and not after its name
  // went to another file.
  auto now = disk.readNow(a, 0, 10, out);
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->ok()) << now->toString();
  EXPECT_EQ(out, "third");
  ASSERT_TRUE(disk.write(b, 0, "now", 3, true).ok());
  ASSERT_TRUE(disk.rename(b, a).ok());
  now = disk.readNow(a, 0, 10, out);
  if (now.has_value()) {  // nullopt where the new name is not in the dentry cache yet
    EXPECT_TRUE(now->ok()) << now->toString();
    EXPECT_EQ(out, "now");
  }
}

// However many files are used, only so many stay open.
TEST(PosixDiskTest, OnlySoManyFilesStayOpen) {
  testing::TempDir dir;
  PosixDisk disk;
  size_t before = openDescriptors();
  for (int i = 0; i < 500; ++i) {
    std::string path = dir.path() + "/f" + std::to_string(i);
    std::string data = "file " + std::to_string(i);
    ASSERT_TRUE(disk.write(path, 0, data.data(), data.size(), true).ok());
    ASSERT_EQ(readAllOf(disk, path), data);
  }
  size_t kept = openDescriptors() - before;
  EXPECT_GT(kept, 0u);  // they are kept: else this test proves nothing
  EXPECT_LE(kept, 128u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(readAllOf(disk, dir.path() + "/f" + std::to_string(i)), "file " + std::to_string(i));
  }
}

// The pages of `path` in the page cache, of those its first `size` bytes span.
size_t residentPages(const std::string& path, size_t size) {
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  EXPECT_NE(map, MAP_FAILED);
  long page = sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> in((size + page - 1) / page);
  EXPECT_EQ(mincore(map, size, in.data()), 0);
  munmap(map, size);
  size_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return n;
}

// Chunk data written is dropped from the page cache once it is on disk, where the kernel
// can (RWF_DONTCACHE); written the usual way it stays. The bytes are the same either way.
TEST(PosixDiskTest, AnUncachedWriteLeavesItsPagesOutOfTheCacheOnceOnDisk) {
  testing::TempDir dir;
  struct statfs fs {};
  ASSERT_EQ(statfs(dir.path().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << dir.path() << " is on tmpfs";
  std::string data = testing::randomBytes(4 << 20, 11);
  size_t pages = data.size() / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (bool drop : {false, true}) {
    PosixDisk disk(drop);
    std::string path = dir.path() + (drop ? "/dropped" : "/kept");
    ASSERT_TRUE(disk.write(path, 0, nullptr, 0, true).ok());
    ASSERT_TRUE(disk.writeUncached(path, 0, data.data(), data.size(), 0).ok());
    ASSERT_TRUE(disk.sync(path).ok());
    if (drop && !disk.dropsBehind()) GTEST_SKIP() << "this kernel has no RWF_DONTCACHE";
    size_t resident = residentPages(path, data.size());
    // Loose bounds: a kernel may keep a page whose lock was taken when its write ended,
    // and memory pressure may evict kept ones; the two cases stay far apart.
    if (drop) {
      EXPECT_LT(resident, pages / 2) << "of " << pages;
    } else {
      EXPECT_GT(resident, pages / 2) << "of " << pages;
    }
    std::string out;
    ASSERT_TRUE(disk.read(path, 0, data.size(), out).ok());
    EXPECT_TRUE(out == data);
  }
}

}  // namespace
}  // namespace cairn
