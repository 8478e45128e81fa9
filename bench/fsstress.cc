// cairn-fsstress: random file operations over sparse files, as fsstress does, on any
// directory. With --check it applies every operation to a local directory as well and
// compares every result (the model), printing the seed and step of the first difference.
//
//   cairn-fsstress --dir D [--dir D2] [--check LOCAL] --ops N --seed S
//                  [--files K] [--max-size BYTES] [--no-fallocate] [--no-copy]
//
// Several --dir are the same directory seen through several mounts: each open goes
// through one of them at random, so that reopening a file switches mounts (close-to-open
// consistency is what is compared). Operations: sparse writes, reads, truncates up and
// down, fallocate (allocate, keep size, punch hole, zero range), copy_file_range, fsync,
// close and reopen, rename, link, unlink of open files, SEEK_DATA/SEEK_HOLE. Without
// --check, operations that the file system refuses as unsupported are counted and
// skipped. Exits 0 when every operation matched the model (or, without one, succeeded).

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

struct Options {
  std::vector<std::string> dirs;
  std::string check;
  uint64_t ops = 1000;
  uint64_t seed = 1;
  int files = 8;
  uint64_t maxSize = 48ull << 20;
  bool fallocate = true;
  bool copy = true;
  bool trace = false;
  bool profile = false;
};

[[noreturn]] void usage() {
  fprintf(stderr,
          "usage: cairn-fsstress --dir DIR [--dir DIR2] [--check LOCAL] --ops N --seed S\n"
          "                      [--files K] [--max-size BYTES] [--no-fallocate] [--no-copy]\n");
  exit(2);
}

// One file as both sides see it: the descriptor under test and the model's.
struct Object {
  int fd = -1;
  int model = -1;
  int mount = 0;
  int names = 0;  // names that refer to it
};

class Stress {
 public:
  explicit Stress(Options o) : opts(std::move(o)), rng(opts.seed) {
    names.assign(static_cast<size_t>(opts.files), -1);
  }

  int run() {
    auto start = std::chrono::steady_clock::now();
    for (step = 0; step < opts.ops; ++step) {
      if (!one() || failed) return 1;
      if (opts.trace && checking()) {
        // Every open file's size after every step, to find the step that broke one.
        for (size_t i = 0; i < objects.size(); ++i) {
          if (objects[i].fd < 0) continue;
          struct stat sa, sb;
          fstat(objects[i].fd, &sa);
          fstat(objects[i].model, &sb);
          if (sa.st_size != sb.st_size) {
            fail("after this step obj " + std::to_string(i) + " has size " +
                 std::to_string(sa.st_size) + ", model " + std::to_string(sb.st_size));
            return 1;
          }
        }
      }
    }
    for (size_t i = 0; i < objects.size(); ++i) {
      if (objects[i].fd >= 0 && !closeObject(static_cast<int>(i))) return 1;
    }
    if (checking() && !compareTree()) return 1;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fprintf(stderr, "fsstress seed %llu: %llu operations in %.1f s (%llu unsupported)\n",
            (unsigned long long)opts.seed, (unsigned long long)opts.ops, secs,
            (unsigned long long)unsupported);
    if (opts.profile) {
      for (auto& [name, t] : timing) {
        fprintf(stderr, "  %-10s %6llu calls %8.3f s %8.3f ms each\n", name.c_str(),
                (unsigned long long)t.second, t.first, t.second ? 1000 * t.first / t.second : 0);
      }
    }
    return 0;
  }

 private:
  bool checking() const { return !opts.check.empty(); }
  std::string path(int mount, int name) const {
    return opts.dirs[static_cast<size_t>(mount)] + "/n" + std::to_string(name);
  }
  std::string modelPath(int name) const { return opts.check + "/n" + std::to_string(name); }
  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng() % n; }

  bool fail(const std::string& what) {
    failed = true;
    fprintf(stderr, "fsstress: seed %llu step %llu: %s\n", (unsigned long long)opts.seed,
            (unsigned long long)step, what.c_str());
    return false;
  }

  // Compares a result (and errno) of the file system under test with the model's.
  bool same(const char* op, long a, int ea, long b, int eb, bool valueMatters = true) {
    if (opts.trace) {
      fprintf(stderr, "%llu %s -> %ld%s\n", (unsigned long long)step, op, a,
              a < 0 ? (std::string(" ") + strerror(ea)).c_str() : "");
    }
    if (!checking()) {
      if (a < 0 && (ea == EOPNOTSUPP || ea == ENOSYS || ea == EXDEV)) {
        ++unsupported;
        return true;
      }
      if (a < 0) return fail(std::string(op) + ": " + strerror(ea));
      return true;
    }
    if ((a < 0) != (b < 0) || (valueMatters && a >= 0 && a != b) || (a < 0 && ea != eb)) {
      return fail(std::string(op) + ": got " + std::to_string(a) +
                  (a < 0 ? " (" + std::string(strerror(ea)) + ")" : "") + ", model " +
                  std::to_string(b) + (b < 0 ? " (" + std::string(strerror(eb)) + ")" : ""));
    }
    return true;
  }

  // An open object, opening one when there is none.
  std::optional<int> anyOpen() {
    std::vector<int> open;
    for (size_t i = 0; i < objects.size(); ++i) {
      if (objects[i].fd >= 0) open.push_back(static_cast<int>(i));
    }
    if (open.empty()) return openName(static_cast<int>(below(names.size())), false);
    return open[below(open.size())];
  }

  std::optional<int> openName(int name, bool trunc) {
    int mount = static_cast<int>(below(opts.dirs.size()));
    int flags = O_RDWR | O_CREAT | (trunc ? O_TRUNC : 0);
    int id = names[static_cast<size_t>(name)];
    if (id >= 0 && objects[static_cast<size_t>(id)].fd >= 0) return id;  // one open at a time
    int fd = open(path(mount, name).c_str(), flags, 0644);
    int e = errno;
    int m = checking() ? open(modelPath(name).c_str(), flags, 0644) : 0;
    if (!same(("open n" + std::to_string(name) + (trunc ? " trunc" : "")).c_str(), fd, e, m, errno,
              false))
      return std::nullopt;
    if (fd < 0) return std::nullopt;
    if (id < 0) {
      id = static_cast<int>(objects.size());
      objects.push_back(Object());
      objects.back().names = 1;
      names[static_cast<size_t>(name)] = id;
    }
    Object& o = objects[static_cast<size_t>(id)];
    o.fd = fd;
    o.model = m;
    o.mount = mount;
    if (opts.trace) fprintf(stderr, "%llu   n%d is obj %d\n", (unsigned long long)step, name, id);
    return id;
  }

  bool closeObject(int id) {
    Object& o = objects[static_cast<size_t>(id)];
    if (checking() && !compareWhole(id)) return false;
    int a = close(o.fd), ea = errno;
    int b = checking() ? close(o.model) : 0;
    o.fd = o.model = -1;
    return same("close", a, ea, b, errno);
  }

  bool compareWhole(int id) {
    Object& o = objects[static_cast<size_t>(id)];
    struct stat sa, sb;
    if (fstat(o.fd, &sa) != 0) return fail(std::string("fstat: ") + strerror(errno));
    fstat(o.model, &sb);
    if (sa.st_size != sb.st_size) {
      return fail("size " + std::to_string(sa.st_size) + ", model " + std::to_string(sb.st_size));
    }
    if (sa.st_nlink != sb.st_nlink) {
      return fail("links " + std::to_string(sa.st_nlink) + ", model " +
                  std::to_string(sb.st_nlink));
    }
    return compareRange(id, 0, static_cast<uint64_t>(sa.st_size));
  }

  bool compareRange(int id, uint64_t off, uint64_t len) {
    Object& o = objects[static_cast<size_t>(id)];
    std::string a, b;
    for (uint64_t at = off; at < off + len;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(4 << 20, off + len - at));
      a.assign(n, '\1');
      b.assign(n, '\2');
      ssize_t ra = pread(o.fd, a.data(), n, static_cast<off_t>(at));
      int ea = errno;
      ssize_t rb = pread(o.model, b.data(), n, static_cast<off_t>(at));
      if (!same("pread", ra, ea, rb, errno)) return false;
      if (ra <= 0) return true;
      if (memcmp(a.data(), b.data(), static_cast<size_t>(ra)) != 0) {
        size_t i = 0;
        while (a[i] == b[i]) ++i;
        return fail("bytes differ at " + std::to_string(at + i) + " (read " + std::to_string(n) +
                    " at " + std::to_string(at) + ")");
      }
      at += static_cast<uint64_t>(ra);
    }
    return true;
  }

  std::string payload(size_t n) {
    std::string s(n, '\0');
    if (below(8) == 0) return s;  // zeros: the file system may keep them as holes
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = rng();
      memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return s;
  }

  uint64_t length() {
    // Mostly small, sometimes across a chunk.
    switch (below(10)) {
      case 0:
        return 1 + below(4 << 20);
      case 1:
        return 1 + below(64);
      default:
        return 1 + below(256 << 10);
    }
  }

  bool one() {
    static const char* const NAMES[] = {"write", "read",   "truncate", "fallocate",
                                        "copy",  "fsync",  "reopen",   "rename",
                                        "link",  "unlink", "seek",     "stat"};
    static const int BOUNDS[] = {24, 36, 44, 52, 58, 63, 72, 77, 80, 85, 90, 100};
    int op = static_cast<int>(below(100));
    size_t kind = 0;
    while (op >= BOUNDS[kind]) ++kind;
    auto start = std::chrono::steady_clock::now();
    bool ok = run(kind);
    auto& t = timing[NAMES[kind]];
    t.first += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    t.second++;
    return ok;
  }

  bool run(size_t kind) {
    switch (kind) {
      case 0:
        return doWrite();
      case 1:
        return doRead();
      case 2:
        return doTruncate();
      case 3:
        return opts.fallocate ? doFallocate() : doWrite();
      case 4:
        return opts.copy ? doCopy() : doRead();
      case 5:
        return doFsync();
      case 6:
        return doReopen();
      case 7:
        return doRename();
      case 8:
        return doLink();
      case 9:
        return doUnlink();
      case 10:
        return doSeek();
      default:
        return doStat();
    }
  }

  bool doWrite() {
    auto id = anyOpen();
    if (!id) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    uint64_t off = below(opts.maxSize);
    std::string data = payload(static_cast<size_t>(std::min(length(), opts.maxSize - off)));
    ssize_t a = pwrite(o.fd, data.data(), data.size(), static_cast<off_t>(off));
    int ea = errno;
    ssize_t b = checking() ? pwrite(o.model, data.data(), data.size(), static_cast<off_t>(off))
                           : static_cast<ssize_t>(data.size());
    return same(("pwrite " + std::to_string(data.size()) + " at " + std::to_string(off) + " obj " +
                 std::to_string(*id))
                    .c_str(),
                a, ea, b, errno);
  }

  bool doRead() {
    auto id = anyOpen();
    if (!id) return true;
    if (!checking()) {
      std::string buf(static_cast<size_t>(length()), '\0');
      ssize_t a = pread(objects[static_cast<size_t>(*id)].fd, buf.data(), buf.size(),
                        static_cast<off_t>(below(opts.maxSize)));
      return same("pread", a, errno, 0, 0);
    }
    return compareRange(*id, below(opts.maxSize), length());
  }

  bool doTruncate() {
    auto id = anyOpen();
    if (!id) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    uint64_t size = below(8) == 0 ? 0 : below(opts.maxSize);
    int a = ftruncate(o.fd, static_cast<off_t>(size)), ea = errno;
    int b = checking() ? ftruncate(o.model, static_cast<off_t>(size)) : 0;
    return same(("ftruncate " + std::to_string(size) + " obj " + std::to_string(*id)).c_str(), a,
                ea, b, errno);
  }

  bool doFallocate() {
    auto id = anyOpen();
    if (!id) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    static const int modes[] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
    int mode = modes[below(5)];
    uint64_t off = below(opts.maxSize);
    uint64_t len = std::max<uint64_t>(1, std::min(length(), opts.maxSize - off));
    int a = fallocate(o.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)), ea = errno;
    int b =
        checking() ? fallocate(o.model, mode, static_cast<off_t>(off), static_cast<off_t>(len)) : 0;
    return same(("fallocate mode " + std::to_string(mode) + " " + std::to_string(off) + "+" +
                 std::to_string(len) + " obj " + std::to_string(*id))
                    .c_str(),
                a, ea, b, errno);
  }

  bool doCopy() {
    auto from = anyOpen();
    if (!from) return true;
    auto to = openName(static_cast<int>(below(names.size())), false);
    if (!to || *to == *from) return true;  // same file: overlap rules differ, not tested
    Object& s = objects[static_cast<size_t>(*from)];
    Object& d = objects[static_cast<size_t>(*to)];
    uint64_t len = std::min(length(), opts.maxSize / 2);
    off_t inA = static_cast<off_t>(below(opts.maxSize / 2)), inB = inA;
    off_t outA = static_cast<off_t>(below(opts.maxSize - len)), outB = outA;
    struct statx cached {};
    if (getenv("FSSTRESS_DEBUG")) {
      statx(s.fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_SIZE | STATX_INO, &cached);
    }
    ssize_t a = copy_file_range(s.fd, &inA, d.fd, &outA, len, 0);
    int ea = errno;
    if (getenv("FSSTRESS_DEBUG")) {
      fprintf(stderr, "%llu copy: src ino %llu cached size %llu from %lld, mounts %d -> %d: %zd\n",
              (unsigned long long)step, (unsigned long long)cached.stx_ino,
              (unsigned long long)cached.stx_size, (long long)(inA - (a > 0 ? a : 0)), s.mount,
              d.mount, a);
    }
    ssize_t b = checking() ? copy_file_range(s.model, &inB, d.model, &outB, len, 0) : a;
    return same(("copy_file_range obj " + std::to_string(*from) + " -> " + std::to_string(*to) +
                 " " + std::to_string(len))
                    .c_str(),
                a, ea, b, errno);
  }

  bool doFsync() {
    auto id = anyOpen();
    if (!id) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    int a = fsync(o.fd), ea = errno;
    int b = checking() ? fsync(o.model) : 0;
    return same("fsync", a, ea, b, errno);
  }

  bool doReopen() {
    auto id = anyOpen();
    if (!id) return true;
    if (!closeObject(*id)) return false;
    Object& o = objects[static_cast<size_t>(*id)];
    if (o.names == 0) return true;  // unlinked: gone with its last close
    for (size_t n = 0; n < names.size(); ++n) {
      if (names[n] == *id) {
        openName(static_cast<int>(n), below(6) == 0);
        return true;
      }
    }
    return true;
  }

  bool doRename() {
    int from = static_cast<int>(below(names.size())), to = static_cast<int>(below(names.size()));
    if (names[static_cast<size_t>(from)] < 0 || from == to) return true;
    int mount = static_cast<int>(below(opts.dirs.size()));  // both names on one mount
    int a = rename(path(mount, from).c_str(), path(mount, to).c_str());
    int ea = errno;
    int b = checking() ? rename(modelPath(from).c_str(), modelPath(to).c_str()) : 0;
    if (!same(("rename n" + std::to_string(from) + " n" + std::to_string(to)).c_str(), a, ea, b,
              errno))
      return false;
    int& target = names[static_cast<size_t>(to)];
    // Two names of one file: rename does nothing (POSIX).
    if (a == 0 && target != names[static_cast<size_t>(from)]) {
      if (target >= 0) objects[static_cast<size_t>(target)].names--;
      target = names[static_cast<size_t>(from)];
      names[static_cast<size_t>(from)] = -1;
    }
    return true;
  }

  bool doLink() {
    int from = static_cast<int>(below(names.size())), to = static_cast<int>(below(names.size()));
    if (names[static_cast<size_t>(from)] < 0 || names[static_cast<size_t>(to)] >= 0) return true;
    int a = link(path(0, from).c_str(), path(0, to).c_str()), ea = errno;
    int b = checking() ? link(modelPath(from).c_str(), modelPath(to).c_str()) : 0;
    if (!same(("link n" + std::to_string(from) + " n" + std::to_string(to)).c_str(), a, ea, b,
              errno))
      return false;
    if (a == 0) {
      names[static_cast<size_t>(to)] = names[static_cast<size_t>(from)];
      objects[static_cast<size_t>(names[static_cast<size_t>(to)])].names++;
    }
    return true;
  }

  bool doUnlink() {
    int name = static_cast<int>(below(names.size()));
    if (names[static_cast<size_t>(name)] < 0) return true;
    // Often of a file that is open: it must live on until its last close.
    int a = unlink(path(static_cast<int>(below(opts.dirs.size())), name).c_str()), ea = errno;
    int b = checking() ? unlink(modelPath(name).c_str()) : 0;
    if (!same(("unlink n" + std::to_string(name)).c_str(), a, ea, b, errno)) return false;
    if (a == 0) {
      objects[static_cast<size_t>(names[static_cast<size_t>(name)])].names--;
      names[static_cast<size_t>(name)] = -1;
    }
    return true;
  }

  bool doSeek() {
    auto id = anyOpen();
    if (!id) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    struct stat st;
    fstat(o.model >= 0 ? o.model : o.fd, &st);
    uint64_t size = static_cast<uint64_t>(st.st_size);
    off_t at = static_cast<off_t>(below(size + 2));
    bool hole = below(2);
    off_t r = lseek(o.fd, at, hole ? SEEK_HOLE : SEEK_DATA);
    int e = errno;
    if (opts.trace) {
      fprintf(stderr, "%llu lseek obj %d (%d names) %s %lld -> %lld\n", (unsigned long long)step,
              *id, o.names, hole ? "HOLE" : "DATA", (long long)at, (long long)r);
    }
    if (!checking()) return r >= 0 || e == ENXIO || same("lseek", r, e, 0, 0);
    // Holes are found at a file system's own granularity: the model's answer may differ,
    // but never may a hole be reported over data, or data skipped.
    if (static_cast<uint64_t>(at) >= size) {
      if (r >= 0 || e != ENXIO) return fail("lseek past the end: " + std::to_string(r));
      return true;
    }
    if (r < 0) {
      if (hole || e != ENXIO) return fail(std::string("lseek: ") + strerror(e));
      // No data after `at`: the model must have none either.
      return zeroIn(o, static_cast<uint64_t>(at), size, "SEEK_DATA says no data");
    }
    if (r < at || static_cast<uint64_t>(r) > size) return fail("lseek out of range");
    if (!hole)
      return zeroIn(o, static_cast<uint64_t>(at), static_cast<uint64_t>(r),
                    "SEEK_DATA skipped data");
    if (static_cast<uint64_t>(r) == size) return true;
    return zeroIn(o, static_cast<uint64_t>(r), static_cast<uint64_t>(r) + 1, "SEEK_HOLE at data");
  }

  bool zeroIn(Object& o, uint64_t from, uint64_t to, const char* what) {
    std::string buf(static_cast<size_t>(std::min<uint64_t>(to - from, 64 << 20)), '\1');
    ssize_t n = pread(o.model, buf.data(), buf.size(), static_cast<off_t>(from));
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[static_cast<size_t>(i)] != 0) {
        return fail(std::string(what) + ": the model has data at " +
                    std::to_string(from + static_cast<uint64_t>(i)));
      }
    }
    return true;
  }

  bool doStat() {
    auto id = anyOpen();
    if (!id) return true;
    if (!checking()) return true;
    Object& o = objects[static_cast<size_t>(*id)];
    struct stat sa, sb;
    fstat(o.fd, &sa);
    fstat(o.model, &sb);
    if (sa.st_size != sb.st_size) {
      return fail("fstat size " + std::to_string(sa.st_size) + ", model " +
                  std::to_string(sb.st_size));
    }
    if (sa.st_nlink != sb.st_nlink) {
      return fail("fstat links " + std::to_string(sa.st_nlink) + ", model " +
                  std::to_string(sb.st_nlink));
    }
    return true;
  }

  bool compareTree() {
    for (size_t n = 0; n < names.size(); ++n) {
      int name = static_cast<int>(n);
      struct stat sa, sb;
      int a = stat(path(0, name).c_str(), &sa), ea = errno;
      int b = stat(modelPath(name).c_str(), &sb);
      if (!same(("stat n" + std::to_string(n)).c_str(), a, ea, b, errno)) return false;
      if (a != 0) continue;
      auto id = openName(name, false);
      if (!id || !closeObject(*id)) return false;
    }
    return true;
  }

  Options opts;
  std::mt19937_64 rng;
  uint64_t step = 0;
  uint64_t unsupported = 0;
  bool failed = false;
  std::map<std::string, std::pair<double, uint64_t>> timing;  // seconds and calls per kind
  std::vector<int> names;                                     // name -> object, or -1
  std::vector<Object> objects;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--dir") {
      o.dirs.push_back(value());
    } else if (a == "--check") {
      o.check = value();
    } else if (a == "--ops") {
      o.ops = std::stoull(value());
    } else if (a == "--seed") {
      o.seed = std::stoull(value());
    } else if (a == "--files") {
      o.files = std::stoi(value());
    } else if (a == "--max-size") {
      o.maxSize = std::stoull(value());
    } else if (a == "--no-fallocate") {
      o.fallocate = false;
    } else if (a == "--profile") {
      o.profile = true;
    } else if (a == "--trace") {
      o.trace = true;
    } else if (a == "--no-copy") {
      o.copy = false;
    } else {
      usage();
    }
  }
  if (o.dirs.empty() || o.files < 1 || o.maxSize < 1024) usage();
  for (auto& d : o.dirs) mkdir(d.c_str(), 0755);
  if (!o.check.empty()) mkdir(o.check.c_str(), 0755);
  return Stress(std::move(o)).run();
}
