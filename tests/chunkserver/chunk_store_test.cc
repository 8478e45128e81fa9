#include "chunk_store.h"

#include <gtest/gtest.h>

#include "cluster.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 4 << 20;

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
  apply(65530, testing::randomBytes(20, 2));          // across a block boundary
  apply(300000, testing::randomBytes(1000, 3));       // leaves a gap of zeros
  apply(10, "x");                                      // a single byte inside a block
  apply(CHUNK - 5, "tail!");                           // the very end of the chunk
  EXPECT_EQ(read(1, 7, 0, CHUNK), model);
  EXPECT_EQ(read(1, 7, 65000, 2000), model.substr(65000, 2000));
  EXPECT_EQ(read(1, 7, 150000, 10), std::string(10, '\0'));
  EXPECT_EQ(store.list()[0].length, CHUNK);
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
  ASSERT_TRUE(disk.read(store.dataPath(3), 70000, 1, byte).ok());
  byte[0] ^= 0x40;
  ASSERT_TRUE(disk.write(store.dataPath(3), 70000, byte.data(), 1, false).ok());
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

TEST_F(ChunkStoreTest, RemoveDeletesBothFiles) {
  ASSERT_TRUE(store.create(6, 1).ok());
  std::string data = store.dataPath(6), meta = store.metaPath(6);
  ASSERT_TRUE(store.remove(6).ok());
  EXPECT_EQ(disk.size(data).status.code(), ErrorCode::NOT_FOUND);
  EXPECT_EQ(disk.size(meta).status.code(), ErrorCode::NOT_FOUND);
  EXPECT_FALSE(store.has(6));
}

TEST_F(ChunkStoreTest, AFullDiskRefusesNewChunksAndKeepsOldOnes) {
  MemDisk small(2 << 20);
  ChunkStore tiny(small, {"/d"}, 1 << 20);
  ASSERT_TRUE(tiny.open().ok());
  ASSERT_TRUE(tiny.create(1, 1).ok());
  std::string full = testing::randomBytes(1 << 20, 12);
  ASSERT_TRUE(tiny.write(1, 1, 0, full).ok());
  // Less than a chunk of room is left: a new chunk is refused, not started.
  EXPECT_EQ(tiny.create(2, 1).code(), ErrorCode::NO_SPACE);
  EXPECT_FALSE(tiny.has(2));
  std::string out;
  ASSERT_TRUE(tiny.read(1, 1, 0, 1 << 20, out).ok());
  EXPECT_TRUE(out == full);
  // A write that finds no room fails and leaves the bytes before it alone.
  MemDisk tight((1 << 20) + 4096);
  ChunkStore store2(tight, {"/d"}, 1 << 20);
  ASSERT_TRUE(store2.open().ok());
  ASSERT_TRUE(store2.create(1, 1).ok());
  ASSERT_TRUE(store2.write(1, 1, 0, "kept").ok());
  ASSERT_TRUE(tight.write("/filler", 0, std::string(1 << 20, 'f').data(), 1 << 20, true).ok());
  EXPECT_EQ(store2.write(1, 1, 4, std::string(64 << 10, 'y')).code(), ErrorCode::NO_SPACE);
  ASSERT_TRUE(store2.read(1, 1, 0, 4, out).ok());
  EXPECT_EQ(out, "kept");
}

}  // namespace
}  // namespace cairn
