#pragma once
// The narrow file interface a chunkserver stores chunks through (after leveldb's Env).
// PosixDisk is the real one; test_disks.h has those for tests (in memory, and failing on
// demand). Every call is synchronous and must run on a
// DiskPool thread, never on an event loop, except readNow(), which never waits.
// Implementations are thread-safe.
//
// Files are sparse: bytes never written read as zeros and take no space. A call that
// fails with noSpace changed nothing (a write reserves its blocks before it copies a
// byte, see allocate()); any other failed write may have written a prefix.

#include <atomic>
#include <cstdint>
#include <memory>
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
  explicit PosixDisk(bool dropBehind = false);
  ~PosixDisk() override;
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
  class OpenFiles;
  // The file at `path`, opened for reading and writing, from `files` or opened now; null
  // with errno set if it cannot be opened.
  std::shared_ptr<const int> fileAt(const std::string& path);

  std::atomic<bool> nowUnsupported{false};
  std::atomic<bool> dropBehind;
  // Files kept open between calls: a chunk read otherwise opens its file twice (checksum
  // records, then data), and the opens cost more than the reads of a small one.
  std::unique_ptr<OpenFiles> files;
};

}  // namespace cairn
