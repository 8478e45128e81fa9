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

class Fd {
 public:
  explicit Fd(int fd) : fd(fd) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd; }

 private:
  int fd;
};

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

}  // namespace

Status PosixDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  int err = readAll(fd.get(), offset, size, out, 0);
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
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOATIME;
  how.resolve = RESOLVE_CACHED;
  Fd fd(static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how)));
  if (fd.get() < 0) {
    // No openat2 or RESOLVE_CACHED (before Linux 5.12), or files this process does not own.
    if (errno == ENOSYS || errno == EINVAL || errno == EPERM) return unsupported("openat2");
    return std::nullopt;
  }
  int err = readAll(fd.get(), offset, size, out, RWF_NOWAIT);
  if (err == EOPNOTSUPP) {
    errno = err;
    return unsupported("preadv2 RWF_NOWAIT");
  }
  if (err != 0) return std::nullopt;  // EAGAIN: not all in the page cache
  return Status::OK();
}

Status PosixDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                        bool create) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0644));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  int err = writeAll(fd.get(), offset, data, size, 0);
  return err == 0 ? Status::OK() : errnoStatus("write", path, err);
}

Status PosixDisk::writeUncached(const std::string& path, uint64_t offset, const void* data,
                                size_t size, uint64_t ahead) {
  if (!dropBehind.load(std::memory_order_relaxed)) return write(path, offset, data, size, false);
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  // These bytes go to the disk at once; the first `ahead` bytes of the file (a chunk's
  // checksum records, which cover them) are on the disk first, so that a power cut does
  // not find them there without those. Only that range: earlier data in flight is not
  // waited for.
  if (ahead > 0 && sync_file_range(fd.get(), 0, static_cast<off_t>(ahead),
                                   SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                       SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    return errnoStatus("write", path, errno);
  }
  int err = writeAll(fd.get(), offset, data, size, RWF_DONTCACHE);
  // Refused before any byte is written: EOPNOTSUPP from a kernel before 6.14 or a file
  // system without it; the others from a sandbox that filters the call. A write that
  // fails plainly too is the disk's failure, and says so.
  if (err == EOPNOTSUPP || err == EINVAL || err == ENOSYS || err == EPERM) {
    int refused = err;
    err = writeAll(fd.get(), offset, data, size, 0);
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
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  int rc;
  do {
    rc = fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                   static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EOPNOTSUPP) return errnoStatus("fallocate", path, errno);
  return Status::OK();
}

Status PosixDisk::punchHole(const std::string& path, uint64_t offset, uint64_t size) {
  if (size == 0) return Status::OK();
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  int rc;
  do {
    rc = fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                   static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Status::OK();
  if (errno != EOPNOTSUPP) return errnoStatus("punch", path, errno);
  // A file system without holes: write the zeros, up to the end of the file.
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return errnoStatus("stat", path, errno);
  uint64_t end = std::min<uint64_t>(offset + size, static_cast<uint64_t>(st.st_size));
  static const std::string zeros(1 << 16, '\0');
  for (uint64_t pos = offset; pos < end;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), end - pos));
    ssize_t w = pwrite(fd.get(), zeros.data(), n, static_cast<off_t>(pos));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errnoStatus("write", path, errno);
    pos += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

Status PosixDisk::sync(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  if (fdatasync(fd.get()) != 0) return errnoStatus("sync", path, errno);
  return Status::OK();
}

Status PosixDisk::remove(const std::string& path) {
  if (unlink(path.c_str()) != 0) return errnoStatus("remove", path, errno);
  return Status::OK();
}

Status PosixDisk::rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return errnoStatus("rename", from, errno);
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
