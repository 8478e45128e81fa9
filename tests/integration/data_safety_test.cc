// Never losing an acknowledged byte, through a real mount: chunkservers on full disks
// (tmpfs), holes that stay holes on every replica (after sparse writes, re-replication
// and PUNCH_HOLE), server-side copies, files unlinked while open, and the replication
// goal set through an extended attribute.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"
#include "fixture.h"

namespace cairn {
namespace {

using testing::randomBytes;
using testing::readFile;

constexpr uint64_t MIB = 1 << 20;

// Bytes of disk under `dir` (st_blocks), as du counts them.
uint64_t diskUse(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    struct stat st;
    if (lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

uint64_t allocated(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

// Writes all of `data` at `offset`; the errno of the first failure, or 0.
int writeAll(int fd, const std::string& data, uint64_t offset) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n =
        pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) return errno;
    done += static_cast<size_t>(n);
  }
  return 0;
}

std::string preadAll(int fd, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  ssize_t got = pread(fd, out.data(), n, static_cast<off_t>(offset));
  out.resize(got < 0 ? 0 : static_cast<size_t>(got));
  return out;
}

class DataSafetyTest : public testing::ClusterFixture {};

// Three chunkservers, each on a 24 MiB tmpfs; files deleted at once (no trash). With a
// reserve, new chunks are refused before the disks fill; without one, writes into chunks
// already there meet the full disk itself.
class FullDiskTest : public DataSafetyTest, public ::testing::WithParamInterface<const char*> {};

INSTANTIATE_TEST_SUITE_P(Reserves, FullDiskTest, ::testing::Values("1M", "0"));

TEST_P(FullDiskTest, WritesFailWithEnospcAndLoseNothing) {
  std::vector<std::unique_ptr<testing::Tmpfs>> disks;
  cluster = std::make_unique<testing::ProcessCluster>(
      MIB, std::vector<std::string>{"--dead-after", "3", "--trash-seconds", "0"});
  for (size_t i = 0; i < 3; ++i) {
    disks.push_back(std::make_unique<testing::Tmpfs>(cluster->chunkserverDataDir(i), "24m"));
    ASSERT_TRUE(disks.back()->ok) << "cannot mount a tmpfs (root needed)";
  }
  cluster->setChunkserverFlags({"--reserve", GetParam()});
  cluster->startMaster();
  for (size_t i = 0; i < 3; ++i) cluster->startChunkserver(i);
  cluster->waitForLiveChunkservers(3);
  std::string mnt = cluster->mount();

  // Fill the cluster, 1 MiB and an fsync at a time, until a call fails: that must be
  // ENOSPC, and everything fsync'd before it must read back.
  std::map<std::string, std::string> acked;  // path -> bytes fsync'd
  int failure = 0;
  for (int f = 0; failure == 0 && f < 40; ++f) {
    std::string path = mnt + "/f" + std::to_string(f);
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    acked[path] = "";
    for (int step = 0; step < 3; ++step) {
      std::string block = randomBytes(MIB, static_cast<uint64_t>(f * 10 + step));
      failure = writeAll(fd, block, acked[path].size());
      if (failure == 0 && fsync(fd) != 0) failure = errno;
      if (failure != 0) break;
      acked[path] += block;
    }
    if (close(fd) != 0 && failure == 0) failure = errno;
  }
  ASSERT_EQ(failure, ENOSPC) << strerror(failure);
  // df shows the cluster full once the chunkservers have reported (a heartbeat).
  EXPECT_TRUE(waitFor(5,
                      [&]() {
                        struct statvfs vfs;
                        return statvfs(mnt.c_str(), &vfs) == 0 &&
                               vfs.f_bavail * vfs.f_frsize < 6 * MIB;
                      }))
      << "df does not show the cluster full: " << json({"servers", "--json"}).dump();
  for (auto& [path, data] : acked) {
    EXPECT_TRUE(readFile(path) == data) << path << " lost acknowledged bytes";
  }

  // While full: appends fail with ENOSPC. An O_APPEND write goes out as atomic appends
  // (the kernel's requests, cut in pieces of a quarter chunk), in order: what may land is a
  // start of it, after every acknowledged byte, and nothing after a piece that failed.
  // Overwrites of written bytes need no new space and work.
  std::string first = mnt + "/f0";
  int fd = open(first.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  std::string appended = randomBytes(2 * MIB, 99);
  int err = writeAll(fd, appended, 0);
  if (err == 0 && fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && err == 0) err = errno;
  EXPECT_EQ(err, ENOSPC);
  std::string now = readFile(first);
  ASSERT_GE(now.size(), acked[first].size());
  size_t landed = now.size() - acked[first].size();
  EXPECT_TRUE(now.compare(0, acked[first].size(), acked[first]) == 0)
      << "a failed append changed acknowledged bytes";
  EXPECT_TRUE(landed < appended.size() &&
              now.compare(acked[first].size(), landed, appended, 0, landed) == 0)
      << "a failed append left " << landed << " bytes that are not a start of it";
  acked[first] = now;
  fd = open(first.c_str(), O_WRONLY);
  std::string patch = randomBytes(100000, 98);
  ASSERT_EQ(writeAll(fd, patch, 12345), 0);
  ASSERT_EQ(fsync(fd), 0);
  ASSERT_EQ(close(fd), 0);
  acked[first].replace(12345, patch.size(), patch);
  std::string out, errText;
  testing::writeFile(local("one-mib"), randomBytes(MIB, 97));
  EXPECT_NE(cluster->cli({"put", local("one-mib"), "/p"}, &out, &errText), 0);
  EXPECT_NE(errText.find("No space left on device"), std::string::npos) << errText;

  // A chunkserver killed and restarted while full comes back with everything.
  cluster->killChunkserver(1);
  cluster->startChunkserver(1);
  ASSERT_TRUE(waitFor(20, [&]() { return isLive(cluster->chunkserverAddress(1)); }));
  for (auto& [path, data] : acked) EXPECT_TRUE(readFile(path) == data) << path;

  // Deleting frees space, and writes work again without a restart.
  for (int f = 1; f <= 3; ++f) {
    std::string path = mnt + "/f" + std::to_string(f);
    ASSERT_EQ(unlink(path.c_str()), 0);
    acked.erase(path);
  }
  std::string fresh = randomBytes(2 * MIB, 96);
  EXPECT_TRUE(waitFor(30, [&]() {
    int f = open((mnt + "/again").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    bool ok = f >= 0 && writeAll(f, fresh, 0) == 0 && fsync(f) == 0;
    if (f >= 0) ok = close(f) == 0 && ok;
    return ok;
  })) << "writes do not work again once space is freed";
  EXPECT_TRUE(readFile(mnt + "/again") == fresh);
  for (auto& [path, data] : acked) EXPECT_TRUE(readFile(path) == data) << path;
  // Not one chunk lost a replica to the full disks.
  EXPECT_TRUE(waitFor(20, [&]() {
    auto h = json({"admin", "health", "--json"});
    return !h.is_null() && h["missing"] == 0 && h["corrupt"] == 0;
  })) << json({"admin", "health", "--json"}).dump();
}

TEST_F(DataSafetyTest, HolesStayHolesOnEveryReplica) {
  start(4, {}, {"--scrub-interval", "0.2"}, 4 * MIB);
  std::string mnt = cluster->mount();
  std::vector<uint64_t> before;
  for (size_t i = 0; i < 4; ++i) before.push_back(diskUse(cluster->chunkserverDataDir(i)));

  // One byte at 60 MiB: one chunk, a few blocks on each of its replicas.
  std::string sparse = mnt + "/sparse";
  int fd = open(sparse.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_EQ(writeAll(fd, "x", 60 * MIB + 7), 0);
  ASSERT_EQ(fsync(fd), 0);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(60 * MIB + 8));
  EXPECT_EQ(lseek(fd, 0, SEEK_DATA), static_cast<off_t>(60 * MIB));
  EXPECT_EQ(lseek(fd, 0, SEEK_HOLE), 0);
  EXPECT_EQ(lseek(fd, static_cast<off_t>(60 * MIB), SEEK_HOLE), static_cast<off_t>(60 * MIB + 8));
  ASSERT_EQ(close(fd), 0);
  std::string handle = handleOf("/sparse", 15);
  ASSERT_FALSE(handle.empty());
  auto replicas = holders("/sparse", 15);
  ASSERT_EQ(replicas.size(), 3u);
  for (auto& address : replicas) {
    size_t i = indexOf(address);
    EXPECT_LE(allocated(chunkFile(i, handle)), 16u << 10) << address;
    EXPECT_LE(diskUse(cluster->chunkserverDataDir(i)) - before[i], 64u << 10) << address;
  }

  // Re-replication copies only data: the new replica is as sparse.
  size_t gone = indexOf(*replicas.begin());
  cluster->killChunkserver(gone);
  ASSERT_TRUE(waitFor(30, [&]() {
    auto now = holders("/sparse", 15);
    return now.size() == 3 && !now.count(cluster->chunkserverAddress(gone)) && healthy();
  }));
  for (auto& address : holders("/sparse", 15)) {
    size_t i = indexOf(address);
    EXPECT_LE(allocated(chunkFile(i, handle)), 16u << 10) << "copy on " << address;
  }
  EXPECT_TRUE(readFile(sparse) == std::string(60 * MIB + 7, '\0') + "x");

  // PUNCH_HOLE frees the disk of whole blocks on every replica; ZERO_RANGE reads zeros.
  std::string dense = mnt + "/dense";
  std::string data = randomBytes(8 * MIB, 5);
  fd = open(dense.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_EQ(writeAll(fd, data, 0), 0);
  ASSERT_EQ(fsync(fd), 0);
  std::map<std::string, uint64_t> used;
  for (auto& address : holders("/dense", 0)) {
    used[address] = allocated(chunkFile(indexOf(address), handleOf("/dense", 0)));
  }
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MIB + 100, 2 * MIB), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_ZERO_RANGE, 6 * MIB, 10 * MIB), 0);
  std::string expected = data;
  std::fill(expected.begin() + MIB + 100, expected.begin() + 3 * MIB + 100, '\0');
  expected.resize(6 * MIB);
  expected.resize(16 * MIB, '\0');
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(16 * MIB));
  EXPECT_TRUE(preadAll(fd, 0, 16 * MIB) == expected);
  EXPECT_GE(lseek(fd, MIB + 100, SEEK_HOLE), static_cast<off_t>(MIB + 100));
  EXPECT_LE(lseek(fd, MIB + 100, SEEK_HOLE), static_cast<off_t>(2 * MIB));
  ASSERT_EQ(close(fd), 0);
  for (auto& [address, was] : used) {
    uint64_t now = allocated(chunkFile(indexOf(address), handleOf("/dense", 0)));
    EXPECT_LE(now + 2 * MIB - (128u << 10), was) << "punch freed too little on " << address;
  }
  EXPECT_TRUE(readFile(dense) == expected);
}

TEST_F(DataSafetyTest, CopiesAreMadeByTheChunkserversWithTheRightSize) {
  start(3);
  std::string mnt = cluster->mount();
  std::string data = randomBytes(5 * MIB + 333, 7);
  testing::writeFile(mnt + "/src", data);
  // Across chunk boundaries, at an offset that is not chunk-aligned, extending the file.
  int in = open((mnt + "/src").c_str(), O_RDONLY);
  int out = open((mnt + "/dst").c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  ASSERT_EQ(writeAll(out, "head", 0), 0);
  off_t inOff = 12345, outOff = 3 * MIB / 2;
  ssize_t n = copy_file_range(in, &inOff, out, &outOff, 10 * MIB, 0);
  ASSERT_EQ(n, static_cast<ssize_t>(data.size() - 12345));
  struct stat st;
  ASSERT_EQ(fstat(out, &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(3 * MIB / 2 + data.size() - 12345));
  std::string expected = "head" + std::string(3 * MIB / 2 - 4, '\0') + data.substr(12345);
  EXPECT_TRUE(preadAll(out, 0, expected.size() + 10) == expected);
  close(in);
  close(out);
  EXPECT_TRUE(readFile(mnt + "/dst") == expected);
  // The command line's cp takes the same path.
  std::string o, e;
  ASSERT_EQ(cluster->cli({"cp", "/src", "/copy"}, &o, &e), 0) << e;
  EXPECT_TRUE(cluster->get("/copy") == data);
  EXPECT_NE(cluster->cli({"cp", "/src", "/copy"}, &o, &e), 0);  // exists; -f to replace
  ASSERT_EQ(cluster->cli({"cp", "-f", "/dst", "/copy"}, &o, &e), 0) << e;
  EXPECT_TRUE(cluster->get("/copy") == expected);
}

TEST_F(DataSafetyTest, AFileUnlinkedWhileOpenLivesUntilItsLastClose) {
  for (const char* trash : {"0", "3600"}) {
    SCOPED_TRACE(std::string("--trash-seconds ") + trash);
    start(3, {"--trash-seconds", trash});
    std::string mnt = cluster->mount();
    std::string other = cluster->mount();
    std::string path = mnt + "/open";
    std::string data = randomBytes(3 * MIB + 5, 11);
    int fd = open(path.c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_EQ(writeAll(fd, data, 0), 0);
    ASSERT_EQ(fsync(fd), 0);
    uint64_t full = 0;
    for (size_t i = 0; i < 3; ++i) full += diskUse(cluster->chunkserverDataDir(i));
    ASSERT_EQ(unlink(path.c_str()), 0);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(st.st_nlink, 0u);
    EXPECT_EQ(st.st_size, static_cast<off_t>(data.size()));
    EXPECT_NE(access((other + "/open").c_str(), F_OK), 0);
    // Reads and writes go on; even a new mount's master session changes nothing.
    EXPECT_TRUE(preadAll(fd, 0, data.size()) == data);
    ASSERT_EQ(writeAll(fd, "tail", data.size()), 0);
    ASSERT_EQ(fsync(fd), 0);
    EXPECT_TRUE(preadAll(fd, 0, data.size() + 4) == data + "tail");
    std::this_thread::sleep_for(std::chrono::seconds(2));  // heartbeats: nothing deleted
    EXPECT_TRUE(preadAll(fd, 0, data.size() + 4) == data + "tail");
    ASSERT_EQ(close(fd), 0);
    if (std::string(trash) == "0") {
      // The last close deletes it: its chunks leave the chunkservers.
      EXPECT_TRUE(waitFor(20, [&]() {
        uint64_t now = 0;
        for (size_t i = 0; i < 3; ++i) now += diskUse(cluster->chunkserverDataDir(i));
        return now + 9 * MIB < full;
      }));
    } else {
      auto t = json({"trash", "ls", "--json"});
      ASSERT_FALSE(t.is_null());
      ASSERT_EQ(t.size(), 1u);
      EXPECT_EQ(t[0]["size"], data.size() + 4);
    }
    cluster.reset();
  }
}

TEST_F(DataSafetyTest, TheReplicationGoalHasOneRule) {
  start(4);
  std::string mnt = cluster->mount();
  testing::writeFile(mnt + "/f", randomBytes(3 * MIB, 3));
  ASSERT_EQ(setxattr((mnt + "/f").c_str(), "user.cairn.replication", "1", 1, 0), 0);
  EXPECT_TRUE(waitFor(20, [&]() {
    for (size_t c = 0; c < 3; ++c) {
      if (holders("/f", c).size() != 1) return false;
    }
    return true;
  })) << "surplus replicas stayed after setfattr";
  // Its chunks shared with a file of a higher goal (cp in the mount shares them) take the
  // higher one.
  ASSERT_EQ(mkdir((mnt + "/three").c_str(), 0755), 0);
  ASSERT_EQ(setxattr((mnt + "/three").c_str(), "user.cairn.replication", "3", 1, 0), 0);
  std::string out, err;
  ASSERT_EQ(cluster->run({"/bin/cp", mnt + "/f", mnt + "/three/f"}, &out, &err), 0) << err;
  ASSERT_EQ(handleOf("/three/f", 0), handleOf("/f", 0));
  EXPECT_TRUE(waitFor(20, [&]() {
    for (size_t c = 0; c < 3; ++c) {
      if (holders("/f", c).size() != 3) return false;
    }
    return true;
  })) << "shared chunks stayed at the lower goal";
  // A directory's goal passes to new files, and their chunks follow it.
  ASSERT_EQ(mkdir((mnt + "/two").c_str(), 0755), 0);
  ASSERT_EQ(setxattr((mnt + "/two").c_str(), "user.cairn.replication", "2", 1, 0), 0);
  testing::writeFile(mnt + "/two/g", randomBytes(2 * MIB, 4));
  char value[8] = {};
  ASSERT_GT(getxattr((mnt + "/two/g").c_str(), "user.cairn.replication", value, sizeof(value)), 0);
  EXPECT_STREQ(value, "2");
  EXPECT_EQ(holders("/two/g", 0).size(), 2u);
  // And raised again through the command line.
  std::string o, e;
  ASSERT_EQ(cluster->cli({"setrep", "4", "/two/g"}, &o, &e), 0) << e;
  EXPECT_TRUE(waitFor(20, [&]() { return holders("/two/g", 1).size() == 4; }));
  EXPECT_EQ(setxattr((mnt + "/f").c_str(), "user.cairn.replication", "zero", 4, 0), -1);
  EXPECT_EQ(errno, EINVAL);
}

}  // namespace
}  // namespace cairn
