#pragma once
// Disks for tests: MemDisk keeps sparse files in memory; FaultyDisk wraps any Disk to fail
// or stall chosen calls, for tests of the paths that handle them.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "disk.h"

namespace cairn {

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
