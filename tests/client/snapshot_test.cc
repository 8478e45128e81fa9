// Snapshots and copies that share chunks, against a whole cluster in this process (four
// chunkservers, 1 MiB chunks): both sides read as they should, a write or cut to either
// copies the shared chunk first, and a chunk is released only with its last owner.

#include <gtest/gtest.h>

#include "client.h"
#include "cluster.h"
#include "file_cache.h"
#include "master.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 1 << 20;

using testing::randomBytes;

class SnapshotTest : public ::testing::Test {
 protected:
  ~SnapshotTest() noexcept override {}
  SnapshotTest() : io(kj::setupAsyncIo()), cluster(io, 4, CHUNK) {}
  Client& client() { return cluster.client(); }
  Namespace& names() { return cluster.master().names(); }
  template <typename T>
  T wait(kj::Promise<T> p) {
    return p.wait(io.waitScope);
  }
  // A write as an application sees it: acknowledged once the size is committed too.
  kj::Promise<Status> write(uint64_t inode, uint64_t offset, std::string data) {
    auto owned = kj::heap<std::string>(std::move(data));
    auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(owned->data()), owned->size());
    uint64_t end = offset + owned->size();
    return client()
        .write(inode, offset, bytes)
        .attach(kj::mv(owned))
        .then([this, inode, end](Status s) -> kj::Promise<Status> {
          if (!s.ok()) return s;
          return client().commitSize(inode, end).then([](Result<FileAttr> r) { return r.status; });
        });
  }
  uint64_t createFile(uint64_t parent, const std::string& name, const std::string& data) {
    auto r = wait(client().create(parent, name, 0644, 3, true));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    if (!data.empty()) {
      Status s = wait(write(r.value.inode, 0, data));
      EXPECT_TRUE(s.ok()) << s.toString();
    }
    return r.value.inode;
  }
  std::string readAll(uint64_t inode) {
    auto a = wait(client().getattr(inode));
    EXPECT_TRUE(a.ok()) << a.status.toString();
    std::string out;
    Status s = wait(client().read(inode, 0, a.value.size, out));
    EXPECT_TRUE(s.ok()) << s.toString();
    return out;
  }
  uint64_t snapshot(uint64_t source, uint64_t parent, const std::string& name) {
    auto r = wait(client().snapshot(source, parent, name));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    return r.value.inode;
  }
  std::vector<uint64_t> handles(uint64_t inode) {
    std::vector<uint64_t> out;
    for (auto& c : names().listChunks(inode, 0, UINT32_MAX)) out.push_back(c.handle);
    return out;
  }
  bool known(uint64_t handle) {
    for (auto& [inode, record] : names().allChunks()) {
      if (record.handle == handle) return true;
    }
    return false;
  }

  kj::AsyncIoContext io;
  testing::InProcessCluster cluster;
};

TEST_F(SnapshotTest, AFileSharesItsChunksUntilEitherSideWrites) {
  std::string data = randomBytes(3 * CHUNK + CHUNK / 2, 1);
  uint64_t src = createFile(1, "src", data);
  uint64_t snap = snapshot(src, 1, "snap");
  EXPECT_TRUE(readAll(snap) == data);
  auto before = handles(src);
  ASSERT_EQ(before.size(), 4u);
  EXPECT_EQ(handles(snap), before) << "a snapshot copies no chunk";
  for (uint64_t h : before) EXPECT_EQ(names().ownersOf(h).size(), 2u);

  // A write to the source copies the one chunk it touches; the snapshot keeps the old bytes.
  std::string patch(1000, 'x');
  ASSERT_TRUE(wait(write(src, CHUNK + 500, patch)).ok());
  std::string changed = data;
  changed.replace(CHUNK + 500, patch.size(), patch);
  EXPECT_TRUE(readAll(src) == changed);
  EXPECT_TRUE(readAll(snap) == data);
  auto after = handles(src);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_NE(after[1], before[1]);
  EXPECT_EQ(after[2], before[2]);
  EXPECT_EQ(handles(snap), before);

  // And a write to the snapshot leaves the source alone.
  ASSERT_TRUE(wait(write(snap, 10, "snapshot")).ok());
  std::string snapData = data;
  snapData.replace(10, 8, "snapshot");
  EXPECT_TRUE(readAll(snap) == snapData);
  EXPECT_TRUE(readAll(src) == changed);
}

TEST_F(SnapshotTest, CuttingASharedChunkCutsACopy) {
  std::string data = randomBytes(2 * CHUNK, 2);
  uint64_t src = createFile(1, "src", data);
  uint64_t snap = snapshot(src, 1, "snap");
  SetAttrRequest cut;
  cut.size = CHUNK + 4096;
  ASSERT_TRUE(wait(client().setattr(src, cut)).ok());
  // Growing it again must read zeros, not the snapshot's bytes.
  cut.size = 2 * CHUNK;
  ASSERT_TRUE(wait(client().setattr(src, cut)).ok());
  std::string expected = data.substr(0, CHUNK + 4096) + std::string(CHUNK - 4096, '\0');
  EXPECT_TRUE(readAll(src) == expected);
  EXPECT_TRUE(readAll(snap) == data);
}

TEST_F(SnapshotTest, AChunkIsReleasedWithItsLastOwnerOnly) {
  std::string data = randomBytes(2 * CHUNK + 100, 3);
  uint64_t src = createFile(1, "src", data);
  uint64_t snap = snapshot(src, 1, "snap");
  auto shared = handles(src);
  // The source goes to the trash, and the trash expires: the snapshot keeps every chunk.
  ASSERT_TRUE(wait(client().unlink(1, "src")).ok());
  names().setTrashPeriod(0 * kj::SECONDS);
  auto expired = cluster.master().finish(wait(names().expireTrash()));
  EXPECT_TRUE(expired.releasedHandles.empty());
  EXPECT_FALSE(wait(client().getattr(src)).ok());
  EXPECT_TRUE(readAll(snap) == data) << "the snapshot outlives its source";
  for (uint64_t h : shared) {
    EXPECT_TRUE(known(h));
    EXPECT_EQ(names().ownersOf(h).size(), 1u);
  }
  // Its last owner gone, each chunk is released (once that is on the master's disk).
  ASSERT_TRUE(wait(client().unlink(1, "snap")).ok());
  ASSERT_TRUE(wait(client().syncMetadata()).ok());
  for (uint64_t h : shared) {
    EXPECT_FALSE(known(h));
    EXPECT_TRUE(names().ownersOf(h).empty()) << "the owner list goes with the last owner";
  }
  EXPECT_EQ(cluster.master().chunkManager().knownChunks(), 0u);
}

TEST_F(SnapshotTest, ATreeKeepsItsShapeLinksAndAttributes) {
  auto dir = wait(client().mkdir(1, "tree", 0750));
  ASSERT_TRUE(dir.ok());
  auto sub = wait(client().mkdir(dir.value.inode, "sub", 0700));
  ASSERT_TRUE(sub.ok());
  std::string a = randomBytes(CHUNK + 17, 4), b = randomBytes(100, 5);
  uint64_t fa = createFile(dir.value.inode, "a", a);
  createFile(sub.value.inode, "b", b);
  ASSERT_TRUE(wait(client().link(fa, sub.value.inode, "a-link")).ok());
  ASSERT_TRUE(wait(client().symlink(dir.value.inode, "to-b", "sub/b")).ok());
  ASSERT_TRUE(wait(client().setxattr(fa, "user.colour", "blue", 0)).ok());

  uint64_t snap = snapshot(dir.value.inode, 1, "tree-snap");
  auto snapAttr = wait(client().getattr(snap));
  ASSERT_TRUE(snapAttr.ok());
  EXPECT_EQ(snapAttr.value.mode & 07777, 0750u);
  auto copyA = wait(client().lookup(snap, "a"));
  ASSERT_TRUE(copyA.ok());
  EXPECT_NE(copyA.value.inode, fa);
  EXPECT_EQ(copyA.value.nlink, 2u) << "the hard link inside the tree is kept";
  auto copySub = wait(client().lookup(snap, "sub"));
  ASSERT_TRUE(copySub.ok());
  auto copyLink = wait(client().lookup(copySub.value.inode, "a-link"));
  ASSERT_TRUE(copyLink.ok());
  EXPECT_EQ(copyLink.value.inode, copyA.value.inode);
  auto copyB = wait(client().lookup(copySub.value.inode, "b"));
  ASSERT_TRUE(copyB.ok());
  EXPECT_TRUE(readAll(copyA.value.inode) == a);
  EXPECT_TRUE(readAll(copyB.value.inode) == b);
  auto sym = wait(client().lookup(snap, "to-b"));
  ASSERT_TRUE(sym.ok());
  auto target = wait(client().readlink(sym.value.inode));
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(target.value, "sub/b");
  auto colour = wait(client().getxattr(copyA.value.inode, "user.colour"));
  ASSERT_TRUE(colour.ok());
  EXPECT_EQ(colour.value, "blue");
  // A snapshot inside its own source is refused, and an existing name is not replaced.
  EXPECT_EQ(wait(client().snapshot(dir.value.inode, sub.value.inode, "loop")).status.code(),
            ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(wait(client().snapshot(fa, 1, "tree-snap")).status.code(), ErrorCode::ALREADY_EXISTS);
}

TEST_F(SnapshotTest, ATreeOfFilesJustWrittenRevokesTheirLeases) {
  auto dir = wait(client().mkdir(1, "fresh", 0755));
  ASSERT_TRUE(dir.ok());
  for (int i = 0; i < 300; ++i) {
    createFile(dir.value.inode, "f" + std::to_string(i), "file " + std::to_string(i));
  }
  uint64_t snap = snapshot(dir.value.inode, 1, "fresh-snap");
  auto copy = wait(client().lookup(snap, "f123"));
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(readAll(copy.value.inode), "file 123");
  // The files' leases were revoked: writing one again copies its chunk first.
  auto original = wait(client().lookup(dir.value.inode, "f123"));
  ASSERT_TRUE(original.ok());
  ASSERT_TRUE(wait(write(original.value.inode, 0, "FILE")).ok());
  EXPECT_EQ(readAll(copy.value.inode), "file 123");
  EXPECT_EQ(readAll(original.value.inode), "FILE 123");
}

TEST_F(SnapshotTest, HoldsEveryWriteAcknowledgedBeforeItAndNoneAfter) {
  // A writer rewrites 64 KiB blocks of a 4-chunk file, each with its generation number,
  // while a snapshot is taken: the snapshot holds, per block, a generation at least that
  // acknowledged before the snapshot was asked for, and none started after it answered.
  constexpr size_t BLOCK = 64 * 1024, BLOCKS = 4 * CHUNK / BLOCK;
  uint64_t src = createFile(1, "busy", std::string(4 * CHUNK, '\0'));
  std::vector<uint32_t> acked(BLOCKS, 0);
  bool snapshotDone = false;
  uint32_t firstAfter = UINT32_MAX;  // the first generation started after the snapshot
  auto block = [](size_t i, uint32_t gen) {
    std::string s(BLOCK, '\0');
    for (size_t j = 0; j + 8 <= BLOCK; j += 8) {
      memcpy(&s[j], &gen, 4);
      uint32_t idx = static_cast<uint32_t>(i);
      memcpy(&s[j + 4], &idx, 4);
    }
    return s;
  };
  uint32_t generation = 0;
  kj::Function<kj::Promise<void>()> writer;
  writer = [&]() -> kj::Promise<void> {
    if (generation >= 60) return kj::READY_NOW;
    uint32_t gen = ++generation;
    if (snapshotDone && firstAfter == UINT32_MAX) firstAfter = gen;
    size_t i = (gen * 7) % BLOCKS;
    return write(src, i * BLOCK, block(i, gen)).then([&, i, gen](Status s) {
      EXPECT_TRUE(s.ok()) << s.toString();
      acked[i] = std::max(acked[i], gen);
      return writer();
    });
  };
  auto writing = writer();
  // Let some writes land, then snapshot while the writer goes on.
  while (generation < 20) wait(io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS));
  auto ackedBefore = acked;
  uint64_t snap = snapshot(src, 1, "busy-snap");
  snapshotDone = true;
  wait(kj::mv(writing));
  ASSERT_NE(firstAfter, UINT32_MAX) << "the writer stopped before the snapshot answered";
  std::string copy = readAll(snap);
  ASSERT_EQ(copy.size(), 4 * CHUNK);
  for (size_t i = 0; i < BLOCKS; ++i) {
    uint32_t gen = 0, idx = 0;
    memcpy(&gen, &copy[i * BLOCK], 4);
    memcpy(&idx, &copy[i * BLOCK + 4], 4);
    if (gen != 0) {
      EXPECT_EQ(idx, i);
    }
    EXPECT_TRUE(copy.substr(i * BLOCK, BLOCK) ==
                (gen == 0 ? std::string(BLOCK, '\0') : block(i, gen)))
        << "block " << i << " is torn";
    EXPECT_GE(gen, ackedBefore[i]) << "block " << i << " lost an acknowledged write";
    EXPECT_LT(gen, firstAfter) << "block " << i << " holds a write made after the snapshot";
  }
}

TEST_F(SnapshotTest, CopyRangeSharesWholeChunksAndCopiesTheRest) {
  std::string data = randomBytes(5 * CHUNK + 300, 6);
  uint64_t src = createFile(1, "big", data);
  uint64_t dst = createFile(1, "copy", "");
  // Aligned: every chunk shared (the last holds both files' ends).
  ASSERT_TRUE(wait(client().copyRange(src, 0, dst, 0, data.size())).ok());
  EXPECT_EQ(handles(dst), handles(src));
  EXPECT_TRUE(readAll(dst) == data);
  // Unaligned: nothing shared, the bytes copied.
  uint64_t odd = createFile(1, "odd", "");
  ASSERT_TRUE(wait(client().copyRange(src, 100, odd, 0, data.size() - 100)).ok());
  ASSERT_TRUE(wait(client().commitSize(odd, data.size() - 100)).ok());
  EXPECT_TRUE(readAll(odd) == data.substr(100));
  for (uint64_t h : handles(odd)) EXPECT_TRUE(names().ownersOf(h).empty());
  // A part of a chunk at each end, whole chunks between.
  uint64_t part = createFile(1, "part", "");
  uint64_t from = CHUNK / 2, length = 3 * CHUNK;
  ASSERT_TRUE(wait(client().copyRange(src, from, part, from, length)).ok());
  ASSERT_TRUE(wait(client().commitSize(part, from + length)).ok());
  EXPECT_TRUE(readAll(part).substr(from) == data.substr(from, length));
  auto p = handles(part), s = handles(src);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_NE(p[0], s[0]);
  EXPECT_EQ(p[1], s[1]);
  EXPECT_EQ(p[2], s[2]);
  EXPECT_NE(p[3], s[3]);
  // Writes to either side do not show in the other.
  ASSERT_TRUE(wait(write(dst, 2 * CHUNK, "changed")).ok());
  EXPECT_TRUE(readAll(src) == data);
  std::string d = data;
  d.replace(2 * CHUNK, 7, "changed");
  EXPECT_TRUE(readAll(dst) == d);
}

TEST_F(SnapshotTest, ACopyKeepsTheDestinationsBytesPastTheSourcesEnd) {
  std::string data = randomBytes(CHUNK + 1000, 7);
  std::string longer = randomBytes(3 * CHUNK, 8);
  uint64_t src = createFile(1, "short", data);
  uint64_t dst = createFile(1, "long", longer);
  ASSERT_TRUE(wait(client().copyRange(src, 0, dst, 0, data.size())).ok());
  std::string expected = longer;
  expected.replace(0, data.size(), data);
  EXPECT_TRUE(readAll(dst) == expected);
  EXPECT_EQ(handles(dst)[0], handles(src)[0]);
  EXPECT_NE(handles(dst)[1], handles(src)[1]) << "its second chunk holds bytes past the source";
}

}  // namespace
}  // namespace cairn
