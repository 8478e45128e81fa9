#pragma once
// The narrow file interface a chunkserver stores chunks through (after leveldb's Env).
// PosixDisk is the real one; MemDisk keeps files in memory for tests; tests wrap either to
// inject faults. Every call is synchronous and must run on a DiskPool thread, never on an
// event loop. Implementations are thread-safe.

#include <cstdint>
#include <map>
#include <mutex>
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
  virtual Status read(const std::string& path, uint64_t offset, size_t size,
                      std::string& out) = 0;
  // Writes at `offset`, creating the file if `create`; noSpace when the disk is full.
  virtual Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
                       bool create) = 0;
  virtual Status truncate(const std::string& path, uint64_t size) = 0;
  virtual Status sync(const std::string& path) = 0;
  virtual Status remove(const std::string& path) = 0;
  virtual Result<uint64_t> size(const std::string& path) = 0;
  virtual Status makeDirs(const std::string& path) = 0;
  // Names (not paths) in directory `path`; notFound if it does not exist.
  virtual Status list(const std::string& path, std::vector<std::string>& names) = 0;
  virtual Result<DiskSpace> space(const std::string& path) = 0;
};

class PosixDisk final : public Disk {
 public:
  Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) override;
  Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
               bool create) override;
  Status truncate(const std::string& path, uint64_t size) override;
  Status sync(const std::string& path) override;
  Status remove(const std::string& path) override;
  Result<uint64_t> size(const std::string& path) override;
  Status makeDirs(const std::string& path) override;
  Status list(const std::string& path, std::vector<std::string>& names) override;
  Result<DiskSpace> space(const std::string& path) override;
};

// Files in memory, directories implied by paths. capacityBytes bounds the total size.
class MemDisk final : public Disk {
 public:
  explicit MemDisk(uint64_t capacityBytes = uint64_t{1} << 40) : capacity(capacityBytes) {}
  Status read(const std::string& path, uint64_t offset, size_t size, std::string& out) override;
  Status write(const std::string& path, uint64_t offset, const void* data, size_t size,
               bool create) override;
  Status truncate(const std::string& path, uint64_t size) override;
  Status sync(const std::string& path) override;
  Status remove(const std::string& path) override;
  Result<uint64_t> size(const std::string& path) override;
  Status makeDirs(const std::string& path) override;
  Status list(const std::string& path, std::vector<std::string>& names) override;
  Result<DiskSpace> space(const std::string& path) override;

 private:
  uint64_t used() const;
  std::mutex mutex;
  uint64_t capacity;
  std::map<std::string, std::string> files;
};

}  // namespace cairn
