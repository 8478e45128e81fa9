#include "test_disks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace cairn {

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
