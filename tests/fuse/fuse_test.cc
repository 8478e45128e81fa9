// cairn-mount through real system calls: random operations against a local file (fsx),
// a tree of every kind of entry against the local disk, two mounts, permissions, extended
// attributes, and a master that goes away and comes back.

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "cluster.h"

namespace cairn {
namespace {

using testing::ProcessCluster;
using testing::randomBytes;
using testing::readFile;

constexpr uint64_t MIB = 1 << 20;

class FuseTest : public ::testing::Test {
 protected:
  void start(const std::string& mountOptions = "") {
    cluster = std::make_unique<ProcessCluster>(MIB);
    cluster->startMaster();
    for (size_t i = 0; i < 3; ++i) cluster->startChunkserver(i);
    cluster->waitForLiveChunkservers(3);
    chmod(cluster->dir().c_str(), 0755);  // other users must reach the mount point
    mnt = cluster->mount(mountOptions);
    local = cluster->dir() + "/local";
    std::filesystem::create_directories(local);
  }
  std::unique_ptr<ProcessCluster> cluster;
  std::string mnt;
  std::string local;
};

std::string preadAll(int fd) {
  struct stat st;
  fstat(fd, &st);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

// fsx: the same random writes, truncates, reads and reopenings on a file in the mount and
// on the local disk, compared after every step. A failure prints the seed and the step.
void runFsx(const std::string& mounted, const std::string& reference, uint64_t seed, int steps) {
  std::mt19937_64 rng(seed);
  const uint64_t maxSize = 3 * MIB + 4321;
  int a = open(mounted.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  int b = open(reference.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  std::string log;
  for (int step = 0; step < steps; ++step) {
    int op = static_cast<int>(rng() % 100);
    char what[128];
    if (op < 45) {  // write
      uint64_t off = rng() % maxSize;
      size_t len = static_cast<size_t>(1 + rng() % (op < 5 ? 1500000 : 70000));
      len = static_cast<size_t>(std::min<uint64_t>(len, maxSize - off));
      std::string data = randomBytes(len, rng());
      snprintf(what, sizeof(what), "write %zu at %llu", len, (unsigned long long)off);
      ASSERT_EQ(pwrite(a, data.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len))
          << "seed " << seed << " step " << step << ": " << what << " errno " << errno;
      ASSERT_EQ(pwrite(b, data.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    } else if (op < 60) {  // truncate, up or down
      uint64_t size = rng() % maxSize;
      snprintf(what, sizeof(what), "truncate to %llu", (unsigned long long)size);
      ASSERT_EQ(ftruncate(a, static_cast<off_t>(size)), 0)
          << "seed " << seed << " step " << step << ": " << what << " errno " << errno;
      ASSERT_EQ(ftruncate(b, static_cast<off_t>(size)), 0);
    } else if (op < 85) {  // read a range
      uint64_t off = rng() % maxSize;
      size_t len = static_cast<size_t>(1 + rng() % 300000);
      std::string x(len, '\0'), y(len, '\0');
      ssize_t nx = pread(a, x.data(), len, static_cast<off_t>(off));
      ssize_t ny = pread(b, y.data(), len, static_cast<off_t>(off));
      snprintf(what, sizeof(what), "read %zu at %llu", len, (unsigned long long)off);
      ASSERT_EQ(nx, ny) << "seed " << seed << " step " << step << ": " << what;
      ASSERT_TRUE(x == y) << "seed " << seed << " step " << step << ": " << what;
    } else if (op < 95) {  // close and reopen (close-to-open: read afresh from the cluster)
      bool trunc = rng() % 4 == 0;
      snprintf(what, sizeof(what), "reopen%s", trunc ? " with O_TRUNC" : "");
      ASSERT_EQ(close(a), 0) << "seed " << seed << " step " << step << ": close errno " << errno;
      close(b);
      a = open(mounted.c_str(), O_RDWR | (trunc ? O_TRUNC : 0));
      b = open(reference.c_str(), O_RDWR | (trunc ? O_TRUNC : 0));
      ASSERT_GE(a, 0);
    } else {
      snprintf(what, sizeof(what), "fsync");
      ASSERT_EQ(fsync(a), 0) << "seed " << seed << " step " << step << ": fsync errno " << errno;
    }
    struct stat sa, sb;
    fstat(a, &sa);
    fstat(b, &sb);
    ASSERT_EQ(sa.st_size, sb.st_size) << "seed " << seed << " step " << step << " after " << what;
    if (op >= 85 || step % 10 == 0) {
      ASSERT_TRUE(preadAll(a) == preadAll(b))
          << "seed " << seed << " step " << step << ": contents differ after " << what;
    }
  }
  close(a);
  close(b);
  // One last look from a fresh open.
  EXPECT_TRUE(readFile(mounted) == readFile(reference)) << "seed " << seed;
}

TEST_F(FuseTest, FsxRandomOperationsMatchTheLocalDisk) {
  start("attr_timeout=1");
  for (uint64_t seed : {1, 2, 3}) {
    runFsx(mnt + "/fsx" + std::to_string(seed), local + "/fsx" + std::to_string(seed), seed, 1200);
    if (HasFatalFailure()) return;
  }
}

struct Node {
  char type;  // f d l p
  mode_t mode;
  nlink_t nlink;
  off_t size;
  std::string content;  // file bytes or symlink target
};

std::map<std::string, Node> walk(const std::string& root) {
  std::map<std::string, Node> out;
  for (auto& e : std::filesystem::recursive_directory_iterator(root)) {
    std::string rel = e.path().string().substr(root.size());
    struct stat st;
    lstat(e.path().c_str(), &st);
    Node n{'?', st.st_mode & 07777, st.st_nlink, st.st_size, ""};
    if (S_ISREG(st.st_mode)) {
      n.type = 'f';
      n.content = readFile(e.path());
    } else if (S_ISDIR(st.st_mode)) {
      n.type = 'd';
      n.size = 0;  // directory sizes differ between file systems
    } else if (S_ISLNK(st.st_mode)) {
      n.type = 'l';
      n.content = std::filesystem::read_symlink(e.path()).string();
    } else if (S_ISFIFO(st.st_mode)) {
      n.type = 'p';
    }
    out[rel] = n;
  }
  return out;
}

// The same script on any root; returns the errno of each step that should fail.
std::vector<int> buildTree(const std::string& r) {
  std::vector<int> errors;
  auto expectFail = [&](int rc) { errors.push_back(rc == 0 ? 0 : errno); };
  auto put = [&](const std::string& p, const std::string& data) {
    int fd = open((r + p).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0640);
    (void)!write(fd, data.data(), data.size());
    close(fd);
  };
  mkdir((r + "/a").c_str(), 0755);
  mkdir((r + "/a/b").c_str(), 0700);
  mkdir((r + "/a/b/c").c_str(), 0755);
  put("/a/one", "first file\n");
  put("/a/b/two", randomBytes(2 * MIB + 17, 2));
  put("/a/b/c/three", "");
  put("/top", randomBytes(5000, 3));
  symlink("one", (r + "/a/link-one").c_str());
  symlink("/nowhere/at/all", (r + "/dangling").c_str());
  link((r + "/a/one").c_str(), (r + "/a/b/hard-one").c_str());
  link((r + "/top").c_str(), (r + "/top2").c_str());
  link((r + "/top").c_str(), (r + "/a/top3").c_str());
  unlink((r + "/top2").c_str());                             // nlink 3 -> 2
  rename((r + "/a/b/c").c_str(), (r + "/moved-c").c_str());  // a directory
  put("/victim", "to be replaced");
  rename((r + "/a/one").c_str(), (r + "/victim").c_str());  // replaces a file
  chmod((r + "/a/b/two").c_str(), 0604);
  mkfifo((r + "/fifo").c_str(), 0622);
  mkdir((r + "/gone").c_str(), 0755);
  put("/gone/x", "x");
  unlink((r + "/gone/x").c_str());
  rmdir((r + "/gone").c_str());
  truncate((r + "/a/b/two").c_str(), MIB + 3);
  // Errors, as a local file system gives them.
  expectFail(mkdir((r + "/a").c_str(), 0755));                         // EEXIST
  expectFail(rmdir((r + "/a").c_str()));                               // ENOTEMPTY
  expectFail(unlink((r + "/a").c_str()));                              // EISDIR
  expectFail(mkdir((r + "/top/x").c_str(), 0755));                     // ENOTDIR
  expectFail(open((r + "/nope/x").c_str(), O_RDONLY) >= 0 ? 0 : -1);   // ENOENT
  expectFail(mkdir((r + "/" + std::string(256, 'n')).c_str(), 0755));  // ENAMETOOLONG
  expectFail(open((r + "/top").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644) >= 0 ? 0 : -1);
  expectFail(rename((r + "/a").c_str(), (r + "/a/b/inside").c_str()));  // EINVAL
  expectFail(rename((r + "/moved-c").c_str(), (r + "/top").c_str()));   // ENOTDIR
  expectFail(rename((r + "/top").c_str(), (r + "/a").c_str()));         // EISDIR
  expectFail(renameat2(AT_FDCWD, (r + "/top").c_str(), AT_FDCWD, (r + "/victim").c_str(),
                       RENAME_NOREPLACE));                        // EEXIST
  expectFail(link((r + "/a").c_str(), (r + "/a-link").c_str()));  // EPERM
  return errors;
}

TEST_F(FuseTest, TreeMatchesTheLocalDisk) {
  start();
  auto mountedErrors = buildTree(mnt);
  auto localErrors = buildTree(local);
  EXPECT_EQ(mountedErrors, localErrors);
  auto mine = walk(mnt), theirs = walk(local);
  ASSERT_EQ(mine.size(), theirs.size());
  for (auto& [path, n] : theirs) {
    ASSERT_TRUE(mine.count(path)) << path;
    auto& m = mine[path];
    EXPECT_EQ(m.type, n.type) << path;
    EXPECT_EQ(m.mode, n.mode) << path;
    EXPECT_EQ(m.nlink, n.nlink) << path;
    EXPECT_EQ(m.size, n.size) << path;
    EXPECT_TRUE(m.content == n.content) << path;
  }
}

TEST_F(FuseTest, TwoMountsSeeEachOthersClosedFiles) {
  start("attr_timeout=0.2,entry_timeout=0.2");
  std::string other = cluster->mount("attr_timeout=0.2,entry_timeout=0.2");
  std::string data = randomBytes(3 * MIB + 5, 9);
  {
    int fd = open((mnt + "/shared").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(close(fd), 0);
  }
  EXPECT_TRUE(readFile(other + "/shared") == data);
  // Append on the other mount; the first sees it after close and a new open.
  {
    int fd = open((other + "/shared").c_str(), O_WRONLY | O_APPEND);
    ASSERT_EQ(write(fd, "tail", 4), 4);
    ASSERT_EQ(fsync(fd), 0);
    ASSERT_EQ(close(fd), 0);
  }
  // The first mount sees it once its attribute cache (0.2 s) lapses: wait for that, 5 s at most.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    seen = readFile(mnt + "/shared") == data + "tail";
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(seen);
  // The CLI, a third client, agrees.
  std::string out;
  ASSERT_EQ(cluster->cli({"stat", "--json", "/shared"}, &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["size"], data.size() + 4);
}

TEST_F(FuseTest, AMissingNameIsCachedForNegativeTimeout) {
  // One mount keeps absences 30 s, one 0 s, one as its entry_timeout (0.3 s); none is told
  // of changes by the master (cache_timeout=0), so each keeps an absence its time.
  start("negative_timeout=30,cache_timeout=0");
  std::string none = cluster->mount("negative_timeout=0,cache_timeout=0");
  std::string brief = cluster->mount("entry_timeout=0.3,cache_timeout=0");
  struct stat st;
  auto exists = [&](const std::string& path) { return stat(path.c_str(), &st) == 0; };
  for (auto& m : {mnt, none, brief}) {
    ASSERT_FALSE(exists(m + "/later"));
    ASSERT_EQ(errno, ENOENT);
  }
  std::string err;
  ASSERT_EQ(cluster->cli({"mkdir", "/later"}, nullptr, &err), 0) << err;
  EXPECT_TRUE(exists(none + "/later"));  // asked again
  EXPECT_FALSE(exists(mnt + "/later"));  // the absence is kept
  EXPECT_EQ(errno, ENOENT);
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    seen = exists(brief + "/later");
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(seen) << "an absence outlived entry_timeout";
  // What the mount itself makes replaces a kept absence at once, whatever the call.
  for (std::string name : {"made", "dir", "link", "renamed", "hard"}) {
    ASSERT_FALSE(exists(mnt + "/" + name)) << name;
  }
  int fd = open((mnt + "/made").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(close(fd), 0);
  ASSERT_EQ(mkdir((mnt + "/dir").c_str(), 0755), 0);
  ASSERT_EQ(symlink("made", (mnt + "/link").c_str()), 0);
  ASSERT_EQ(link((mnt + "/made").c_str(), (mnt + "/hard").c_str()), 0);
  ASSERT_EQ(rename((mnt + "/dir").c_str(), (mnt + "/renamed").c_str()), 0);
  for (std::string name : {"made", "link", "renamed", "hard"}) {
    EXPECT_TRUE(exists(mnt + "/" + name)) << name;
  }
  EXPECT_FALSE(exists(mnt + "/dir"));
}

// Mounts the master tells of changes keep names, absences and attributes for long
// (cache_timeout, 60 s here) and still see every change another client makes within
// moments: a name made or removed, a mode, a size, a name in a directory whose names the
// mount knows (and answers absences in itself). A master that restarts tells nothing of
// what changed while it was gone: the mount drops everything it kept.
TEST_F(FuseTest, WatchedMountsSeeOtherClientsChangesAtOnce) {
  start();
  std::string other = cluster->mount();
  struct stat st;
  auto exists = [&](const std::string& path) { return stat(path.c_str(), &st) == 0; };
  // Within 5 s, far less than the 60 s the kernel may keep what it was given.
  auto soon = [&](const std::function<bool()>& seen) {
    for (int i = 0; i < 100; ++i) {
      if (seen()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  auto cli = [&](std::vector<std::string> args) {
    std::string err;
    ASSERT_EQ(cluster->cli(args, nullptr, &err), 0) << err;
  };
  auto answered = [&](const std::string& method) {
    return cluster->masterSample("cairn_master_requests_total{method=\"" + method +
                                 "\",result=\"ok\"}");
  };
  ASSERT_TRUE(soon([&]() { return exists(mnt) && exists(other); }));
  ASSERT_TRUE(soon([&]() { return answered("watch") >= 2; })) << "the mounts are not watched";

  // A name another client makes, where an absence was kept.
  ASSERT_FALSE(exists(mnt + "/later"));
  cli({"mkdir", "/later"});
  EXPECT_TRUE(soon([&]() { return exists(mnt + "/later"); })) << "an absence outlived a mkdir";

  // Mode and size changed on the other mount; the name removed there.
  testing::writeFile(mnt + "/f", "abc");
  ASSERT_TRUE(exists(other + "/f"));
  ASSERT_EQ(st.st_size, 3);
  ASSERT_EQ(chmod((mnt + "/f").c_str(), 0600), 0);
  EXPECT_TRUE(soon([&]() { return exists(other + "/f") && (st.st_mode & 07777) == 0600; }));
  int fd = open((mnt + "/f").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "defg", 4), 4);
  ASSERT_EQ(close(fd), 0);
  EXPECT_TRUE(soon([&]() { return exists(other + "/f") && st.st_size == 7; }));
  ASSERT_EQ(unlink((other + "/f").c_str()), 0);
  EXPECT_TRUE(soon([&]() { return !exists(mnt + "/f"); }));
  // A name this mount gave by renaming, removed elsewhere.
  testing::writeFile(mnt + "/g", "g");
  ASSERT_EQ(rename((mnt + "/g").c_str(), (mnt + "/h").c_str()), 0);
  ASSERT_TRUE(exists(mnt + "/h"));
  ASSERT_EQ(unlink((other + "/h").c_str()), 0);
  EXPECT_TRUE(soon([&]() { return !exists(mnt + "/h"); })) << "a renamed name outlived its unlink";

  // A directory whose names the mount learnt after a miss: absences are answered by the
  // mount, yet a name made by another client is seen.
  ASSERT_EQ(mkdir((mnt + "/known").c_str(), 0755), 0);
  double listed = answered("readdir");
  EXPECT_FALSE(exists(mnt + "/known/a"));
  ASSERT_TRUE(soon([&]() { return answered("readdir") > listed; })) << "its names were not learnt";
  for (int i = 0; i < 20; ++i) {
    testing::writeFile(mnt + "/known/mine" + std::to_string(i), "x");
  }
  EXPECT_FALSE(exists(mnt + "/known/b"));
  cli({"mkdir", "/known/b"});
  EXPECT_TRUE(soon([&]() { return exists(mnt + "/known/b"); }));
  EXPECT_TRUE(exists(other + "/known/mine19"));

  // The master restarts: what changes meanwhile was never told, and is seen anyway.
  ASSERT_FALSE(exists(mnt + "/while"));
  ASSERT_FALSE(exists(mnt + "/known/while"));
  cluster->killMaster(SIGKILL);
  cluster->startMaster();
  cli({"mkdir", "/while"});
  cli({"mkdir", "/known/while"});
  EXPECT_TRUE(soon([&]() { return exists(mnt + "/while"); }));
  EXPECT_TRUE(soon([&]() { return exists(mnt + "/known/while"); }));
}

TEST_F(FuseTest, AStoppedMasterFailsWithinTheBoundAndRecovers) {
  start("attr_timeout=0,entry_timeout=0");
  ASSERT_EQ(mkdir((mnt + "/d").c_str(), 0755), 0);
  cluster->killMaster(SIGKILL);
  struct stat st;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(stat((mnt + "/d").c_str(), &st), 0);
  EXPECT_EQ(errno, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  cluster->startMaster();  // same address
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    back = stat((mnt + "/d").c_str(), &st) == 0;
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(FuseTest, AHungMasterFailsWithinTheBound) {
  start("attr_timeout=0,entry_timeout=0");
  ASSERT_EQ(mkdir((mnt + "/d").c_str(), 0755), 0);
  // SIGSTOP the master: connections stay open, answers never come.
  pid_t master = 0;
  for (auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string cmd = readFile(entry.path().string() + "/cmdline");
    if (cmd.find(cluster->dir() + "/master") != std::string::npos &&
        cmd.find("cairn-master") != std::string::npos) {
      master = static_cast<pid_t>(std::stol(entry.path().filename().string()));
    }
  }
  ASSERT_GT(master, 0);
  kill(master, SIGSTOP);
  struct stat st;
  auto t0 = std::chrono::steady_clock::now();
  int rc = stat((mnt + "/d").c_str(), &st);
  int err = errno;
  auto took = std::chrono::steady_clock::now() - t0;
  kill(master, SIGCONT);
  EXPECT_NE(rc, 0);
  EXPECT_EQ(err, EIO);
  EXPECT_LT(took, std::chrono::seconds(10));
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    back = stat((mnt + "/d").c_str(), &st) == 0;
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
}

// Runs `fn` as uid/gid 65534 in a child; returns its errno result (0 for success).
int asNobody(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    gid_t groups[] = {65534};
    if (setgroups(1, groups) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(250);
    _exit(fn() == 0 ? 0 : errno);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WEXITSTATUS(status);
}

TEST_F(FuseTest, PermissionsAreCheckedAsOnALocalFileSystem) {
  start();
  std::string priv = mnt + "/private";
  int fd = open(priv.c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_EQ(write(fd, "secret", 6), 6);
  close(fd);
  EXPECT_EQ(asNobody([&]() { return open(priv.c_str(), O_RDONLY) >= 0 ? 0 : -1; }), EACCES);
  chmod(priv.c_str(), 0644);
  EXPECT_EQ(asNobody([&]() { return open(priv.c_str(), O_RDONLY) >= 0 ? 0 : -1; }), 0);
  EXPECT_EQ(asNobody([&]() { return open(priv.c_str(), O_WRONLY) >= 0 ? 0 : -1; }), EACCES);
  EXPECT_EQ(asNobody([&]() { return chmod(priv.c_str(), 0777); }), EPERM);
  // A sticky, world-writable directory: others may create, but not delete root's files.
  std::string tmp = mnt + "/tmp";
  mkdir(tmp.c_str(), 01777);
  chmod(tmp.c_str(), 01777);
  int rootFile = open((tmp + "/roots").c_str(), O_WRONLY | O_CREAT, 0666);
  close(rootFile);
  EXPECT_EQ(asNobody([&]() {
              int f = open((tmp + "/mine").c_str(), O_WRONLY | O_CREAT, 0644);
              return f >= 0 ? close(f) : -1;
            }),
            0);
  EXPECT_EQ(asNobody([&]() { return unlink((tmp + "/roots").c_str()); }), EPERM);
  EXPECT_EQ(asNobody([&]() { return unlink((tmp + "/mine").c_str()); }), 0);
  struct stat st;
  // setgid directories pass their group down, and their bit to subdirectories.
  std::string sg = mnt + "/sg";
  mkdir(sg.c_str(), 0777);
  chown(sg.c_str(), 0, 4242);
  chmod(sg.c_str(), 02777);
  EXPECT_EQ(asNobody([&]() { return mkdir((sg + "/sub").c_str(), 0755); }), 0);
  ASSERT_EQ(stat((sg + "/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 4242u);
  EXPECT_TRUE(st.st_mode & S_ISGID);
  EXPECT_EQ(st.st_uid, 65534u);
  // Root is root.
  EXPECT_EQ(chmod(priv.c_str(), 0), 0);
  EXPECT_GE(open(priv.c_str(), O_RDONLY), 0);
}

TEST_F(FuseTest, AttributesTimesSpecialFilesAndCapacity) {
  start();
  std::string f = mnt + "/f";
  int fd = open(f.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  close(fd);
  // Extended attributes.
  ASSERT_EQ(setxattr(f.c_str(), "user.color", "blue", 4, 0), 0);
  char buf[4096];
  ASSERT_EQ(getxattr(f.c_str(), "user.color", buf, sizeof(buf)), 4);
  EXPECT_EQ(std::string(buf, 4), "blue");
  EXPECT_EQ(setxattr(f.c_str(), "user.color", "red", 3, XATTR_CREATE), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(getxattr(f.c_str(), "user.missing", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);
  ssize_t n = listxattr(f.c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  std::string names(buf, static_cast<size_t>(n));
  EXPECT_NE(names.find("user.color"), std::string::npos);
  EXPECT_NE(names.find("user.cairn.replication"), std::string::npos);
  ASSERT_EQ(removexattr(f.c_str(), "user.color"), 0);
  EXPECT_EQ(getxattr(f.c_str(), "user.color", buf, sizeof(buf)), -1);
  // The replication goal and the chunk map.
  n = getxattr(f.c_str(), "user.cairn.replication", buf, sizeof(buf));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "3");
  ASSERT_EQ(setxattr(f.c_str(), "user.cairn.replication", "2", 1, 0), 0);
  n = getxattr(f.c_str(), "user.cairn.replication", buf, sizeof(buf));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "2");
  n = getxattr(f.c_str(), "user.cairn.chunks", buf, sizeof(buf));
  ASSERT_GT(n, 0);
  auto chunks = nlohmann::json::parse(std::string(buf, static_cast<size_t>(n)));
  ASSERT_EQ(chunks["chunks"].size(), 1u);
  EXPECT_EQ(chunks["chunks"][0]["replicas"].size(), 3u);
  EXPECT_NE(chunks["chunks"][0]["replicas"][0]["address"].get<std::string>().find("127.0.0."),
            std::string::npos);
  // Nanosecond times.
  timespec times[2] = {{1000, 123456789}, {2000, 987654321}};
  ASSERT_EQ(utimensat(AT_FDCWD, f.c_str(), times, 0), 0);
  struct stat st;
  ASSERT_EQ(stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 987654321);
  EXPECT_EQ(st.st_atim.tv_nsec, 123456789);
  // Special files are metadata.
  ASSERT_EQ(mknod((mnt + "/dev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  ASSERT_EQ(stat((mnt + "/dev").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  ASSERT_EQ(mknod((mnt + "/sock").c_str(), S_IFSOCK | 0600, 0), 0);
  // fallocate extends; sparse bytes read as zeros.
  fd = open(f.c_str(), O_RDWR);
  ASSERT_EQ(fallocate(fd, 0, 0, 5 * MIB), 0);
  fstat(fd, &st);
  EXPECT_EQ(st.st_size, static_cast<off_t>(5 * MIB));
  char tail[4] = {1, 1, 1, 1};
  ASSERT_EQ(pread(fd, tail, 4, 4 * MIB), 4);
  EXPECT_EQ(std::string(tail, 4), std::string(4, '\0'));
  close(fd);
  // statfs reports the chunkservers' capacity.
  struct statvfs vfs;
  ASSERT_EQ(statvfs(mnt.c_str(), &vfs), 0);
  EXPECT_GT(vfs.f_blocks, 0u);
  EXPECT_EQ(vfs.f_namemax, 255u);
}

}  // namespace
}  // namespace cairn
