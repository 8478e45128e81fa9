#include "cairn_fs.h"

#include <fcntl.h>
#include <kj/async-unix.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "errno_map.h"
#include "log.h"

namespace cairn {
namespace {

CairnFs& fsOf(fuse_req_t req) { return *static_cast<CairnFs*>(fuse_req_userdata(req)); }

// Set while a reply runs (on the loop thread): the request was started and answered under
// one watch, with no "anything changed" between, so what it answers may be kept for long.
bool replyWatched = false;

// Runs a libcairn call on the client's loop, the thread that reads the requests, and hands
// its result to `reply` once it resolves; an exception (a bug) becomes EIO, logged, and never
// unwinds into libfuse. `func` runs now; libcairn's calls copy their arguments, so it may
// pass the handler's locals. `reply` runs later and keeps copies of what it needs: libfuse
// reuses a request's buffers once its handler returns.
template <typename Func, typename Reply>
void serve(fuse_req_t req, const char* op, Func&& func, Reply&& reply) {
  CairnFs& fs = fsOf(req);
  uint64_t epoch = fs.client->watchEpoch();
  fs.unanswered.insert(req);
  auto promise = kj::evalNow([&]() { return func(*fs.client, *fs.cache); });
  fs.tasks->add(promise.then(
      [req, epoch, reply = kj::fwd<Reply>(reply)](auto result) mutable {
        CairnFs& fs = fsOf(req);
        fs.unanswered.erase(req);
        replyWatched =
            fs.client != nullptr && fs.client->watching() && fs.client->watchEpoch() == epoch;
        KJ_DEFER(replyWatched = false);
        reply(req, result);
      },
      [req, op](kj::Exception&& e) {
        fsOf(req).unanswered.erase(req);
        logError("{}: {}", op, e.getDescription().cStr());
        fuse_reply_err(req, EIO);
      }));
}

mode_t typeBits(FileType t) {
  switch (t) {
    case FileType::REGULAR:
      return S_IFREG;
    case FileType::DIRECTORY:
      return S_IFDIR;
    case FileType::SYMLINK:
      return S_IFLNK;
    case FileType::FIFO:
      return S_IFIFO;
    case FileType::SOCKET:
      return S_IFSOCK;
    case FileType::CHAR_DEVICE:
      return S_IFCHR;
    case FileType::BLOCK_DEVICE:
      return S_IFBLK;
  }
  return S_IFREG;
}

struct stat toStat(const FileAttr& a) {
  struct stat st;
  memset(&st, 0, sizeof(st));
  st.st_ino = a.inode;
  st.st_mode = typeBits(a.type) | (a.mode & 07777);
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blksize = 1 << 20;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_atim = {a.atimeNs / 1000000000, a.atimeNs % 1000000000};
  st.st_mtim = {a.mtimeNs / 1000000000, a.mtimeNs % 1000000000};
  st.st_ctim = {a.ctimeNs / 1000000000, a.ctimeNs % 1000000000};
  return st;
}

// The kernel cache of a watched session (see KernelCache), or null: the master tells this
// mount of others' changes now, so what the kernel is given may be kept for long.
KernelCache* watchedCache(fuse_req_t req) { return replyWatched ? fsOf(req).kernelCache : nullptr; }

// How long the kernel may keep what a timeout option bounds: that long, or while watched
// the watched timeout (an option set to 0 stays 0: never kept).
double keepFor(fuse_req_t req, double option) {
  if (option <= 0 || watchedCache(req) == nullptr) return option;
  return std::max(option, fsOf(req).options.watchedTimeout);
}

void noteAttr(fuse_req_t req, const FileAttr& a, double* timeout) {
  *timeout = keepFor(req, fsOf(req).options.attrTimeout);
  if (KernelCache* kc = watchedCache(req)) kc->noteInode(a.inode, false);
}

// The entry for `name` in `parent`, as the kernel is to keep it: for long while watched,
// unless `fresh` is false (answered from what was fetched earlier, before a change the
// master may have told meanwhile).
fuse_entry_param entryOf(fuse_req_t req, uint64_t parent, std::string_view name, const FileAttr& a,
                         bool fresh = true) {
  fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  e.ino = a.inode;
  e.generation = 1;
  e.attr = toStat(a);
  e.attr_timeout = fsOf(req).options.attrTimeout;
  e.entry_timeout = fsOf(req).options.entryTimeout;
  // The kernel counts one more lookup of the inode, whatever the timeouts.
  if (fsOf(req).kernelCache != nullptr) fsOf(req).kernelCache->noteInode(a.inode, true);
  if (!fresh) return e;
  noteAttr(req, a, &e.attr_timeout);
  e.entry_timeout = keepFor(req, fsOf(req).options.entryTimeout);
  if (KernelCache* kc = watchedCache(req)) kc->noteName(parent, name);
  return e;
}

// Replies with the entry a call made or found as `name` in `parent`.
auto replyEntryAt(uint64_t parent, std::string name) {
  return [parent, name = std::move(name)](fuse_req_t req, const Result<FileAttr>& r) {
    if (!r.ok()) {
      fuse_reply_err(req, toErrno(r.status.code()));
      return;
    }
    fuse_entry_param e = entryOf(req, parent, name, r.value);
    fuse_reply_entry(req, &e);
  };
}

// A name found missing is answered as an entry without an inode, which the kernel keeps
// as a negative entry for negativeTimeout seconds (NFS keeps them too), or as long as the
// master tells of changes: the probes of a compiler's include path, a shell's PATH or a
// create that looked first ask once.
auto replyLookupAt(uint64_t parent, std::string name) {
  return [parent, name = std::move(name)](fuse_req_t req, const Result<FileAttr>& r) {
    double negative = keepFor(req, fsOf(req).options.negativeTimeout);
    KernelCache* kc = watchedCache(req);
    if (!r.ok() && toErrno(r.status.code()) == ENOENT && negative > 0) {
      fuse_entry_param e;
      memset(&e, 0, sizeof(e));
      e.entry_timeout = negative;
      if (kc != nullptr) kc->noteName(parent, name);
      fuse_reply_entry(req, &e);
      return;
    }
    replyEntryAt(parent, name)(req, r);
  };
}

void replyAttr(fuse_req_t req, const Result<FileAttr>& r) {
  if (!r.ok()) {
    fuse_reply_err(req, toErrno(r.status.code()));
    return;
  }
  struct stat st = toStat(r.value);
  double timeout;
  noteAttr(req, r.value, &timeout);
  fuse_reply_attr(req, &st, timeout);
}

void replyStatus(fuse_req_t req, const Status& s) { fuse_reply_err(req, toErrno(s.code())); }

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t toNs(const timespec& t) { return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec; }

// Attributes as this mount sees the file (its unwritten data counts in the size).
kj::Promise<Result<FileAttr>> seenHere(FileCache& fc, kj::Promise<Result<FileAttr>> attr) {
  return attr.then([&fc](Result<FileAttr> r) {
    if (r.ok()) r.value = fc.asSeenHere(r.value);
    return r;
  });
}

// The supplementary groups of recent callers: libfuse reads them from /proc/PID/task/TID/
// status, an open and a parse per request that made about a fifth of the mount's CPU in a
// create loop. Kept a second per (pid, uid, gid), as NFS clients keep credentials: a process whose
// groups change (setgroups) is seen with its old ones that long. The kernel checks every
// call with its current ones first (default_permissions), so a stale list can only refuse
// what a fresh one would allow. Used on the loop thread only.
struct CallerGroups {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
  std::chrono::steady_clock::time_point until;
};
std::unordered_map<pid_t, CallerGroups> callerGroups;

const std::vector<gid_t>& groupsOf(fuse_req_t req, const fuse_ctx* ctx) {
  auto now = std::chrono::steady_clock::now();
  auto it = callerGroups.find(ctx->pid);
  if (it != callerGroups.end() && it->second.uid == ctx->uid && it->second.gid == ctx->gid &&
      now < it->second.until) {
    return it->second.groups;
  }
  if (callerGroups.size() >= 4096) {
    std::erase_if(callerGroups, [now](const auto& e) { return e.second.until <= now; });
  }
  CallerGroups& entry = callerGroups[ctx->pid];
  entry = CallerGroups{ctx->uid, ctx->gid, {}, now + std::chrono::seconds(1)};
  gid_t groups[64];
  int n = fuse_req_getgroups(req, 64, groups);
  for (int i = 0; i < n && i < 64; ++i) {
    if (groups[i] != ctx->gid) entry.groups.push_back(groups[i]);
  }
  return entry.groups;
}

// The calling process, for the master's permission checks: its uid, its group first, then
// its supplementary groups.
Caller callerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller who{ctx->uid, {ctx->gid}};
  auto& groups = groupsOf(req, ctx);
  who.gids.insert(who.gids.end(), groups.begin(), groups.end());
  return who;
}

// --- operations ---

void cfsInit(void*, fuse_conn_info* conn) {
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // libcairn buffers; the kernel must not reorder
  // O_TRUNC then arrives as a setattr of the size, the one path that cuts a file.
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
}

void cfsLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Caller who = callerOf(req);
  serve(
      req, "lookup",
      [&](Client& c, FileCache& fc) { return seenHere(fc, c.lookup(parent, name, who)); },
      replyLookupAt(parent, name));
}

// Master inodes are the FUSE inodes: nothing to drop but what the kernel cache tracks.
void cfsForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  if (fsOf(req).kernelCache != nullptr) fsOf(req).kernelCache->forget(ino, nlookup);
  fuse_reply_none(req);
}

void cfsForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  if (fsOf(req).kernelCache != nullptr) {
    for (size_t i = 0; i < count; ++i) {
      fsOf(req).kernelCache->forget(forgets[i].ino, forgets[i].nlookup);
    }
  }
  fuse_reply_none(req);
}

void cfsGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  serve(
      req, "getattr", [&](Client& c, FileCache& fc) { return seenHere(fc, c.getattr(ino)); },
      replyAttr);
}

void cfsSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet, fuse_file_info*) {
  SetAttrRequest r;
  if (toSet & FUSE_SET_ATTR_MODE) r.mode = attr->st_mode & 07777;
  if (toSet & FUSE_SET_ATTR_UID) r.uid = attr->st_uid;
  if (toSet & FUSE_SET_ATTR_GID) r.gid = attr->st_gid;
  if (toSet & FUSE_SET_ATTR_SIZE) r.size = static_cast<uint64_t>(attr->st_size);
  if (toSet & FUSE_SET_ATTR_ATIME_NOW) {
    r.atimeNs = nowNs();
  } else if (toSet & FUSE_SET_ATTR_ATIME) {
    r.atimeNs = toNs(attr->st_atim);
  }
  if (toSet & FUSE_SET_ATTR_MTIME_NOW) {
    r.mtimeNs = nowNs();
  } else if (toSet & FUSE_SET_ATTR_MTIME) {
    r.mtimeNs = toNs(attr->st_mtim);
  }
  Caller who = callerOf(req);
  serve(
      req, "setattr", [&](Client&, FileCache& fc) { return fc.setattr(ino, r, who); }, replyAttr);
}

void cfsReadlink(fuse_req_t req, fuse_ino_t ino) {
  serve(
      req, "readlink", [&](Client& c, FileCache&) { return c.readlink(ino); },
      [](fuse_req_t req, const Result<std::string>& r) {
        if (!r.ok()) return replyStatus(req, r.status);
        fuse_reply_readlink(req, r.value.c_str());
      });
}

void cfsMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Caller who = callerOf(req);
  FileType type;
  switch (mode & S_IFMT) {
    case S_IFREG:
      type = FileType::REGULAR;
      break;
    case S_IFIFO:
      type = FileType::FIFO;
      break;
    case S_IFSOCK:
      type = FileType::SOCKET;
      break;
    case S_IFCHR:
      type = FileType::CHAR_DEVICE;
      break;
    case S_IFBLK:
      type = FileType::BLOCK_DEVICE;
      break;
    default:
      fuse_reply_err(req, EINVAL);
      return;
  }
  serve(
      req, "mknod",
      [&](Client& c, FileCache&) { return c.mknod(parent, name, type, mode & 07777, rdev, who); },
      replyEntryAt(parent, name));
}

void cfsMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Caller who = callerOf(req);
  serve(
      req, "mkdir", [&](Client& c, FileCache&) { return c.mkdir(parent, name, mode & 07777, who); },
      replyEntryAt(parent, name));
}

void cfsUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Caller who = callerOf(req);
  serve(
      req, "unlink", [&](Client& c, FileCache&) { return c.unlink(parent, name, who); },
      replyStatus);
}

void cfsRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Caller who = callerOf(req);
  serve(
      req, "rmdir", [&](Client& c, FileCache&) { return c.rmdir(parent, name, who); }, replyStatus);
}

void cfsSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  Caller who = callerOf(req);
  serve(
      req, "symlink", [&](Client& c, FileCache&) { return c.symlink(parent, name, link, who); },
      replyEntryAt(parent, name));
}

void cfsRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  Caller who = callerOf(req);
  if (flags & ~RENAME_NOREPLACE) {
    fuse_reply_err(req, EINVAL);  // RENAME_EXCHANGE and RENAME_WHITEOUT are not supported
    return;
  }
  bool noReplace = flags & RENAME_NOREPLACE;
  serve(
      req, "rename",
      [&](Client& c, FileCache&) {
        return c.rename(parent, name, newparent, newname, noReplace, who);
      },
      replyStatus);
}

void cfsLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Caller who = callerOf(req);
  serve(
      req, "link",
      [&](Client& c, FileCache& fc) { return seenHere(fc, c.link(ino, newparent, newname, who)); },
      replyEntryAt(newparent, newname));
}

// An open file: fi->fh holds one. Made and destroyed on the client's loop.
struct FileHandle {
  kj::Own<OpenFile> file;
};

FileHandle* handleOf(fuse_file_info* fi) { return reinterpret_cast<FileHandle*>(fi->fh); }

// `flags`: open(2)'s; O_APPEND makes every write an atomic append (OpenFile::setAppend).
kj::Promise<Result<FileHandle*>> wrap(kj::Promise<Result<kj::Own<OpenFile>>> opening, int flags) {
  return opening.then([flags](Result<kj::Own<OpenFile>> f) -> Result<FileHandle*> {
    if (!f.ok()) return f.status;
    f.value->setAppend(flags & O_APPEND);
    return new FileHandle{kj::mv(f.value)};
  });
}

// Whether the kernel must hand each write of this open over whole: an O_APPEND write
// becomes one atomic append only if it arrives as one request. Through the page cache the
// kernel cuts a write at a page it does not hold in full (the mount caches none), so an
// O_APPEND open is direct I/O: a write(2) of up to 1 MiB (max_write) arrives as one request,
// or as two in a row when its buffer is not page-aligned (at most 256 pages of it per
// request), which FileCache collects into one append.
bool appendsWhole(const fuse_file_info* fi) { return fi->flags & O_APPEND; }

// Closes a file the kernel never got (its open or create reply failed: the caller is gone).
void closeUnclaimed(CairnFs& fs, FileHandle* h) {
  fs.tasks->add(h->file->close().then([h](Status) { delete h; }));
}

// The open file `info` is answered with: the handle, and caching fit for close-to-open.
void prepareOpen(fuse_file_info& info, FileHandle* h) {
  info.keep_cache = 0;  // close-to-open: drop pages cached from before this open
  info.direct_io = appendsWhole(&info);
  info.fh = reinterpret_cast<uint64_t>(h);
}

void cfsOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  int access = (fi->flags & O_ACCMODE) == O_RDONLY   ? ACCESS_READ
               : (fi->flags & O_ACCMODE) == O_WRONLY ? ACCESS_WRITE
                                                     : ACCESS_READ | ACCESS_WRITE;
  Caller who = callerOf(req);
  serve(
      req, "open",
      [&](Client&, FileCache& fc) { return wrap(fc.open(ino, access, who), fi->flags); },
      [ino, info = *fi](fuse_req_t req, const Result<FileHandle*>& r) mutable {
        if (!r.ok()) return replyStatus(req, r.status);
        CairnFs& fs = fsOf(req);
        prepareOpen(info, r.value);
        // ... and attributes: another mount may have changed the file since this kernel
        // cached them (only attributes are dropped, which takes no inode lock).
        if (fs.session != nullptr) fuse_lowlevel_notify_inval_inode(fs.session, ino, -1, 0);
        if (fuse_reply_open(req, &info) != 0) closeUnclaimed(fs, r.value);
      });
}

void cfsCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  CreateOptions o;
  o.mode = mode & 07777;
  o.caller = callerOf(req);
  o.exclusive = fi->flags & O_EXCL;
  serve(
      req, "create",
      [&](Client&, FileCache& fc) { return wrap(fc.create(parent, name, o), fi->flags); },
      [parent, name = std::string(name), info = *fi](fuse_req_t req,
                                                     const Result<FileHandle*>& r) mutable {
        if (!r.ok()) return replyStatus(req, r.status);
        CairnFs& fs = fsOf(req);
        fuse_entry_param e = entryOf(req, parent, name, r.value->file->attr());
        prepareOpen(info, r.value);
        if (fuse_reply_create(req, &e, &info) != 0) closeUnclaimed(fs, r.value);
      });
}

void cfsRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  serve(
      req, "read",
      [&](Client&, FileCache&) {
        return handleOf(fi)->file->read(static_cast<uint64_t>(off), static_cast<uint32_t>(size));
      },
      [](fuse_req_t req, const Result<std::string>& r) {
        if (!r.ok()) return replyStatus(req, r.status);
        fuse_reply_buf(req, r.value.data(), r.value.size());
      });
}

void cfsWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  serve(
      req, "write",
      [&](Client&, FileCache&) {
        return handleOf(fi)->file->write(static_cast<uint64_t>(off), std::string(buf, size));
      },
      [size](fuse_req_t req, const Status& s) {
        if (!s.ok()) return replyStatus(req, s);
        fuse_reply_write(req, size);
      });
}

void cfsFlush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  serve(
      req, "flush", [&](Client&, FileCache&) { return handleOf(fi)->file->flush(); }, replyStatus);
}

void cfsRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  FileHandle* h = handleOf(fi);
  serve(
      req, "release",
      [&](Client&, FileCache&) {
        return h->file->close().then([h](Status s) {
          delete h;
          return s;
        });
      },
      replyStatus);
}

void cfsFsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  serve(
      req, "fsync", [&](Client&, FileCache&) { return handleOf(fi)->file->fsync(); }, replyStatus);
}

// An open directory: the entries read so far, fetched from the master a page at a time.
struct DirHandle {
  uint64_t inode = 0;
  uint64_t parent = 1;
  std::vector<DirEntryInfo> entries;
  bool more = true;
};

void cfsOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  serve(
      req, "opendir", [&](Client& c, FileCache&) { return c.getattr(ino); },
      [ino, info = *fi](fuse_req_t req, const Result<FileAttr>& r) mutable {
        if (!r.ok()) return replyStatus(req, r.status);
        if (r.value.type != FileType::DIRECTORY) return (void)fuse_reply_err(req, ENOTDIR);
        auto dir = std::make_unique<DirHandle>();
        dir->inode = ino;
        info.fh = reinterpret_cast<uint64_t>(dir.release());
        fuse_reply_open(req, &info);
      });
}

// Reads pages of `dir` from the master until it holds `want` entries or has them all.
kj::Promise<Status> fetchEntries(Client& c, FileCache& fc, DirHandle* dir, size_t want,
                                 Caller who) {
  if (!dir->more || dir->entries.size() >= want) return Status::OK();
  std::string after = dir->entries.empty() ? std::string() : dir->entries.back().name;
  auto more = kj::heap<bool>(false);
  bool* m = more.get();
  return c.readdir(dir->inode, after, 1024, m, who)
      .then([&c, &fc, dir, want, who,
             m](Result<std::vector<DirEntryInfo>> page) -> kj::Promise<Status> {
        if (!page.ok()) return page.status;
        dir->more = *m && !page.value.empty();
        for (auto& e : page.value) {
          e.attr = fc.asSeenHere(e.attr);
          dir->entries.push_back(std::move(e));
        }
        return fetchEntries(c, fc, dir, want, who);
      })
      .attach(kj::mv(more));
}

void replyEntries(fuse_req_t req, DirHandle* dir, size_t size, off_t off, bool plus) {
  std::string buf(size, '\0');
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < dir->entries.size() + 2; ++i) {
    std::string name;
    struct stat st;
    memset(&st, 0, sizeof(st));
    fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    if (i < 2) {
      name = i == 0 ? "." : "..";
      st.st_mode = S_IFDIR;
      st.st_ino = i == 0 ? dir->inode : dir->parent;
    } else {
      auto& entry = dir->entries[i - 2];
      name = entry.name;
      if (plus) {
        // Pages are fetched ahead of the requests that hand them out: kept briefly only.
        e = entryOf(req, dir->inode, name, entry.attr, false);
        st = e.attr;
      } else {
        st = toStat(entry.attr);
      }
    }
    e.attr = st;
    size_t n = plus ? fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                             static_cast<off_t>(i + 1))
                    : fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                        static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void readdirCommon(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  Caller who = callerOf(req);
  auto* dir = reinterpret_cast<DirHandle*>(fi->fh);
  // Offsets: 0 is ".", 1 is "..", 2 + i is entries[i]; each entry's offset is the next one's.
  size_t want = static_cast<size_t>(off) + 62;
  serve(
      req, "readdir", [&](Client& c, FileCache& fc) { return fetchEntries(c, fc, dir, want, who); },
      [dir, size, off, plus](fuse_req_t req, const Status& s) {
        if (!s.ok()) return replyStatus(req, s);
        replyEntries(req, dir, size, off, plus);
      });
}

void cfsReaddir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  readdirCommon(req, size, off, fi, false);
}

void cfsReaddirplus(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  readdirCommon(req, size, off, fi, true);
}

void cfsReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void cfsFsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  // Every namespace change answered so far (this directory's among them) on the masters' disks.
  serve(
      req, "fsyncdir", [&](Client& c, FileCache&) { return c.syncMetadata(); }, replyStatus);
}

void cfsStatfs(fuse_req_t req, fuse_ino_t) {
  serve(
      req, "statfs", [&](Client& c, FileCache&) { return c.statfs(); },
      [](fuse_req_t req, const Result<Client::FsStats>& r) {
        if (!r.ok()) return replyStatus(req, r.status);
        struct statvfs st;
        memset(&st, 0, sizeof(st));
        const uint64_t block = 4096;
        st.f_bsize = 1 << 20;
        st.f_frsize = block;
        st.f_blocks = r.value.capacityBytes / block;
        st.f_bfree = st.f_bavail = r.value.freeBytes / block;
        st.f_files = r.value.files + (uint64_t{1} << 32);
        st.f_ffree = st.f_favail = uint64_t{1} << 32;
        st.f_namemax = 255;
        fuse_reply_statfs(req, &st);
      });
}

void cfsSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  Caller who = callerOf(req);
  serve(
      req, "setxattr",
      [&](Client& c, FileCache&) {
        return c.setxattr(ino, name, std::string(value, size), static_cast<uint32_t>(flags), who);
      },
      replyStatus);
}

// An xattr value or list: its size when the caller asks with size 0, else the bytes.
auto replySized(size_t size) {
  return [size](fuse_req_t req, const Result<std::string>& r) {
    if (!r.ok()) return replyStatus(req, r.status);
    if (size == 0) {
      fuse_reply_xattr(req, r.value.size());
    } else if (size < r.value.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, r.value.data(), r.value.size());
    }
  };
}

void cfsGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Caller who = callerOf(req);
  serve(
      req, "getxattr", [&](Client& c, FileCache&) { return c.getxattr(ino, name, who); },
      replySized(size));
}

void cfsListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Caller who = callerOf(req);
  serve(
      req, "listxattr",
      [&](Client& c, FileCache&) {
        return c.listxattr(ino, who).then([](Result<std::vector<std::string>> r) {
          if (!r.ok()) return Result<std::string>(r.status);
          std::string names;
          for (auto& n : r.value) names.append(n).push_back('\0');
          return Result<std::string>(std::move(names));
        });
      },
      replySized(size));
}

void cfsRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Caller who = callerOf(req);
  serve(
      req, "removexattr", [&](Client& c, FileCache&) { return c.removexattr(ino, name, who); },
      replyStatus);
}

void cfsAccess(fuse_req_t req, fuse_ino_t ino, int) {
  // The kernel checks mode bits (default_permissions); this only confirms the inode.
  serve(
      req, "access", [&](Client& c, FileCache&) { return c.getattr(ino); },
      [](fuse_req_t req, const Result<FileAttr>& r) { replyStatus(req, r.status); });
}

void cfsFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info*) {
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
    fuse_reply_err(req, EOPNOTSUPP);  // collapse and insert ranges are not supported
    return;
  }
  AllocateMode m;
  m.keepSize = mode & FALLOC_FL_KEEP_SIZE;
  m.punchHole = mode & FALLOC_FL_PUNCH_HOLE;
  m.zeroRange = mode & FALLOC_FL_ZERO_RANGE;
  serve(
      req, "fallocate",
      [&](Client&, FileCache& fc) {
        return fc.fallocate(ino, m, static_cast<uint64_t>(offset), static_cast<uint64_t>(length));
      },
      replyStatus);
}

void cfsLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) {
    fuse_reply_err(req, EINVAL);  // the kernel handles the others itself
    return;
  }
  serve(
      req, "lseek",
      [&](Client&, FileCache& fc) {
        return fc.seek(ino, static_cast<uint64_t>(off), whence == SEEK_HOLE);
      },
      [](fuse_req_t req, const Result<uint64_t>& r) {
        if (!r.ok()) return replyStatus(req, r.status);
        fuse_reply_lseek(req, static_cast<off_t>(r.value));
      });
}

void cfsCopyFileRange(fuse_req_t req, fuse_ino_t inIno, off_t inOff, fuse_file_info*,
                      fuse_ino_t outIno, off_t outOff, fuse_file_info*, size_t len, int flags) {
  if (flags != 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  serve(
      req, "copy_file_range",
      [&](Client&, FileCache& fc) {
        return fc.copyRange(inIno, static_cast<uint64_t>(inOff), outIno,
                            static_cast<uint64_t>(outOff), len);
      },
      [](fuse_req_t req, const Result<uint64_t>& r) {
        if (!r.ok()) return replyStatus(req, r.status);
        fuse_reply_write(req, static_cast<size_t>(r.value));
      });
}

}  // namespace

fuse_lowlevel_ops cairnOperations() {
  fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof(ops));
  ops.init = cfsInit;
  ops.lookup = cfsLookup;
  ops.forget = cfsForget;
  ops.forget_multi = cfsForgetMulti;
  ops.getattr = cfsGetattr;
  ops.setattr = cfsSetattr;
  ops.readlink = cfsReadlink;
  ops.mknod = cfsMknod;
  ops.mkdir = cfsMkdir;
  ops.unlink = cfsUnlink;
  ops.rmdir = cfsRmdir;
  ops.symlink = cfsSymlink;
  ops.rename = cfsRename;
  ops.link = cfsLink;
  ops.open = cfsOpen;
  ops.create = cfsCreate;
  ops.read = cfsRead;
  ops.write = cfsWrite;
  ops.flush = cfsFlush;
  ops.release = cfsRelease;
  ops.fsync = cfsFsync;
  ops.opendir = cfsOpendir;
  ops.readdir = cfsReaddir;
  ops.readdirplus = cfsReaddirplus;
  ops.releasedir = cfsReleasedir;
  ops.fsyncdir = cfsFsyncdir;
  ops.statfs = cfsStatfs;
  ops.setxattr = cfsSetxattr;
  ops.getxattr = cfsGetxattr;
  ops.listxattr = cfsListxattr;
  ops.removexattr = cfsRemovexattr;
  ops.access = cfsAccess;
  ops.fallocate = cfsFallocate;
  ops.lseek = cfsLseek;
  ops.copy_file_range = cfsCopyFileRange;
  return ops;
}

}  // namespace cairn
