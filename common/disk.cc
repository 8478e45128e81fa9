#include "disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cairn {
namespace {

Status errnoStatus(const std::string& what, const std::string& path, int err) {
  std::string m = fmt::format("{} {}: {}", what, path, strerror(err));
  switch (err) {
    case ENOENT: return Status::notFound(m);
    case ENOSPC:
    case EDQUOT: return Status::noSpace(m);
    case EEXIST: return Status::alreadyExists(m);
    default: return Status::ioError(m);
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

}  // namespace

Status PosixDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  out.resize(size);
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd.get(), out.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoStatus("read", path, errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return Status::OK();
}

Status PosixDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                        bool create) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0644));
  if (fd.get() < 0) return errnoStatus("open", path, errno);
  auto p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = pwrite(fd.get(), p + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoStatus("write", path, errno);
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status PosixDisk::truncate(const std::string& path, uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) {
    return errnoStatus("truncate", path, errno);
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

Result<uint64_t> PosixDisk::size(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
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

uint64_t MemDisk::used() const {
  uint64_t total = 0;
  for (auto& [path, data] : files) total += data.size();
  return total;
}

Status MemDisk::read(const std::string& path, uint64_t offset, size_t size, std::string& out) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  out = offset >= it->second.size() ? std::string() : it->second.substr(offset, size);
  return Status::OK();
}

Status MemDisk::write(const std::string& path, uint64_t offset, const void* data, size_t size,
                      bool create) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) {
    if (!create) return Status::notFound(path);
    it = files.emplace(path, std::string()).first;
  }
  uint64_t end = offset + size;
  if (end > it->second.size() && used() + (end - it->second.size()) > capacity) {
    return Status::noSpace(fmt::format("write {}: disk full", path));
  }
  if (end > it->second.size()) it->second.resize(end, '\0');
  memcpy(it->second.data() + offset, data, size);
  return Status::OK();
}

Status MemDisk::truncate(const std::string& path, uint64_t size) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  it->second.resize(size, '\0');
  return Status::OK();
}

Status MemDisk::sync(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  return files.count(path) ? Status::OK() : Status::notFound(path);
}

Status MemDisk::remove(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  return files.erase(path) ? Status::OK() : Status::notFound(path);
}

Result<uint64_t> MemDisk::size(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = files.find(path);
  if (it == files.end()) return Status::notFound(path);
  return static_cast<uint64_t>(it->second.size());
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
  uint64_t u = used();
  return DiskSpace{capacity, capacity > u ? capacity - u : 0};
}

}  // namespace cairn
