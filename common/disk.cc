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

// --- MemDisk ---

uint64_t MemDisk::missingPages(const File& f, uint64_t offset, uint64_t size) {
  if (size == 0) return 0;
  uint64_t missing = 0;
  for (uint64_t p = offset / PAGE; p <= (offset + size - 1) / PAGE; ++p) {
    missing += f.pages.count(p) == 0;
  }
  return missing;
}

void MemDisk::setCapacity(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex);
  capacity = bytes;
}

Status MemDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  const File& f = it->second;
  out.clear();
  if (offset >= f.size) return Status::OK();
  uint64_t end = std::min<uint64_t>(offset + size, f.size);
  out.assign(end - offset, '\0');
  for (uint64_t pos = offset; pos < end;) {
    uint64_t page = pos / PAGE, in = pos % PAGE;
    uint64_t n = std::min(PAGE - in, end - pos);
    auto p = f.pages.find(page);
    if (p != f.pages.end()) memcpy(out.data() + (pos - offset), p->second.data() + in, n);
    pos += n;
  }
  return Status::OK();
}

std::optional<Status> MemDisk::readNow(const std::string& path, uint64_t offset, size_t size,
                                       std::string& out) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!cached) return std::nullopt;
  }
  return read(path, offset, size, out);
}

void MemDisk::setCached(bool value) {
  std::lock_guard<std::mutex> lock(mutex);
  cached = value;
}

Status MemDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                      bool create) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) {
    if (!create) return Status::notFound(path);
    it = files.emplace(path, File()).first;
  }
  File& f = it->second;
  uint64_t missing = missingPages(f, offset, size);
  if ((pagesInUse + missing) * PAGE > capacity) {
    return Status::noSpace(fmt::format("write {}: disk full", path));
  }
  auto bytes = static_cast<const char*>(data);
  for (uint64_t pos = offset; pos < offset + size;) {
    uint64_t page = pos / PAGE, in = pos % PAGE;
    uint64_t n = std::min(PAGE - in, offset + size - pos);
    auto [p, added] = f.pages.try_emplace(page, std::string(PAGE, '\0'));
    pagesInUse += added;
    memcpy(p->second.data() + in, bytes + (pos - offset), n);
    pos += n;
  }
  f.size = std::max<uint64_t>(f.size, offset + size);
  return Status::OK();
}

Status MemDisk::truncate(const std::string& path, uint64_t size) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  File& f = it->second;
  if (size < f.size) {
    uint64_t keep = (size + PAGE - 1) / PAGE;
    for (auto p = f.pages.lower_bound(keep); p != f.pages.end();) {
      p = f.pages.erase(p);
      --pagesInUse;
    }
    if (size % PAGE != 0) {
      auto last = f.pages.find(size / PAGE);
      if (last != f.pages.end()) {
        std::fill(last->second.begin() + static_cast<long>(size % PAGE), last->second.end(), '\0');
      }
    }
  }
  f.size = size;
  return Status::OK();
}

Status MemDisk::allocate(const std::string& path, uint64_t offset, uint64_t size) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  File& f = it->second;
  if ((pagesInUse + missingPages(f, offset, size)) * PAGE > capacity) {
    return Status::noSpace(fmt::format("allocate {}: disk full", path));
  }
  if (size == 0) return Status::OK();
  for (uint64_t p = offset / PAGE; p <= (offset + size - 1) / PAGE; ++p) {
    pagesInUse += f.pages.try_emplace(p, std::string(PAGE, '\0')).second;
  }
  return Status::OK();
}

Status MemDisk::punchHole(const std::string& path, uint64_t offset, uint64_t size) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  File& f = it->second;
  for (uint64_t pos = offset; pos < offset + size;) {
    uint64_t page = pos / PAGE, in = pos % PAGE;
    uint64_t n = std::min(PAGE - in, offset + size - pos);
    auto p = f.pages.find(page);
    if (p != f.pages.end()) {
      if (n == PAGE) {
        f.pages.erase(p);
        --pagesInUse;
      } else {
        std::fill_n(p->second.begin() + static_cast<long>(in), n, '\0');
      }
    }
    pos += n;
  }
  return Status::OK();
}

Status MemDisk::sync(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  return files.count(path) ? Status::OK() : Status::notFound(path);
}

Status MemDisk::remove(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  pagesInUse -= it->second.pages.size();
  files.erase(it);
  return Status::OK();
}

Status MemDisk::rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(from);
  if (it == files.end()) return Status::notFound(from);
  auto old = files.find(to);
  if (old != files.end()) {
    pagesInUse -= old->second.pages.size();
    files.erase(old);
  }
  File f = std::move(it->second);
  files.erase(from);
  files[to] = std::move(f);
  return Status::OK();
}

Result<uint64_t> MemDisk::size(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  return it->second.size;
}

Result<uint64_t> MemDisk::allocated(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  return static_cast<uint64_t>(it->second.pages.size()) * PAGE;
}

Status MemDisk::makeDirs(const std::string&) { return Status::OK(); }

Status MemDisk::list(const std::string& path, std::vector<std::string>& names) {
  std::lock_guard<std::mutex> lock(mutex);
  std::string prefix = path + "/";
  std::string last;
  for (auto it = files.lower_bound(prefix); it != files.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    std::string rest = it->first.substr(prefix.size());
    std::string name = rest.substr(0, rest.find('/'));
    if (name != last) names.push_back(name);
    last = name;
  }
  return Status::OK();
}

Result<DiskSpace> MemDisk::space(const std::string&) {
  std::lock_guard<std::mutex> lock(mutex);
  uint64_t used = pagesInUse * PAGE;
  return DiskSpace{capacity, capacity > used ? capacity - used : 0};
}

// --- FaultyDisk ---

void FaultyDisk::failNext(Op op, int count, ErrorCode code, std::string pathPart,
                          size_t prefixBytes, int skip) {
  std::lock_guard<std::mutex> lock(mutex);
  rules.push_back({op, count, code, std::move(pathPart), prefixBytes, skip});
}

void FaultyDisk::stallNext(Op op, std::string pathPart) {
  std::lock_guard<std::mutex> lock(mutex);
  stall.emplace(op, std::move(pathPart));
}

void FaultyDisk::release() {
  std::lock_guard<std::mutex> lock(mutex);
  stall.reset();
  stalling = false;
  released.notify_all();
}

bool FaultyDisk::stalled() {
  std::lock_guard<std::mutex> lock(mutex);
  return stalling;
}

void FaultyDisk::pause(Op op, const std::string& path) {
  std::unique_lock<std::mutex> lock(mutex);
  if (!stall || stall->first != op || path.find(stall->second) == std::string::npos) return;
  stall.reset();
  stalling = true;
  released.wait(lock, [&]() { return !stalling; });
}

void FaultyDisk::clear() {
  std::lock_guard<std::mutex> lock(mutex);
  rules.clear();
}

std::optional<FaultyDisk::Rule> FaultyDisk::take(Op op, const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = rules.begin(); it != rules.end(); ++it) {
    if (it->op != op || path.find(it->pathPart) == std::string::npos) continue;
    if (it->skip > 0) {
      --it->skip;
      return std::nullopt;
    }
    Rule r = *it;
    if (--it->count <= 0) rules.erase(it);
    return r;
  }
  return std::nullopt;
}

namespace {
Status injected(const char* what, const std::string& path, ErrorCode code) {
  return Status(code, fmt::format("{} {}: injected failure", what, path));
}
}  // namespace

Status FaultyDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  pause(Op::READ, path);
  if (auto r = take(Op::READ, path)) return injected("read", path, r->code);
  return base.read(path, offset, size, out);
}

std::optional<Status> FaultyDisk::readNow(const std::string& path, uint64_t offset, size_t size,
                                          std::string& out) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (stall && stall->first == Op::READ) return std::nullopt;
    for (auto& r : rules) {
      if (r.op == Op::READ) return std::nullopt;
    }
  }
  return base.readNow(path, offset, size, out);
}

Status FaultyDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                         bool create) {
  return faultyWrite(path, size,
                     [&](size_t n) { return base.write(path, offset, data, n, create); });
}

Status FaultyDisk::writeUncached(const std::string& path, uint64_t offset, const void* data,
                                 size_t size, uint64_t ahead) {
  return faultyWrite(path, size,
                     [&](size_t n) { return base.writeUncached(path, offset, data, n, ahead); });
}

Status FaultyDisk::faultyWrite(const std::string& path, size_t size,
                               const std::function<Status(size_t bytes)>& write) {
  pause(Op::WRITE, path);
  if (auto r = take(Op::WRITE, path)) {
    if (r->prefixBytes > 0) write(std::min(size, r->prefixBytes));
    return injected("write", path, r->code);
  }
  return write(size);
}

Status FaultyDisk::truncate(const std::string& path, uint64_t size) {
  if (auto r = take(Op::TRUNCATE, path)) return injected("truncate", path, r->code);
  return base.truncate(path, size);
}

Status FaultyDisk::allocate(const std::string& path, uint64_t offset, uint64_t size) {
  if (auto r = take(Op::ALLOCATE, path)) return injected("allocate", path, r->code);
  return base.allocate(path, offset, size);
}

Status FaultyDisk::punchHole(const std::string& path, uint64_t offset, uint64_t size) {
  if (auto r = take(Op::PUNCH, path)) return injected("punch", path, r->code);
  return base.punchHole(path, offset, size);
}

Status FaultyDisk::sync(const std::string& path) {
  if (auto r = take(Op::SYNC, path)) return injected("sync", path, r->code);
  return base.sync(path);
}

Status FaultyDisk::remove(const std::string& path) {
  if (auto r = take(Op::REMOVE, path)) return injected("remove", path, r->code);
  return base.remove(path);
}

}  // namespace cairn
