// Chunks that several files share: snapshots, copies by whole chunks, and the owner lists
// that decide when a shared chunk is released. See namespace.h.

#include <fmt/format.h>
#include <kj/debug.h>

#include <deque>

#include "names.h"
#include "namespace.h"
#include "namespace_codec.h"

namespace cairn {
using namespace codec;

namespace {

constexpr uint32_t MODE_SETUID = 04000;

std::string encodeOwners(const std::vector<ChunkOwner>& owners) {
  std::string s;
  for (auto& o : owners) {
    putLe(s, o.inode);
    putLe(s, o.index);
  }
  return s;
}

std::vector<ChunkOwner> decodeOwners(std::string_view s) {
  std::vector<ChunkOwner> out;
  size_t pos = 0;
  ChunkOwner o;
  while (getLe(s, pos, o.inode) && getLe(s, pos, o.index)) out.push_back(o);
  return out;
}

}  // namespace

std::string sharedKey(uint64_t handle) {
  std::string k = "h";
  putBe64(k, handle);
  return k;
}

std::vector<ChunkOwner> Namespace::ownersOf(uint64_t handle) {
  auto bytes = store.get(sharedKey(handle));
  return bytes ? decodeOwners(*bytes) : std::vector<ChunkOwner>{};
}

void Namespace::forEachSharedChunk(
    const std::function<void(uint64_t, const std::vector<ChunkOwner>&)>& visit) {
  std::string after;
  for (;;) {
    auto rows = store.scan("h", after, 4096);
    if (rows.empty()) break;
    for (auto& [key, value] : rows) {
      auto owners = decodeOwners(value);
      if (owners.size() > 1) visit(getBe(key, 1, 8), owners);
    }
    after = rows.back().first;
  }
}

Namespace::ChunkRefs::List& Namespace::ChunkRefs::list(uint64_t handle) {
  auto it = lists.find(handle);
  if (it == lists.end()) {
    List l;
    l.owners = ns.ownersOf(handle);
    l.stored = !l.owners.empty();
    it = lists.emplace(handle, std::move(l)).first;
  }
  return it->second;
}

void Namespace::ChunkRefs::drop(Mutation& m, ChunkOwner owner, const ChunkRecord& record) {
  m.del(chunkKey(owner.inode, owner.index));
  auto& owners = list(record.handle).owners;
  if (owners.empty()) {
    released.push_back(record.handle);  // never shared: this was its only owner
    return;
  }
  owners.erase(std::remove(owners.begin(), owners.end(), owner), owners.end());
  if (owners.empty()) released.push_back(record.handle);
}

void Namespace::ChunkRefs::share(ChunkOwner existing, ChunkOwner added, uint64_t handle) {
  auto& owners = list(handle).owners;
  if (owners.empty()) owners.push_back(existing);
  owners.push_back(added);
}

void Namespace::ChunkRefs::writeTo(Mutation& m) {
  for (auto& [handle, l] : lists) {
    // A list that shrank to one owner stays: it names the owner, so that a version change
    // is recorded in the right file (the chunk map's idea of the owner may be the other).
    if (!l.owners.empty()) {
      m.put(sharedKey(handle), encodeOwners(l.owners));
    } else if (l.stored) {
      m.del(sharedKey(handle));
    }
  }
  lists.clear();
}

Result<std::vector<uint64_t>> Namespace::filesUnder(uint64_t root, size_t limit) {
  auto n = readInode(root);
  if (!n) return Status::notFound(fmt::format("no inode {}", root));
  std::vector<uint64_t> files;
  if (n->type == InodeType::REGULAR) files.push_back(root);
  std::deque<uint64_t> dirs;
  if (n->type == InodeType::DIRECTORY) dirs.push_back(root);
  size_t seen = 1;
  while (!dirs.empty()) {
    uint64_t dir = dirs.front();
    dirs.pop_front();
    Status s = forEachEntry(dir, [&](std::string_view, const Inode& child) {
      if (++seen > limit) {
        return Status::invalidArgument(
            fmt::format("a snapshot takes at most {} entries", MAX_SNAPSHOT_ENTRIES));
      }
      if (child.type == InodeType::DIRECTORY) dirs.push_back(child.inode);
      if (child.type == InodeType::REGULAR) files.push_back(child.inode);
      return Status::OK();
    });
    if (!s.ok()) return s;
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());  // hard links
  return files;
}

Status Namespace::forEachEntry(
    uint64_t dir, kj::FunctionParam<Status(std::string_view name, const Inode& child)> visit) {
  std::string prefix = direntKey(dir, "");
  for (std::string after;;) {
    auto rows = store.scan(prefix, after, 4096);
    if (rows.empty()) return Status::OK();
    for (auto& [key, value] : rows) {
      auto child = readInode(decodeU64(value));
      KJ_ASSERT(child.has_value(), "directory entry points to a missing inode", dir);
      Status s = visit(std::string_view(key).substr(prefix.size()), *child);
      if (!s.ok()) return s;
    }
    after = rows.back().first;
  }
}

struct Namespace::SnapshotState {
  SnapshotRequest& request;
  Mutation& m;
  ChunkRefs& refs;
  int64_t now;
  std::map<uint64_t, Inode> made;  // source inode -> its copy (hard links: one copy)
  size_t entries = 0;
};

Result<Inode*> Namespace::copyEntry(SnapshotState& st, const Inode& old, uint64_t parent,
                                    std::string_view name) {
  if (Status s = st.request.mayCopy(old); !s.ok()) return s;
  if (++st.entries > MAX_SNAPSHOT_ENTRIES) {
    return Status::invalidArgument(
        fmt::format("a snapshot takes at most {} entries", MAX_SNAPSHOT_ENTRIES));
  }
  if (old.type != InodeType::DIRECTORY) {
    auto seen = st.made.find(old.inode);
    if (seen != st.made.end()) {
      seen->second.nlink += 1;  // another name of a file copied already
      return &seen->second;
    }
  }
  Inode n = old;
  n.inode = allocateInode(st.m);
  n.ctimeNs = st.now;
  if (st.request.owner) {
    n.uid = st.request.owner->first;
    n.gid = st.request.owner->second;
    n.mode &= ~(MODE_SETUID | MODE_SETGID);
  }
  if (n.type == InodeType::DIRECTORY) {
    n.parent = parent;
    n.name = std::string(name);
  } else {
    n.nlink = 1;
  }
  if (n.type == InodeType::SYMLINK) {
    auto target = store.get(symlinkKey(old.inode));
    KJ_ASSERT(target.has_value(), "symlink without a target", old.inode);
    st.m.put(symlinkKey(n.inode), *target);
  }
  std::string xattrPrefix = xattrKey(old.inode, "");
  for (auto& [key, value] : store.scan(xattrPrefix, "", MAX_XATTRS_PER_INODE)) {
    st.m.put(xattrKey(n.inode, std::string_view(key).substr(xattrPrefix.size())), value);
  }
  if (n.type == InodeType::REGULAR) {
    auto records = listChunks(old.inode, 0, UINT32_MAX);
    bool holdsBytes = std::any_of(records.begin(), records.end(),
                                  [](const ChunkRecord& r) { return !r.pending; });
    if (holdsBytes && !st.request.quiet(old.inode)) {
      return Status(ErrorCode::BUSY, "a file of the snapshot is being written");
    }
    for (auto& record : records) {
      // A pending chunk was never given a byte: the copy has a hole there.
      if (record.pending) continue;
      st.m.put(chunkKey(n.inode, record.index), encodeChunk(record));
      st.refs.share({old.inode, record.index}, {n.inode, record.index}, record.handle);
    }
  }
  return &(st.made[old.inode] = n);
}

kj::Promise<MutationResult> Namespace::snapshot(SnapshotRequest& request) {
  MutationResult r;
  auto fail = [&r](Status s) {
    r.status = std::move(s);
    return kj::Promise<MutationResult>(std::move(r));
  };
  if (Status s = validateName(request.name); !s.ok()) return fail(s);
  auto src = readInode(request.source);
  if (!src) return fail(Status::notFound(fmt::format("no inode {}", request.source)));
  auto dir = requireDirectory(request.parent);
  if (!dir.ok()) return fail(dir.status);
  if (readDirent(request.parent, request.name)) {
    return fail(Status::alreadyExists(fmt::format("'{}' exists", request.name)));
  }
  if (src->type == InodeType::DIRECTORY && isAncestor(src->inode, request.parent)) {
    return fail(Status::invalidArgument("a snapshot cannot go inside its source"));
  }
  Mutation m;
  ChunkRefs refs(*this, r.releasedHandles);
  SnapshotState st{request, m, refs, nowNs(), {}, 0};
  auto root = copyEntry(st, *src, request.parent, request.name);
  if (!root.ok()) return fail(root.status);
  uint64_t rootInode = root.value->inode;
  // Directories breadth first: (source directory, its copy).
  std::deque<std::pair<uint64_t, uint64_t>> dirs;
  if (src->type == InodeType::DIRECTORY) dirs.emplace_back(src->inode, rootInode);
  while (!dirs.empty()) {
    auto [from, to] = dirs.front();
    dirs.pop_front();
    Status s = forEachEntry(from, [&, to = to](std::string_view name, const Inode& child) {
      auto copy = copyEntry(st, child, to, name);
      if (!copy.ok()) return copy.status;
      m.put(direntKey(to, name), encodeU64(copy.value->inode));
      if (child.type == InodeType::DIRECTORY) dirs.emplace_back(child.inode, copy.value->inode);
      return Status::OK();
    });
    if (!s.ok()) return fail(s);
  }
  for (auto& [old, n] : st.made) m.put(inodeKey(n.inode), encodeInode(n));
  Inode p = dir.value;
  if (src->type == InodeType::DIRECTORY) p.nlink += 1;
  p.mtimeNs = p.ctimeNs = st.now;
  m.put(inodeKey(p.inode), encodeInode(p));
  m.put(direntKey(request.parent, request.name), encodeU64(rootInode));
  refs.writeTo(m);
  r.inode = st.made.at(src->inode);
  return finish(std::move(m), std::move(r));
}

kj::Promise<Namespace::ShareResult> Namespace::shareChunks(
    uint64_t src, uint64_t srcOffset, uint64_t dst, uint64_t dstOffset, uint64_t length,
    kj::FunctionParam<bool(uint64_t inode)> quiet) {
  ShareResult out;
  MutationResult& r = out.mutation;
  auto from = readInode(src);
  auto to = readInode(dst);
  if (!from || !to) {
    r.status = Status::notFound("no such file");
    return out;
  }
  if (from->type != InodeType::REGULAR || to->type != InodeType::REGULAR) {
    r.status = Status::invalidArgument("chunks are shared between regular files only");
    return out;
  }
  r.inode = *to;
  // A file does not share a chunk with itself (a chunk has one owner per file), and offsets
  // that lie differently in their chunks share nothing.
  if (src == dst || srcOffset % chunkSize_ != dstOffset % chunkSize_) return out;
  uint64_t end = std::min(from->size, srcOffset + std::min(length, (uint64_t{1} << 46)));
  uint64_t first = (srcOffset + chunkSize_ - 1) / chunkSize_;
  uint64_t last = end / chunkSize_;  // slots [first, last) lie wholly in the range
  uint64_t sharedEnd = last * chunkSize_;
  bool tail = end % chunkSize_ != 0 && end == from->size && end - srcOffset + dstOffset >= to->size;
  if (tail) {
    ++last;
    sharedEnd = end;
  }
  if (last <= first) return out;
  auto toDst = [&](uint64_t index) {
    return index - srcOffset / chunkSize_ + dstOffset / chunkSize_;
  };
  uint32_t count = static_cast<uint32_t>(last - first);
  auto records = listChunks(src, static_cast<uint32_t>(first), count);
  bool holdsBytes =
      std::any_of(records.begin(), records.end(), [](const ChunkRecord& c) { return !c.pending; });
  if (holdsBytes && !quiet(src)) {
    r.status = Status(ErrorCode::BUSY, "the source is being written");
    return out;
  }
  Mutation m;
  ChunkRefs refs(*this, r.releasedHandles);
  for (auto& old : listChunks(dst, static_cast<uint32_t>(toDst(first)), count)) {
    refs.drop(m, {dst, old.index}, old);
  }
  for (auto& record : records) {
    if (record.pending) continue;
    ChunkRecord copy = record;
    copy.index = static_cast<uint32_t>(toDst(record.index));
    m.put(chunkKey(dst, copy.index), encodeChunk(copy));
    refs.share({src, record.index}, {dst, copy.index}, record.handle);
  }
  refs.writeTo(m);
  to->size = std::max(to->size, sharedEnd - srcOffset + dstOffset);
  to->mtimeNs = to->ctimeNs = nowNs();
  m.put(inodeKey(dst), encodeInode(*to));
  r.inode = *to;
  out.sharedOffset = first * chunkSize_;
  out.sharedLength = sharedEnd - out.sharedOffset;
  return finish(std::move(m), std::move(r)).then([out](MutationResult r) mutable {
    out.mutation = std::move(r);
    return out;
  });
}

kj::Promise<bool> Namespace::replaceChunk(uint64_t inode, const ChunkRecord& old,
                                          const ChunkRecord& replacement) {
  auto current = getChunk(inode, old.index);
  // The slot changed, or the chunk's other owners went meanwhile (then the writer may
  // write it in place).
  if (!current || current->handle != old.handle || !isShared(old.handle)) return false;
  Mutation m;
  std::vector<uint64_t> released;
  ChunkRefs refs(*this, released);
  refs.drop(m, {inode, old.index}, *current);
  refs.writeTo(m);
  ChunkRecord record = replacement;
  record.index = old.index;
  m.put(chunkKey(inode, old.index), encodeChunk(record));
  return store.commit(std::move(m)).then([]() { return true; });
}

}  // namespace cairn
