// Snapshots and copies that share chunks, on a real cluster: a chunkserver killed while
// writes copy shared chunks, chunks kept and released by their owners across master
// restarts, and `cp` inside the mount sharing chunks (bytes identical, little disk, later
// writes to either file not showing in the other).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "cluster.h"
#include "fixture.h"

namespace cairn {
namespace {

using testing::readFile;
using testing::writeFile;

constexpr uint64_t MIB = 1 << 20;

using testing::randomBytes;

class SnapshotTest : public testing::ClusterFixture {
 protected:
  void cli(const std::vector<std::string>& args) {
    std::string out, err;
    ASSERT_EQ(cluster->cli(args, &out, &err), 0) << out << err;
  }
  // Chunk files on every chunkserver, and the disk they take.
  struct Disk {
    size_t files = 0;
    uint64_t bytes = 0;
  };
  Disk disk(size_t chunkservers) {
    Disk d;
    for (size_t i = 0; i < chunkservers; ++i) {
      std::string dir = cluster->chunkserverDataDir(i) + "/chunks";
      if (!std::filesystem::exists(dir)) continue;
      for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        struct stat st;
        if (!e.is_regular_file() || stat(e.path().c_str(), &st) != 0) continue;
        ++d.files;
        d.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
      }
    }
    return d;
  }
  void restartMaster() {
    cluster->killMaster();
    cluster->startMaster();
    cluster->waitForLiveChunkservers(3);
  }
  static void pwriteAll(int fd, const std::string& data, uint64_t offset) {
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()))
        << strerror(errno);
  }
};

TEST_F(SnapshotTest, AChunkserverKilledWhileWritesCopySharedChunks) {
  start(4);
  std::string data = randomBytes(8 * MIB, 1);
  cluster->put(data, "/src");
  cli({"snapshot", "/src", "/snap"});
  ASSERT_NE(handleOf("/src", 3), "");
  EXPECT_EQ(handleOf("/src", 3), handleOf("/snap", 3));
  std::string mnt = cluster->mount();
  int fd = open((mnt + "/src").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::string changed = data, patch(4096, 'w');
  std::string victim = *holders("/src", 3).begin();
  for (uint64_t i = 0; i < 8; ++i) {
    if (i == 3) cluster->killChunkserver(indexOf(victim));
    pwriteAll(fd, patch, i * MIB + 100);
    changed.replace(i * MIB + 100, patch.size(), patch);
    // Each write reaches the chunkservers (and so copies its chunk) before the next.
    ASSERT_EQ(fsync(fd), 0) << "chunk " << i << ": " << strerror(errno);
  }
  ASSERT_EQ(close(fd), 0) << strerror(errno);
  cluster->unmount(mnt);
  EXPECT_TRUE(cluster->get("/src") == changed);
  EXPECT_TRUE(cluster->get("/snap") == data) << "the snapshot changed";
  for (size_t i = 0; i < 8; ++i) EXPECT_NE(handleOf("/src", i), handleOf("/snap", i));
  // The copies made without the dead chunkserver get their third replica back.
  EXPECT_TRUE(waitFor(60, [&]() { return healthy(); }));
}

TEST_F(SnapshotTest, ChunksAreKeptAndReleasedByTheirOwnersAcrossMasterRestarts) {
  start(3, {"--trash-seconds", "0"});
  Disk before = disk(3);
  std::string data = randomBytes(4 * MIB + 4321, 2);
  cluster->put(data, "/a");
  cli({"snapshot", "/a", "/b"});
  cli({"cp", "/a", "/c"});
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_NE(handleOf("/a", i), "");
    EXPECT_EQ(handleOf("/b", i), handleOf("/a", i));
    EXPECT_EQ(handleOf("/c", i), handleOf("/a", i)) << "cp shares whole chunks";
  }
  Disk shared = disk(3);
  EXPECT_EQ(shared.files, before.files + 5 * 3) << "three files, one set of chunks";
  auto fsck = json({"fsck", "--json", "/"});
  ASSERT_FALSE(fsck.is_null());
  EXPECT_EQ(fsck["chunks"], 15);
  EXPECT_EQ(fsck["shared"], 15);

  restartMaster();
  EXPECT_TRUE(cluster->get("/b") == data);
  cli({"rm", "/a"});
  restartMaster();
  EXPECT_TRUE(cluster->get("/b") == data);
  EXPECT_TRUE(cluster->get("/c") == data);
  cli({"rm", "/b"});
  restartMaster();
  EXPECT_TRUE(cluster->get("/c") == data);
  EXPECT_EQ(disk(3).files, shared.files) << "a chunk went while a file still had it";
  cli({"rm", "/c"});
  EXPECT_TRUE(waitFor(30, [&]() { return disk(3).files == before.files; }))
      << disk(3).files << " chunk files left, " << before.files << " before";
}

TEST_F(SnapshotTest, CpInsideTheMountSharesChunks) {
  start(3);
  std::string mnt = cluster->mount();
  std::string data = randomBytes(24 * MIB + 123, 3);
  writeFile(mnt + "/big", data);
  ASSERT_EQ(system(("sync -f " + mnt + "/big").c_str()), 0);
  Disk before = disk(3);
  std::string out, err;
  ASSERT_EQ(cluster->run({"/bin/cp", mnt + "/big", mnt + "/copy"}, &out, &err), 0) << out << err;
  Disk after = disk(3);
  EXPECT_TRUE(readFile(mnt + "/copy") == data) << "cp changed the bytes";
  // A copy by bytes would take 3 x 24 MiB more; shared chunks take none.
  EXPECT_LT(after.bytes, before.bytes + 3 * MIB)
      << "cp took " << (after.bytes - before.bytes) / MIB << " MiB";
  ASSERT_NE(handleOf("/big", 10), "");
  EXPECT_EQ(handleOf("/copy", 10), handleOf("/big", 10));

  // Writes to either file do not show in the other.
  int fd = open((mnt + "/copy").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  pwriteAll(fd, "copy's own", 5 * MIB);
  ASSERT_EQ(close(fd), 0);
  fd = open((mnt + "/big").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  pwriteAll(fd, "the original's", 24 * MIB);
  ASSERT_EQ(close(fd), 0);
  cluster->unmount(mnt);
  std::string copy = data, original = data;
  copy.replace(5 * MIB, 10, "copy's own");
  original.replace(24 * MIB, 14, "the original's");
  EXPECT_TRUE(cluster->get("/copy") == copy);
  EXPECT_TRUE(cluster->get("/big") == original);
}

}  // namespace
}  // namespace cairn
