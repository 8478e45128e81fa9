#include "commands.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "certs.h"
#include "disk_pool.h"
#include "errno_map.h"
#include "names.h"
#include "units.h"

namespace cairn {
namespace {

constexpr size_t TRANSFER_BLOCK = 8 << 20;  // bytes handed to the client per call

std::string baseName(const std::string& path) {
  auto trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  auto slash = trimmed.rfind('/');
  return slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
}

// Progress on a terminal: "put big.bin  512.0 MiB / 1.0 GiB  50%  230.1 MB/s".
class Progress {
 public:
  Progress(CliContext& c, std::string label, uint64_t total)
      : c(c), label(std::move(label)), total(total), start(std::chrono::steady_clock::now()) {}
  void update(uint64_t done) {
    if (!c.progress || total < (8u << 20)) return;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(c.err, "\r{}  {} / {}  {:3.0f}%  {:.1f} MB/s   ", label, humanBytes(done),
               humanBytes(total), 100.0 * done / total, secs > 0 ? done / secs / 1e6 : 0.0);
    fflush(c.err);
    shown = true;
  }
  ~Progress() {
    if (shown) fmt::print(c.err, "\n");
  }

 private:
  CliContext& c;
  std::string label;
  uint64_t total;
  std::chrono::steady_clock::time_point start;
  bool shown = false;
};

std::string typeName(FileType t) {
  switch (t) {
    case FileType::REGULAR:
      return "file";
    case FileType::DIRECTORY:
      return "directory";
    case FileType::SYMLINK:
      return "symlink";
    case FileType::FIFO:
      return "fifo";
    case FileType::SOCKET:
      return "socket";
    case FileType::CHAR_DEVICE:
      return "character device";
    case FileType::BLOCK_DEVICE:
      return "block device";
  }
  return "unknown";
}

std::string modeString(const FileAttr& a) {
  static const char letters[] = {'-', 'd', 'l', 'p', 's', 'c', 'b'};
  auto t = static_cast<size_t>(a.type);
  std::string s(1, t < sizeof(letters) ? letters[t] : '?');
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) s += (a.mode & (0400 >> i)) ? rwx[i] : '-';
  return s;
}

std::string userName(uint32_t uid) {
  if (passwd* p = getpwuid(uid)) return p->pw_name;
  return std::to_string(uid);
}

std::string groupName(uint32_t gid) {
  if (group* g = getgrgid(gid)) return g->gr_name;
  return std::to_string(gid);
}

std::string timeString(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  tm local;
  localtime_r(&secs, &local);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &local);
  return buf;
}

std::string isoTime(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  tm utc;
  gmtime_r(&secs, &utc);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:09d}Z", buf, ns % 1000000000);
}

nlohmann::json attrJson(const FileAttr& a) {
  return {{"inode", a.inode},
          {"type", typeName(a.type)},
          {"mode", fmt::format("{:04o}", a.mode)},
          {"uid", a.uid},
          {"gid", a.gid},
          {"nlink", a.nlink},
          {"size", a.size},
          {"replication", a.replication},
          {"chunks", a.chunkCount},
          {"atime", isoTime(a.atimeNs)},
          {"mtime", isoTime(a.mtimeNs)},
          {"ctime", isoTime(a.ctimeNs)}};
}

// Reads a whole local file descriptor range into `buf`; false on a read error.
bool readFully(int fd, char* buf, size_t n, size_t& got) {
  got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return true;
}

bool writeFully(int fd, const char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

// Streams [0, size) of `inode` to `fd`.
int copyOut(CliContext& c, const std::string& path, const FileAttr& attr, int fd) {
  Progress progress(c, "get " + path, attr.size);
  std::string buf;
  for (uint64_t off = 0; off < attr.size; off += TRANSFER_BLOCK) {
    uint64_t n = std::min<uint64_t>(TRANSFER_BLOCK, attr.size - off);
    Status s = c.client.read(attr.inode, off, n, buf).wait(c.waitScope);
    if (!s.ok()) return fail(c, path, s);
    if (!writeFully(fd, buf.data(), buf.size())) {
      if (errno == EPIPE) return PIPE_CLOSED;
      return failText(c, fmt::format("{}: write failed: {}", path, strerror(errno)));
    }
    progress.update(off + buf.size());
    if (buf.size() < n) break;  // the file shrank while we read it
  }
  return 0;
}

}  // namespace

// Errors read as coreutils' do ("cairn: /nope: No such file or directory"): the errno a
// local file system would give. Where that alone would not say why (the cluster failed, an
// argument or a role was refused), the master's reason follows in parentheses.
int fail(CliContext& c, const std::string& what, const Status& s) {
  int e = toErrno(s.code());
  bool explain = (e == EIO || e == EINVAL || e == EPERM) && !s.message().empty();
  if (explain) {
    fmt::print(c.err, "cairn: {}: {} ({})\n", what, strerror(e), s.message());
  } else {
    fmt::print(c.err, "cairn: {}: {}\n", what, strerror(e));
  }
  return 1;
}

int failText(CliContext& c, const std::string& text) {
  fmt::print(c.err, "cairn: {}\n", text);
  return 1;
}

Result<FileAttr> resolve(CliContext& c, const std::string& path) {
  return c.client.resolve(path).wait(c.waitScope);
}

std::pair<std::string, std::string> splitParent(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  if (slash == std::string::npos) return {"/", p};
  if (p == "/") return {"/", ""};
  return {slash == 0 ? "/" : p.substr(0, slash), p.substr(slash + 1)};
}

namespace {
// Where a file put or copied to `path` goes: `path` itself, or `path/name` when `path` is a
// directory. Fails (printing why) when it exists and `force` is not given.
struct Target {
  FileAttr parent;
  std::string name;
  std::string path;  // as shown to the user
};

std::optional<Target> targetOf(CliContext& c, const std::string& path, const std::string& name,
                               bool force, int& rc) {
  std::string target = path;
  auto existing = resolve(c, path);
  if (existing.ok() && existing.value.type == FileType::DIRECTORY) {
    target = (path.back() == '/' ? path : path + "/") + name;
    existing = resolve(c, target);
  }
  if (existing.ok() && !force) {
    rc = failText(c, fmt::format("{}: File exists (use -f to overwrite)", target));
    return std::nullopt;
  }
  if (!existing.ok() && existing.status.code() != ErrorCode::NOT_FOUND) {
    rc = fail(c, target, existing.status);
    return std::nullopt;
  }
  auto [parentPath, base] = splitParent(target);
  auto parent = resolve(c, parentPath);
  if (!parent.ok()) {
    rc = fail(c, parentPath, parent.status);
    return std::nullopt;
  }
  return Target{parent.value, base, target};
}
}  // namespace

int cmdPut(CliContext& c, const std::string& local, const std::string& path, uint8_t replication,
           bool force) {
  int fd = open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failText(c, fmt::format("{}: {}", local, strerror(errno)));
  struct stat st;
  fstat(fd, &st);
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return failText(c, fmt::format("{}: Is a directory", local));
  }
  int rc = 1;
  auto target = targetOf(c, path, baseName(local), force, rc);
  if (!target) {
    close(fd);
    return rc;
  }
  const std::string& shown = target->path;
  // Written under a temporary name, synced, and renamed at the end: a failed put leaves
  // nothing behind, readers never see a partial file, and a put reported done is on disk.
  CreateOptions o;
  o.mode = st.st_mode & 0777;
  o.replication = replication;
  o.atomic = true;
  o.noReplace = !force;
  o.syncOnClose = true;
  auto file = c.files.create(target->parent.inode, target->name, o).wait(c.waitScope);
  if (!file.ok()) {
    close(fd);
    return fail(c, shown, file.status);
  }
  Progress progress(c, "put " + shown, static_cast<uint64_t>(st.st_size));
  // The next block is read from the local disk on a pool thread while the event loop
  // sends the previous ones (the open file keeps several on their way).
  DiskPool reader(1);
  auto readBlock = [&]() {
    return reader.run([fd]() -> Result<std::string> {
      std::string buf(TRANSFER_BLOCK, '\0');
      size_t got = 0;
      if (!readFully(fd, buf.data(), buf.size(), got)) {
        return Status::ioError(strerror(errno));
      }
      buf.resize(got);
      return buf;
    });
  };
  uint64_t total = 0;
  Status s;
  auto next = readBlock();
  bool reading = true;  // `next` is a read still to be waited for
  for (;;) {
    auto block = next.wait(c.waitScope);
    reading = false;
    if (!block.ok()) {
      s = Status::ioError(fmt::format("reading {}: {}", local, block.status.message()));
      break;
    }
    if (block.value.empty()) break;
    next = readBlock();
    reading = true;
    uint64_t at = total;
    total += block.value.size();
    s = file.value->write(at, std::move(block.value)).wait(c.waitScope);
    if (!s.ok()) break;
    progress.update(total);
  }
  if (reading) next.wait(c.waitScope);  // the reader is done with the descriptor
  close(fd);
  if (!s.ok()) {
    file.value->abort().wait(c.waitScope);
    return fail(c, shown, s);
  }
  s = file.value->close().wait(c.waitScope);
  return s.ok() ? 0 : fail(c, shown, s);
}

int cmdCp(CliContext& c, const std::string& src, const std::string& dst, bool force) {
  auto from = resolve(c, src);
  if (!from.ok()) return fail(c, src, from.status);
  if (from.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", src));
  int rc = 1;
  auto target = targetOf(c, dst, baseName(src), force, rc);
  if (!target) return rc;
  // The source stays open (so that it outlives a concurrent unlink) while the copy runs.
  auto in = c.files.open(from.value.inode).wait(c.waitScope);
  if (!in.ok()) return fail(c, src, in.status);
  CreateOptions o;
  o.mode = from.value.mode;
  o.replication = from.value.replication;
  o.atomic = true;
  o.noReplace = !force;
  o.syncOnClose = true;
  auto out = c.files.create(target->parent.inode, target->name, o).wait(c.waitScope);
  if (!out.ok()) {
    in.value->close().wait(c.waitScope);
    return fail(c, target->path, out.status);
  }
  uint64_t size = in.value->attr().size;
  Progress progress(c, "cp " + src, size);
  Status s;
  // Whole chunks are shared with the source (copy-on-write), the rest copied by the
  // chunkservers: large pieces, so that every whole chunk is shared.
  constexpr uint64_t COPY_PIECE = uint64_t{1} << 30;
  for (uint64_t off = 0; off < size;) {
    auto n = c.files
                 .copyRange(from.value.inode, off, out.value->inode(), off,
                            std::min<uint64_t>(COPY_PIECE, size - off))
                 .wait(c.waitScope);
    if (!n.ok()) {
      s = n.status;
      break;
    }
    if (n.value == 0) break;  // the source shrank while it was copied
    off += n.value;
    progress.update(off);
  }
  in.value->close().wait(c.waitScope);
  if (!s.ok()) {
    out.value->abort().wait(c.waitScope);
    return fail(c, target->path, s);
  }
  s = out.value->close().wait(c.waitScope);
  return s.ok() ? 0 : fail(c, target->path, s);
}

int cmdSnapshot(CliContext& c, const std::string& src, const std::string& dst) {
  auto from = resolve(c, src);
  if (!from.ok()) return fail(c, src, from.status);
  int rc = 1;
  auto target = targetOf(c, dst, baseName(src), false, rc);
  if (!target) return rc;
  auto made =
      c.client.snapshot(from.value.inode, target->parent.inode, target->name).wait(c.waitScope);
  return made.ok() ? 0 : fail(c, target->path, made.status);
}

int cmdGet(CliContext& c, const std::string& path, const std::string& local) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  if (attr.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", path));
  std::string target = local;
  struct stat st;
  if (stat(local.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) target = local + "/" + baseName(path);
  int fd = open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return failText(c, fmt::format("{}: {}", target, strerror(errno)));
  int rc = copyOut(c, path, attr.value, fd);
  if (close(fd) != 0 && rc == 0) {
    return failText(c, fmt::format("{}: {}", target, strerror(errno)));
  }
  if (rc != 0) unlink(target.c_str());
  return rc;
}

int cmdCat(CliContext& c, const std::string& path) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  if (attr.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", path));
  fflush(c.out);
  return copyOut(c, path, attr.value, fileno(c.out));
}

int cmdLs(CliContext& c, const std::string& path, bool longFormat, bool json) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  std::vector<DirEntryInfo> entries;
  if (attr.value.type == FileType::DIRECTORY) {
    auto all = c.client.listAll(attr.value.inode).wait(c.waitScope);
    if (!all.ok()) return fail(c, path, all.status);
    entries = std::move(all.value);
  } else {
    entries.push_back({baseName(path), attr.value});
  }
  if (json) {
    auto arr = nlohmann::json::array();
    for (auto& e : entries) {
      auto j = attrJson(e.attr);
      j["name"] = e.name;
      arr.push_back(j);
    }
    fmt::print(c.out, "{}\n", arr.dump(2));
    return 0;
  }
  for (auto& e : entries) {
    if (!longFormat) {
      fmt::print(c.out, "{}\n", e.name);
      continue;
    }
    std::string rep = e.attr.type == FileType::REGULAR ? std::to_string(e.attr.replication) : "-";
    fmt::print(c.out, "{} {:>3} {:>3} {:<8} {:<8} {:>12} {} {}\n", modeString(e.attr), e.attr.nlink,
               rep, userName(e.attr.uid), groupName(e.attr.gid), e.attr.size,
               timeString(e.attr.mtimeNs), e.name);
  }
  return 0;
}

int cmdStat(CliContext& c, const std::string& path, bool json) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  auto& a = attr.value;
  if (json) {
    auto j = attrJson(a);
    j["path"] = path;
    fmt::print(c.out, "{}\n", j.dump(2));
    return 0;
  }
  fmt::print(c.out,
             "  Path: {}\n  Type: {}\n Inode: {}\n  Size: {}\n Chunks: {}\n"
             "Replication: {}\n  Mode: {:04o} ({})\n Links: {}\n Owner: {} ({})\n Group: {} ({})\n"
             "Access: {}\nModify: {}\nChange: {}\n",
             path, typeName(a.type), a.inode, a.size, a.chunkCount, a.replication, a.mode,
             modeString(a), a.nlink, a.uid, userName(a.uid), a.gid, groupName(a.gid),
             isoTime(a.atimeNs), isoTime(a.mtimeNs), isoTime(a.ctimeNs));
  return 0;
}

int cmdMkdir(CliContext& c, const std::string& path, bool parents) {
  auto parts = splitPath(path);
  if (!parts.ok()) return fail(c, path, parts.status);
  if (parts.value.empty()) {
    return parents ? 0 : fail(c, path, Status::alreadyExists("the root exists"));
  }
  if (parents) {
    auto made = c.client.makeDirs(path).wait(c.waitScope);
    return made.ok() ? 0 : fail(c, path, made.status);
  }
  auto [parentPath, name] = splitParent(path);
  auto parent = resolve(c, parentPath);
  if (!parent.ok()) return fail(c, path, parent.status);
  auto made = c.client.mkdir(parent.value.inode, name, 0755).wait(c.waitScope);
  return made.ok() ? 0 : fail(c, path, made.status);
}

int cmdRm(CliContext& c, const std::string& path, bool recursive) {
  auto [parentPath, name] = splitParent(path);
  if (name.empty()) return failText(c, "refusing to remove the root directory");
  auto parent = resolve(c, parentPath);
  if (!parent.ok()) return fail(c, path, parent.status);
  auto attr = c.client.lookup(parent.value.inode, name).wait(c.waitScope);
  if (!attr.ok()) return fail(c, path, attr.status);
  Status s;
  if (attr.value.type == FileType::DIRECTORY) {
    s = recursive ? c.client.removeTree(parent.value.inode, name).wait(c.waitScope)
                  : c.client.rmdir(parent.value.inode, name).wait(c.waitScope);
    if (!recursive && s.code() == ErrorCode::NOT_EMPTY) {
      return fail(c, path, Status::notEmpty("directory not empty (use -r)"));
    }
  } else {
    s = c.client.unlink(parent.value.inode, name).wait(c.waitScope);
  }
  return s.ok() ? 0 : fail(c, path, s);
}

int cmdMv(CliContext& c, const std::string& src, const std::string& dst) {
  auto [srcParentPath, srcName] = splitParent(src);
  if (srcName.empty()) return failText(c, "cannot move the root directory");
  auto srcParent = resolve(c, srcParentPath);
  if (!srcParent.ok()) return fail(c, src, srcParent.status);
  std::string target = dst;
  auto existing = resolve(c, dst);
  if (existing.ok() && existing.value.type == FileType::DIRECTORY) {
    auto srcAttr = c.client.lookup(srcParent.value.inode, srcName).wait(c.waitScope);
    if (!srcAttr.ok()) return fail(c, src, srcAttr.status);
    if (srcAttr.value.inode != existing.value.inode) {
      target = (dst.back() == '/' ? dst : dst + "/") + srcName;
    }
  }
  auto [dstParentPath, dstName] = splitParent(target);
  if (dstName.empty()) return failText(c, "cannot replace the root directory");
  auto dstParent = resolve(c, dstParentPath);
  if (!dstParent.ok()) return fail(c, target, dstParent.status);
  Status s = c.client.rename(srcParent.value.inode, srcName, dstParent.value.inode, dstName)
                 .wait(c.waitScope);
  return s.ok() ? 0 : fail(c, fmt::format("{} -> {}", src, target), s);
}

int cmdSetrep(CliContext& c, int replication, const std::string& path) {
  if (replication < 1 || replication > 32) {
    return failText(c, fmt::format("replication must be 1 to 32, not {}", replication));
  }
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  auto r = c.client.setReplication(attr.value.inode, static_cast<uint8_t>(replication))
               .wait(c.waitScope);
  return r.ok() ? 0 : fail(c, path, r.status);
}

int cmdLocate(CliContext& c, const std::string& path, bool json) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  if (attr.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", path));
  std::vector<ChunkInfo> chunks;
  uint64_t chunkSize = 0, fileSize = 0;
  for (uint32_t first = 0;;) {
    auto l = c.client.layout(attr.value.inode, first, 1024).wait(c.waitScope);
    if (!l.ok()) return fail(c, path, l.status);
    chunkSize = l.value.chunkSize;
    fileSize = l.value.fileSize;
    for (auto& ch : l.value.chunks) chunks.push_back(ch);
    first += 1024;
    if (chunkSize == 0 || uint64_t{first} * chunkSize >= fileSize) break;
  }
  auto sizeOf = [&](uint32_t index) -> uint64_t {
    uint64_t start = uint64_t{index} * chunkSize;
    return fileSize > start ? std::min(chunkSize, fileSize - start) : 0;
  };
  if (json) {
    nlohmann::json j = {{"path", path}, {"size", fileSize}, {"chunk_size", chunkSize}};
    auto arr = nlohmann::json::array();
    for (auto& ch : chunks) {
      auto reps = nlohmann::json::array();
      for (auto& r : ch.replicas) reps.push_back({{"address", r.address}, {"rack", r.rack}});
      arr.push_back(
          {{"index", ch.index},
           {"handle", fmt::format("{:x}", ch.handle)},
           {"version", ch.version},
           {"size", sizeOf(ch.index)},
           {"primary", ch.primary.empty() ? nlohmann::json(nullptr) : nlohmann::json(ch.primary)},
           {"replicas", reps}});
    }
    j["chunks"] = arr;
    fmt::print(c.out, "{}\n", j.dump(2));
    return 0;
  }
  fmt::print(c.out, "{}: {} bytes, {} chunks of {}\n", path, fileSize, chunks.size(),
             humanBytes(static_cast<double>(chunkSize)));
  for (auto& ch : chunks) {
    std::string reps;
    for (auto& r : ch.replicas) {
      if (!reps.empty()) reps += ", ";
      reps += r.address == ch.primary ? r.address + "*" : r.address;
    }
    fmt::print(c.out, "  chunk {:>6}  handle {:>10x}  v{:<4} {:>10} bytes  [{}]\n", ch.index,
               ch.handle, ch.version, sizeOf(ch.index), reps);
  }
  return 0;
}

int cmdTrashList(CliContext& c, bool json) {
  auto entries = c.client.trashList().wait(c.waitScope);
  if (!entries.ok()) return fail(c, "trash", entries.status);
  if (json) {
    auto arr = nlohmann::json::array();
    for (auto& e : entries.value) {
      arr.push_back({{"path", e.path},
                     {"inode", e.inode},
                     {"size", e.size},
                     {"deleted", isoTime(e.deletedNs)},
                     {"expires", isoTime(e.expiresNs)}});
    }
    fmt::print(c.out, "{}\n", arr.dump(2));
    return 0;
  }
  for (auto& e : entries.value) {
    fmt::print(c.out, "{}  {:>12}  deleted {}  expires {}\n", e.path, e.size,
               timeString(e.deletedNs), timeString(e.expiresNs));
  }
  return 0;
}

int cmdTrashRestore(CliContext& c, const std::string& path) {
  auto r = c.client.trashRestore(path).wait(c.waitScope);
  return r.ok() ? 0 : fail(c, path, r.status);
}

}  // namespace cairn
