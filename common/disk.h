#pragma once
// The narrow file interface a chunkserver stores chunks through (after leveldb's Env).
// PosixDisk is the real one; MemDisk keeps sparse files in memory for tests; FaultyDisk
// wraps either to fail calls on demand. Every call is synchronous and must run on a
// DiskPool thread, never on an event loop, except readNow(), which never waits.
// Implementations are thread-safe.
//
// Files are sparse: bytes never written read as zeros and take no space. A call that
// fails with noSpace changed nothing (a write reserves its blocks before it copies a
// byte, see allocate()); any other failed write may have written a prefix.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "status.h"

namespace cairn {

struct DiskSpace {
  uint64_t capacityBytes = 0;
  uint64_t freeBytes = 0;
};

class Disk {
 public:
  virtual ~Disk() = default;
  // Reads up to `size` bytes at `offset`; fewer at end of file. notFound if no file.
  virtual Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) = 0;
  // read() if it can be done at once from memory (the page cache); nullopt where it would
  // wait for the disk, or where this disk cannot tell (then the caller goes to read() on a
  // pool thread). Never blocks: the one call an event loop may make.
  virtual std::optional<Status> readNow(const std::string& path, uint64_t offset, size_t size,
                                        std::string& out) {
    (void)path, (void)offset, (void)size, (void)out;
    return std::nullopt;
  }
  // Writes at `offset`, creating the file if `create`; noSpace when the disk is full.
  virtual Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
                       bool create) = 0;
  // write() to an existing file, of bytes that need not stay in memory once they are on
  // disk (whole blocks of a chunk's data, which a client reads once if at all). A disk may
  // drop them from its cache behind the write (PosixDisk); the rest write as write() does.
  // The file's first `ahead` bytes (what describes these: a chunk's checksum records) reach
  // the disk before them, as they would have if both had waited for writeback.
  virtual Status writeUncached(const std::string& path, uint64_t offset, const void* data,
                               size_t size, uint64_t ahead) {
    (void)ahead;
    return write(path, offset, data, size, false);
  }
  // Sets the file's size: cut, or extended with a hole.
  virtual Status truncate(const std::string& path, uint64_t size) = 0;
  // Reserves the blocks of [offset, offset+size) without changing the file's size or
  // contents (fallocate with KEEP_SIZE), so that a later write there cannot fail for
  // space. noSpace if the disk cannot hold them; OK (reserving nothing) where the file
  // system cannot reserve.
  virtual Status allocate(const std::string& path, uint64_t offset, uint64_t size) = 0;
  // Makes [offset, offset+size) read as zeros and frees its whole blocks; the size stays.
  virtual Status punchHole(const std::string& path, uint64_t offset, uint64_t size) = 0;
  virtual Status sync(const std::string& path) = 0;
  virtual Status remove(const std::string& path) = 0;
  // Atomically replaces `to` with `from`.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Result<uint64_t> size(const std::string& path) = 0;
  // Bytes of disk the file occupies (st_blocks), which a sparse file keeps below its size.
  virtual Result<uint64_t> allocated(const std::string& path) = 0;
  virtual Status makeDirs(const std::string& path) = 0;
  // Names (not paths) in directory `path`; notFound if it does not exist.
  virtual Status list(const std::string& path, std::vector<std::string>& names) = 0;
  virtual Result<DiskSpace> space(const std::string& path) = 0;
};

class PosixDisk final : public Disk {
 public:
  // `dropBehind`: writeUncached() asks the kernel to drop what it wrote from the page cache
  // once it is on disk (pwritev2's RWF_DONTCACHE, Linux 6.14 and later; HDFS's
  // drop-cache-behind-writes). Pages that leave at once are used again at once: writing
  // into pages new to the cache costs several times the CPU, and a chunkserver that keeps
  // every byte it wrote pushes out what its readers read. A kernel or file system without
  // it turns it off for good, for every file this disk writes, with one line in the log.
  explicit PosixDisk(bool dropBehind = false) : dropBehind(dropBehind) {}
  Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) override;
  // The path resolved from the dentry cache alone (openat2 RESOLVE_CACHED), the bytes read
  // from the page cache alone (preadv2 RWF_NOWAIT), and no access time written
  // (O_NOATIME: its update may wait for the journal). A kernel or file system that cannot
  // do one of these turns readNow off for good (nullopt every time, no system call).
  std::optional<Status> readNow(const std::string& path, uint64_t offset, size_t size,
                                std::string& out) override;
  Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
               bool create) override;
  Status writeUncached(const std::string& path, uint64_t offset, const void* data, size_t size,
                       uint64_t ahead) override;
  // Whether writeUncached() drops what it writes: asked for, and not refused so far.
  bool dropsBehind() const { return dropBehind.load(std::memory_order_relaxed); }
  Status truncate(const std::string& path, uint64_t size) override;
  Status allocate(const std::string& path, uint64_t offset, uint64_t size) override;
  Status punchHole(const std::string& path, uint64_t offset, uint64_t size) override;
  Status sync(const std::string& path) override;
  Status remove(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override;
  Result<uint64_t> size(const std::string& path) override;
  Result<uint64_t> allocated(const std::string& path) override;
  Status makeDirs(const std::string& path) override;
  Status list(const std::string& path, std::vector<std::string>& names) override;
  Result<DiskSpace> space(const std::string& path) override;

 private:
  std::atomic<bool> nowUnsupported{false};
  std::atomic<bool> dropBehind;
};

// Sparse files in memory, in 4 KiB pages, directories implied by paths. capacityBytes
// bounds the pages in use.
class MemDisk final : public Disk {
 public:
  static constexpr uint64_t PAGE = 4096;
  explicit MemDisk(uint64_t capacityBytes = uint64_t{1} << 40) : capacity(capacityBytes) {}
  Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) override;
  // Memory never waits, unless setCached(false) makes it act as a disk with a cold cache.
  std::optional<Status> readNow(const std::string& path, uint64_t offset, size_t size,
                                std::string& out) override;
  void setCached(bool cached);
  Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
               bool create) override;
  Status truncate(const std::string& path, uint64_t size) override;
  Status allocate(const std::string& path, uint64_t offset, uint64_t size) override;
  Status punchHole(const std::string& path, uint64_t offset, uint64_t size) override;
  Status sync(const std::string& path) override;
  Status remove(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override;
  Result<uint64_t> size(const std::string& path) override;
  Result<uint64_t> allocated(const std::string& path) override;
  Status makeDirs(const std::string& path) override;
  Status list(const std::string& path, std::vector<std::string>& names) override;
  Result<DiskSpace> space(const std::string& path) override;
  // Changes the capacity (a disk that fills up or is cleaned).
  void setCapacity(uint64_t bytes);

 private:
  struct File {
    uint64_t size = 0;
    std::map<uint64_t, std::string> pages;  // page index -> PAGE bytes
  };
  // Pages of [offset, offset+size) that `f` lacks.
  static uint64_t missingPages(const File& f, uint64_t offset, uint64_t size);
  std::mutex mutex;
  uint64_t capacity;
  uint64_t pagesInUse = 0;
  bool cached = true;
  std::map<std::string, File> files;
};

// Wraps a Disk and fails chosen calls, for tests of the paths that handle them.
class FaultyDisk final : public Disk {
 public:
  enum class Op { READ, WRITE, ALLOCATE, PUNCH, TRUNCATE, SYNC, REMOVE };
  explicit FaultyDisk(Disk& base) : base(base) {}
  // After `skip` more calls of `op` whose path contains `pathPart` succeed, the next
  // `count` fail with `code`. A failing WRITE first writes `prefixBytes` of its data (a
  // torn write).
  void failNext(Op op, int count, ErrorCode code, std::string pathPart = "", size_t prefixBytes = 0,
                int skip = 0);
  // The next call of `op` on a path containing `pathPart` waits inside the disk until
  // release(): a disk that hangs. stalled() says whether a call is waiting now.
  void stallNext(Op op, std::string pathPart = "");
  void release();
  bool stalled();
  void clear();

  Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) override;
  // Left to read() while any read is to fail or stall, so that a rule is met once, on the
  // pool.
  std::optional<Status> readNow(const std::string& path, uint64_t offset, size_t size,
                                std::string& out) override;
  Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
               bool create) override;
  // The same rules as write().
  Status writeUncached(const std::string& path, uint64_t offset, const void* data, size_t size,
                       uint64_t ahead) override;
  Status truncate(const std::string& path, uint64_t size) override;
  Status allocate(const std::string& path, uint64_t offset, uint64_t size) override;
  Status punchHole(const std::string& path, uint64_t offset, uint64_t size) override;
  Status sync(const std::string& path) override;
  Status remove(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override {
    return base.rename(from, to);
  }
  Result<uint64_t> size(const std::string& path) override { return base.size(path); }
  Result<uint64_t> allocated(const std::string& path) override { return base.allocated(path); }
  Status makeDirs(const std::string& path) override { return base.makeDirs(path); }
  Status list(const std::string& path, std::vector<std::string>& names) override {
    return base.list(path, names);
  }
  Result<DiskSpace> space(const std::string& path) override { return base.space(path); }

 private:
  struct Rule {
    Op op;
    int count;
    ErrorCode code;
    std::string pathPart;
    size_t prefixBytes;
    int skip;
  };
  // The rule that fails this call, consumed; null if none.
  std::optional<Rule> take(Op op, const std::string& path);
  // Waits while a stall set for this call holds.
  void pause(Op op, const std::string& path);
  // A write of `size` bytes by `write` (which writes the first n of them), under the rules.
  Status faultyWrite(const std::string& path, size_t size,
                     const std::function<Status(size_t bytes)>& write);
  Disk& base;
  std::mutex mutex;
  std::condition_variable released;
  std::vector<Rule> rules;
  std::optional<std::pair<Op, std::string>> stall;  // set, not yet met
  bool stalling = false;                            // a call waits in pause()
};

}  // namespace cairn
