#include "disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "log.h"

// Linux 6.14's uapi; Debian 12's headers predate it.
#ifndef RWF_DONTCACHE
#define RWF_DONTCACHE 0x00000080
#endif

namespace cairn {
namespace {

Status errnoStatus(const std::string& what, const std::string& path, int err) {
  std::string m = fmt::format("{} {}: {}", what, path, strerror(err));
  switch (err) {
    case ENOENT:
      return Status::notFound(m);
    case ENOSPC:
    case EDQUOT:
      return Status::noSpace(m);
    case EEXIST:
      return Status::alreadyExists(m);
    default:
      return Status::ioError(m);
  }
}

// Reads [offset, offset+size) of `fd` into `out`, short at the end of the file, with
// preadv2's `flags`; 0, or the errno of the read that failed.
int readAll(int fd, uint64_t offset, size_t size, std::string& out, int flags) {
  out.resize(size);
  size_t done = 0;
  while (done < size) {
    iovec iov{out.data() + done, size - done};
    ssize_t n = preadv2(fd, &iov, 1, static_cast<off_t>(offset + done), flags);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return 0;
}

// Writes all of `data` at `offset` with pwritev2's `flags`; 0, or the errno of the write
// that failed.
int writeAll(int fd, uint64_t offset, const void* data, size_t size, int flags) {
  auto p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    iovec iov{const_cast<char*>(p + done), size - done};
    ssize_t n = pwritev2(fd, &iov, 1, static_cast<off_t>(offset + done), flags);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    done += static_cast<size_t>(n);
  }
  return 0;
}

// Owns `fd`, closing it with the last reference; null if `fd` is negative.
std::shared_ptr<const int> owned(int fd) {
  if (fd < 0) return nullptr;
  return std::shared_ptr<const int>(new int(fd), [](const int* p) {
    close(*p);
    delete p;
  });
}

}  // namespace

// Open files by path, the most recently used kept. remove() and rename() forget the paths
// they change, so that no call reaches a file through a name it no longer has; a file
// opened while a name changed is used by its caller and not kept (`generation`).
class PosixDisk::OpenFiles {
 public:
  using File = std::shared_ptr<const int>;
  static constexpr size_t CAPACITY = 128;  // well under the usual limit of 1024 descriptors

  // The file kept for `path`, or null; and the generation to keep one opened now under.
  File find(const std::string& path, uint64_t& generationNow) {
    std::lock_guard<std::mutex> lock(mutex);
    generationNow = generation;
    auto it = byPath.find(path);
    if (it == byPath.end()) return nullptr;
    order.splice(order.begin(), order, it->second.second);
    return it->second.first;
  }

  // Keeps `file`, opened at `path` after find() gave `generationThen`, unless a name has
  // changed since.
  void keep(const std::string& path, File file, uint64_t generationThen) {
    File evicted;  // closed after the lock is let go
    std::lock_guard<std::mutex> lock(mutex);
    if (generationThen != generation || byPath.count(path)) return;
    if (byPath.size() >= CAPACITY) {
      auto last = byPath.find(order.back());
      evicted = std::move(last->second.first);
      byPath.erase(last);
      order.pop_back();
    }
    order.push_front(path);
    byPath.emplace(path, std::make_pair(std::move(file), order.begin()));
  }

  // After the file at `path` was removed, or renamed away or over.
  void forget(const std::string& path) {
    File forgotten;
    std::lock_guard<std::mutex> lock(mutex);
    ++generation;
    auto it = byPath.find(path);
    if (it == byPath.end()) return;
    forgotten = std::move(it->second.first);
    order.erase(it->second.second);
    byPath.erase(it);
  }

 private:
  std::mutex mutex;
  uint64_t generation = 0;
  std::list<std::string> order;  // most recently used first
  std::unordered_map<std::string, std::pair<File, std::list<std::string>::iterator>> byPath;
};

PosixDisk::PosixDisk(bool dropBehind)
    : dropBehind(dropBehind), files(std::make_unique<OpenFiles>()) {}

PosixDisk::~PosixDisk() = default;

std::shared_ptr<const int> PosixDisk::fileAt(const std::string& path) {
  uint64_t generation;
  if (auto kept = files->find(path, generation)) return kept;
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(path.c_str(), O_RDWR | O_CLOEXEC);  // not its owner
  if (fd < 0 && (errno == EACCES || errno == EROFS)) {
    // Readable only (a read-only file system, or mode): this call gets it, not kept; a
    // write through it fails (EBADF).
    return owned(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  auto file = owned(fd);
  if (file) files->keep(path, file, generation);
  return file;
}

Status PosixDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  auto file = fileAt(path);
  if (!file) return errnoStatus("open", path, errno);
  int err = readAll(*file, offset, size, out, 0);
  return err == 0 ? Status::OK() : errnoStatus("read", path, err);
}

std::optional<Status> PosixDisk::readNow(const std::string& path, uint64_t offset, size_t size,
                                         std::string& out) {
  // Any failure here (a name not cached, bytes not in memory, an error) leaves the read to
  // read(), which says what went wrong.
  if (nowUnsupported.load(std::memory_order_relaxed)) return std::nullopt;
  auto unsupported = [&](const char* what) -> std::optional<Status> {
    if (!nowUnsupported.exchange(true)) {
      logWarn("{} on {}: {}; every read goes to a disk thread", what, path, strerror(errno));
    }
    return std::nullopt;
  };
  uint64_t generation;
  auto file = files->find(path, generation);
  if (!file) {
    // Opened for reading only, and not kept: closing a file that was open for writing may
    // wait for the file system (ext4 drops its preallocations then), and keeping one may
    // close another. Files are kept by the calls on the disk threads.
    open_how how{};
    how.flags = O_RDONLY | O_CLOEXEC | O_NOATIME;
    how.resolve = RESOLVE_CACHED;
    file = owned(static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how)));
    if (!file) {
      // No openat2 or RESOLVE_CACHED (before Linux 5.12), or files this process does not own.
      if (errno == ENOSYS || errno == EINVAL || errno == EPERM) return unsupported("openat2");
      return std::nullopt;
    }
  }
  int err = readAll(*file, offset, size, out, RWF_NOWAIT);
  if (err == EOPNOTSUPP) {
    errno = err;
    return unsupported("preadv2 RWF_NOWAIT");
  }
  if (err != 0) return std::nullopt;  // EAGAIN: not all in the page cache
  return Status::OK();
}

Status PosixDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                        bool create) {
  std::shared_ptr<const int> file;
  if (create) {
    file = owned(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_CREAT, 0644));
    int err = errno;
    files->forget(path);  // a file kept under this name may have been removed by another
    errno = err;
  } else {
    file = fileAt(path);
  }
  if (!file) return errnoStatus("open", path, errno);
  int err = writeAll(*file, offset, data, size, 0);
  return err == 0 ? Status::OK() : errnoStatus("write", path, err);
}

Status PosixDisk::writeUncached(const std::string& path, uint64_t offset, const void* data,
                                size_t size, uint64_t ahead) {
  if (!dropBehind.load(std::memory_order_relaxed)) return write(path, offset, data, size, false);
  auto file = fileAt(path);
  if (!file) return errnoStatus("open", path, errno);
  // These bytes go to the disk at once; the first `ahead` bytes of the file (a chunk's
  // checksum records, which cover them) are on the disk first, so that a power cut does
  // not find them there without those. Only that range: earlier data in flight is not
  // waited for.
  if (ahead > 0 && sync_file_range(*file, 0, static_cast<off_t>(ahead),
                                   SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                       SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    return errnoStatus("write", path, errno);
  }
  int err = writeAll(*file, offset, data, size, RWF_DONTCACHE);
  // Refused before any byte is written: EOPNOTSUPP from a kernel before 6.14 or a file
  // system without it; the others from a sandbox that filters the call. A write that
  // fails plainly too is the disk's failure, and says so.
  if (err == EOPNOTSUPP || err == EINVAL || err == ENOSYS || err == EPERM) {
    int refused = err;
    err = writeAll(*file, offset, data, size, 0);
    if (err == 0 && dropBehind.exchange(false)) {
      logWarn("pwritev2 RWF_DONTCACHE on {}: {}; chunk data written stays in the page cache", path,
              strerror(refused));
    }
  }
  return err == 0 ? Status::OK() : errnoStatus("write", path, err);
}

Status PosixDisk::truncate(const std::string& path, uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) {
    return errnoStatus("truncate", path, errno);
  }
  return Status::OK();
}

Status PosixDisk::allocate(const std::string& path, uint64_t offset, uint64_t size) {
  if (size == 0) return Status::OK();
  auto file = fileAt(path);
  if (!file) return errnoStatus("open", path, errno);
  int rc;
  do {
    rc =
        fallocate(*file, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EOPNOTSUPP) return errnoStatus("fallocate", path, errno);
  return Status::OK();
}

Status PosixDisk::punchHole(const std::string& path, uint64_t offset, uint64_t size) {
  if (size == 0) return Status::OK();
  auto file = fileAt(path);
  if (!file) return errnoStatus("open", path, errno);
  int rc;
  do {
    rc = fallocate(*file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                   static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Status::OK();
  if (errno != EOPNOTSUPP) return errnoStatus("punch", path, errno);
  // A file system without holes: write the zeros, up to the end of the file.
  struct stat st;
  if (fstat(*file, &st) != 0) return errnoStatus("stat", path, errno);
  uint64_t end = std::min<uint64_t>(offset + size, static_cast<uint64_t>(st.st_size));
  static const std::string zeros(1 << 16, '\0');
  for (uint64_t pos = offset; pos < end;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), end - pos));
    ssize_t w = pwrite(*file, zeros.data(), n, static_cast<off_t>(pos));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errnoStatus("write", path, errno);
    pos += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

Status PosixDisk::sync(const std::string& path) {
  auto file = fileAt(path);
  if (!file) return errnoStatus("open", path, errno);
  if (fdatasync(*file) != 0) return errnoStatus("sync", path, errno);
  return Status::OK();
}

Status PosixDisk::remove(const std::string& path) {
  int rc = unlink(path.c_str());
  int err = errno;
  files->forget(path);  // after the unlink: a file opened before it is not kept
  if (rc != 0) return errnoStatus("remove", path, err);
  return Status::OK();
}

Status PosixDisk::rename(const std::string& from, const std::string& to) {
  int rc = ::rename(from.c_str(), to.c_str());
  int err = errno;
  files->forget(from);
  files->forget(to);
  if (rc != 0) return errnoStatus("rename", from, err);
  return Status::OK();
}

Result<uint64_t> PosixDisk::size(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

Result<uint64_t> PosixDisk::allocated(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

Status PosixDisk::makeDirs(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      partial = path.substr(0, i);
      if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        return errnoStatus("mkdir", partial, errno);
      }
    }
  }
  return Status::OK();
}

Status PosixDisk::list(const std::string& path, std::vector<std::string>& names) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return errnoStatus("opendir", path, errno);
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  return Status::OK();
}

Result<DiskSpace> PosixDisk::space(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return errnoStatus("statvfs", path, errno);
  return DiskSpace{static_cast<uint64_t>(st.f_blocks) * st.f_frsize,
                   static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
}

}  // namespace cairn
