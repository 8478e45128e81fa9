#include "namespace.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include <cstring>

#include "names.h"
#include "namespace_codec.h"

namespace cairn {
using namespace codec;
namespace {

constexpr uint8_t INODE_FORMAT = 1;
const std::string NEXT_INODE_KEY = "mnext_inode";
const std::string NEXT_HANDLE_KEY = "mnext_handle";
const std::string CHUNK_SIZE_KEY = "mchunk_size";
}  // namespace

std::string requestKey(uint64_t client, uint64_t seq) {
  return fmt::format("r{:016x}{:016x}", client, seq);
}

std::string inodeKey(uint64_t inode) {
  std::string k = "i";
  putBe64(k, inode);
  return k;
}

std::string direntKey(uint64_t parent, std::string_view name) {
  std::string k = "d";
  putBe64(k, parent);
  k.append(name);
  return k;
}

std::string chunkKey(uint64_t inode, uint32_t index) {
  std::string k = "c";
  putBe64(k, inode);
  putBe32(k, index);
  return k;
}

std::string symlinkKey(uint64_t inode) {
  std::string k = "l";
  putBe64(k, inode);
  return k;
}

std::string xattrKey(uint64_t inode, std::string_view name) {
  std::string k = "x";
  putBe64(k, inode);
  k.append(name);
  return k;
}

std::string orphanKey(uint64_t inode) {
  std::string k = "o";
  putBe64(k, inode);
  return k;
}

std::string trashKey(int64_t deletedNs, uint64_t inode) {
  std::string k = "t";
  putBe64(k, static_cast<uint64_t>(deletedNs));
  putBe64(k, inode);
  return k;
}

// The trash by path: each trashed file also under its path, oldest first, so that a restore
// finds the newest of a path without walking the trash.
std::string trashPathKey(std::string_view path, int64_t deletedNs, uint64_t inode) {
  std::string k = "T";
  k.append(path);
  k.push_back('\0');  // no name holds one
  putBe64(k, static_cast<uint64_t>(deletedNs));
  putBe64(k, inode);
  return k;
}

std::string encodeInode(const Inode& n) {
  std::string s;
  putLe(s, INODE_FORMAT);
  putLe(s, n.inode);
  putLe(s, static_cast<uint8_t>(n.type));
  putLe(s, n.mode);
  putLe(s, n.uid);
  putLe(s, n.gid);
  putLe(s, n.nlink);
  putLe(s, n.size);
  putLe(s, n.atimeNs);
  putLe(s, n.mtimeNs);
  putLe(s, n.ctimeNs);
  putLe(s, n.replication);
  putLe(s, n.parent);
  putLe(s, n.rdev);
  putLe(s, static_cast<uint16_t>(n.name.size()));
  s.append(n.name);
  return s;
}

std::optional<Inode> decodeInode(std::string_view s) {
  Inode n;
  size_t pos = 0;
  uint8_t format = 0, type = 0;
  bool ok = getLe(s, pos, format) && format == INODE_FORMAT && getLe(s, pos, n.inode) &&
            getLe(s, pos, type) && getLe(s, pos, n.mode) && getLe(s, pos, n.uid) &&
            getLe(s, pos, n.gid) && getLe(s, pos, n.nlink) && getLe(s, pos, n.size) &&
            getLe(s, pos, n.atimeNs) && getLe(s, pos, n.mtimeNs) && getLe(s, pos, n.ctimeNs) &&
            getLe(s, pos, n.replication) && getLe(s, pos, n.parent) && getLe(s, pos, n.rdev) &&
            type <= static_cast<uint8_t>(InodeType::BLOCK_DEVICE);
  if (!ok) return std::nullopt;
  n.type = static_cast<InodeType>(type);
  uint16_t nameLength = 0;
  if (getLe(s, pos, nameLength) && pos + nameLength <= s.size()) {
    n.name = std::string(s.substr(pos, nameLength));
  }
  return n;
}

Namespace::Namespace(NamespaceStore& store, const kj::Clock& clock, uint64_t chunkSize)
    : store(store), clock(clock), chunkSize_(chunkSize) {
  KJ_REQUIRE(
      chunkSize >= 64 * 1024 && chunkSize % (64 * 1024) == 0 && chunkSize <= (uint64_t{1} << 31),
      "chunk size must be a multiple of 64 KiB, at most 2 GiB", chunkSize);
  reload();
}

void Namespace::reload() {
  trashIndexKnown = false;
  trashIndexCursor.clear();
  auto storedChunkSize = store.get(CHUNK_SIZE_KEY);
  auto storedInode = store.get(NEXT_INODE_KEY);
  auto storedHandle = store.get(NEXT_HANDLE_KEY);
  if (storedChunkSize) {
    chunkSize_ = decodeU64(*storedChunkSize);
    // What is stored is the reserve's end: numbers below it may have been handed out.
    nextInode = inodeLimit = storedInode ? decodeU64(*storedInode) : ROOT_INODE + 1;
    nextHandle = handleLimit = storedHandle ? decodeU64(*storedHandle) : 1;
    *handlesOnDisk = handleLimit;
    return;
  }
  nextInode = inodeLimit = ROOT_INODE + 1;
  nextHandle = handleLimit = 1;
  *handlesOnDisk = handleLimit;
  // A standby's empty store stays empty: the active's log fills it.
  if (!store.isWritable()) return;
  Inode root;
  root.inode = ROOT_INODE;
  root.type = InodeType::DIRECTORY;
  root.mode = 0755;
  root.nlink = 2;
  root.parent = ROOT_INODE;
  root.atimeNs = root.mtimeNs = root.ctimeNs = nowNs();
  Mutation m;
  m.put(inodeKey(ROOT_INODE), encodeInode(root));
  m.put(NEXT_INODE_KEY, encodeU64(nextInode));
  m.put(NEXT_HANDLE_KEY, encodeU64(nextHandle));
  m.put(CHUNK_SIZE_KEY, encodeU64(chunkSize_));
  // The first write is waited for by the caller's first mutation: the committer is FIFO.
  store.commit(std::move(m)).detach([](kj::Exception&& e) {
    KJ_LOG(ERROR, "cannot initialize metadata", e);
  });
}

int64_t Namespace::nowNs() { return (clock.now() - kj::UNIX_EPOCH) / kj::NANOSECONDS; }

std::optional<Inode> Namespace::readInode(uint64_t inode) {
  auto bytes = store.get(inodeKey(inode));
  if (!bytes) return std::nullopt;
  auto n = decodeInode(*bytes);
  KJ_ASSERT(n.has_value(), "corrupt inode record", inode);
  return n;
}

std::optional<uint64_t> Namespace::readDirent(uint64_t parent, std::string_view name) {
  auto bytes = store.get(direntKey(parent, name));
  if (!bytes) return std::nullopt;
  return decodeU64(*bytes);
}

Result<Inode> Namespace::getattr(uint64_t inode) {
  auto n = readInode(inode);
  if (!n) return Status::notFound(fmt::format("no inode {}", inode));
  return *n;
}

Result<Inode> Namespace::requireDirectory(uint64_t inode) {
  auto n = readInode(inode);
  if (!n) return Status::notFound(fmt::format("no directory with inode {}", inode));
  if (n->type != InodeType::DIRECTORY) {
    return Status::notDirectory(fmt::format("inode {} is not a directory", inode));
  }
  return *n;
}

Result<Inode> Namespace::lookup(uint64_t parent, std::string_view name) {
  Status s = validateName(name);
  if (!s.ok()) return s;
  auto dir = requireDirectory(parent);
  if (!dir.ok()) return dir.status;
  auto child = readDirent(parent, name);
  if (!child) return Status::notFound(fmt::format("no entry '{}'", name));
  auto n = readInode(*child);
  KJ_ASSERT(n.has_value(), "directory entry points to a missing inode", parent, *child);
  return *n;
}

Result<Inode> Namespace::resolve(std::string_view path) {
  auto parts = splitPath(path);
  if (!parts.ok()) return parts.status;
  auto current = getattr(ROOT_INODE);
  for (auto& part : parts.value) {
    if (current.value.type != InodeType::DIRECTORY) {
      return Status::notDirectory(fmt::format("a component of '{}' is not a directory", path));
    }
    current = lookup(current.value.inode, part);
    if (!current.ok())
      return Status(current.status.code(), fmt::format("{}: {}", path, current.status.message()));
  }
  return current;
}

Status Namespace::readdir(uint64_t inode, std::string_view after, size_t limit,
                          std::vector<Entry>& entries, bool& more) {
  auto dir = requireDirectory(inode);
  if (!dir.ok()) return dir.status;
  std::string prefix = direntKey(inode, "");
  std::string afterKey = after.empty() ? std::string() : direntKey(inode, after);
  auto rows = store.scan(prefix, afterKey, limit + 1);
  more = rows.size() > limit;
  if (more) rows.pop_back();
  for (auto& [key, value] : rows) {
    auto n = readInode(decodeU64(value));
    KJ_ASSERT(n.has_value(), "directory entry points to a missing inode", inode);
    entries.push_back(Entry{key.substr(prefix.size()), *n});
  }
  return Status::OK();
}

uint64_t Namespace::allocateNumber(const std::string& key, uint64_t& next, uint64_t& limit,
                                   std::shared_ptr<uint64_t> onDisk) {
  constexpr uint64_t RESERVE = 4096;
  uint64_t n = next++;
  if (next > limit) {
    // An entry of its own, before the caller's (which may yet be dropped): the log is
    // first-in first-out, so nothing that shows `n` is acknowledged before this is synced.
    limit = next + RESERVE;
    Mutation reserve;
    reserve.put(key, encodeU64(limit));
    reserve.sync = true;
    uint64_t reserved = limit;
    store.commit(std::move(reserve))
        .then([onDisk = std::move(onDisk), reserved]() {
          if (onDisk) *onDisk = std::max(*onDisk, reserved);
        })
        .detach([](kj::Exception&& e) { KJ_LOG(ERROR, "cannot reserve numbers", e); });
  }
  return n;
}

uint64_t Namespace::allocateInode(Mutation&) {
  return allocateNumber(NEXT_INODE_KEY, nextInode, inodeLimit, nullptr);
}

uint64_t Namespace::allocateHandle(Mutation&) {
  return allocateNumber(NEXT_HANDLE_KEY, nextHandle, handleLimit, handlesOnDisk);
}

kj::Promise<MutationResult> Namespace::finish(Mutation m, MutationResult result) {
  if (!result.status.ok() || m.empty()) return result;
  recordOutcome(m, result);
  return store.commit(std::move(m)).then([result = std::move(result)]() mutable {
    return std::move(result);
  });
}

// An outcome: when (ns), then the attributes (when there are some), as encodeInode has them.
void Namespace::recordOutcome(Mutation& m, const MutationResult& result) {
  auto key = store.takeRequestKey();
  if (!key) return;
  std::string value = encodeU64(static_cast<uint64_t>(nowNs()));
  if (result.inode.inode != 0) value += encodeInode(result.inode);
  m.put(*key, value);
}

std::optional<MutationResult> Namespace::recordedOutcome(const std::string& key) {
  auto value = store.get(key);
  if (!value || value->size() < 8) return std::nullopt;
  MutationResult r;
  if (value->size() > 8) {
    auto n = decodeInode(std::string_view(*value).substr(8));
    if (n) r.inode = *n;
  }
  return r;
}

kj::Promise<void> Namespace::expireOutcomes(kj::Duration maxAge) {
  uint64_t cutoff = static_cast<uint64_t>(nowNs() - maxAge / kj::NANOSECONDS);
  auto rows = store.scan("r", outcomeCursor, 4096);
  outcomeCursor = rows.size() < 4096 ? std::string() : rows.back().first;
  Mutation m;
  for (auto& [key, value] : rows) {
    if (value.size() >= 8 && decodeU64(value.substr(0, 8)) < cutoff) m.del(key);
  }
  if (m.empty()) return kj::READY_NOW;
  return store.commit(std::move(m));
}

Result<Inode> Namespace::newEntry(Mutation& m, uint64_t parent, std::string_view name,
                                  InodeType type, uint32_t mode, uint32_t uid, uint32_t gid) {
  Status valid = validateName(name);
  if (!valid.ok()) return valid;
  auto dir = requireDirectory(parent);
  if (!dir.ok()) return dir.status;
  if (readDirent(parent, name)) return Status::alreadyExists(fmt::format("'{}' exists", name));
  int64_t now = nowNs();
  Inode n;
  n.inode = allocateInode(m);
  n.type = type;
  n.mode = mode & 07777;
  n.uid = uid;
  n.gid = gid;
  n.replication = dir.value.replication;
  n.atimeNs = n.mtimeNs = n.ctimeNs = now;
  Inode p = dir.value;
  if (p.mode & MODE_SETGID) {
    // BSD group semantics in a setgid directory, as ext4 does.
    n.gid = p.gid;
    if (type == InodeType::DIRECTORY) n.mode |= MODE_SETGID;
  }
  if (type == InodeType::DIRECTORY) {
    n.nlink = 2;
    n.parent = parent;
    n.name = std::string(name);
    p.nlink += 1;
  }
  p.mtimeNs = p.ctimeNs = now;
  m.put(inodeKey(n.inode), encodeInode(n));
  m.put(inodeKey(p.inode), encodeInode(p));
  m.put(direntKey(parent, name), encodeU64(n.inode));
  return n;
}

kj::Promise<MutationResult> Namespace::mkdir(uint64_t parent, std::string_view name, uint32_t mode,
                                             uint32_t uid, uint32_t gid) {
  Mutation m;
  auto n = newEntry(m, parent, name, InodeType::DIRECTORY, mode, uid, gid);
  return finish(std::move(m), MutationResult{n.status, n.value, {}});
}

kj::Promise<MutationResult> Namespace::create(uint64_t parent, std::string_view name, uint32_t mode,
                                              uint32_t uid, uint32_t gid, uint8_t replication,
                                              bool exclusive) {
  MutationResult r;
  if (replication > MAX_REPLICATION) {
    r.status = Status::invalidArgument(
        fmt::format("replication {} (at most {})", replication, MAX_REPLICATION));
    return r;
  }
  if (validateName(name).ok() && requireDirectory(parent).ok()) {
    if (auto existing = readDirent(parent, name)) {
      auto n = readInode(*existing);
      KJ_ASSERT(n.has_value());
      if (exclusive) {
        r.status = Status::alreadyExists(fmt::format("'{}' exists", name));
      } else if (n->type == InodeType::DIRECTORY) {
        r.status = Status::isDirectory(fmt::format("'{}' is a directory", name));
      } else {
        r.inode = *n;
      }
      return r;
    }
  }
  Mutation m;
  auto n = newEntry(m, parent, name, InodeType::REGULAR, mode, uid, gid);
  if (n.ok() && replication != 0) {
    n.value.replication = replication;
    m.put(inodeKey(n.value.inode), encodeInode(n.value));
  }
  return finish(std::move(m), MutationResult{n.status, n.value, {}});
}

kj::Promise<MutationResult> Namespace::symlink(uint64_t parent, std::string_view name,
                                               std::string_view target, uint32_t uid,
                                               uint32_t gid) {
  if (target.empty() || target.size() > MAX_SYMLINK_BYTES ||
      target.find('\0') != std::string_view::npos) {
    return MutationResult{
        Status::invalidArgument("symlink target must be 1 to 4095 bytes, no NUL"), {}, {}};
  }
  Mutation m;
  auto n = newEntry(m, parent, name, InodeType::SYMLINK, 0777, uid, gid);
  if (n.ok()) {
    n.value.size = target.size();
    m.put(inodeKey(n.value.inode), encodeInode(n.value));
    m.put(symlinkKey(n.value.inode), std::string(target));
  }
  return finish(std::move(m), MutationResult{n.status, n.value, {}});
}

Result<std::string> Namespace::readlink(uint64_t inode) {
  auto n = readInode(inode);
  if (!n) return Status::notFound(fmt::format("no inode {}", inode));
  if (n->type != InodeType::SYMLINK) return Status::invalidArgument("not a symbolic link");
  auto target = store.get(symlinkKey(inode));
  KJ_ASSERT(target.has_value(), "symlink without a target", inode);
  return *target;
}

kj::Promise<MutationResult> Namespace::link(uint64_t inode, uint64_t newParent,
                                            std::string_view newName) {
  MutationResult r;
  if (!(r.status = validateName(newName)).ok()) return r;
  auto n = readInode(inode);
  if (!n) {
    r.status = Status::notFound(fmt::format("no inode {}", inode));
    return r;
  }
  if (n->type == InodeType::DIRECTORY) {
    r.status = Status(ErrorCode::NOT_PERMITTED, "hard links to directories are not allowed");
    return r;
  }
  auto dir = requireDirectory(newParent);
  if (!dir.ok()) return MutationResult{dir.status, {}, {}};
  if (readDirent(newParent, newName)) {
    r.status = Status::alreadyExists(fmt::format("'{}' exists", newName));
    return r;
  }
  int64_t now = nowNs();
  n->nlink += 1;
  n->ctimeNs = now;
  Inode p = dir.value;
  p.mtimeNs = p.ctimeNs = now;
  Mutation m;
  m.put(inodeKey(inode), encodeInode(*n));
  m.put(inodeKey(newParent), encodeInode(p));
  m.put(direntKey(newParent, newName), encodeU64(inode));
  r.inode = *n;
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::mknod(uint64_t parent, std::string_view name, InodeType type,
                                             uint32_t mode, uint32_t uid, uint32_t gid,
                                             uint64_t rdev) {
  if (type == InodeType::REGULAR) return create(parent, name, mode, uid, gid, 0, true);
  if (type == InodeType::DIRECTORY || type == InodeType::SYMLINK) {
    return MutationResult{
        Status::invalidArgument("mknod makes FIFOs, sockets and devices"), {}, {}};
  }
  Mutation m;
  auto n = newEntry(m, parent, name, type, mode, uid, gid);
  if (n.ok() && (type == InodeType::CHAR_DEVICE || type == InodeType::BLOCK_DEVICE)) {
    n.value.rdev = rdev;
    m.put(inodeKey(n.value.inode), encodeInode(n.value));
  }
  return finish(std::move(m), MutationResult{n.status, n.value, {}});
}

kj::Promise<Status> Namespace::setxattr(uint64_t inode, std::string_view name,
                                        std::string_view value, uint32_t flags) {
  auto n = readInode(inode);
  if (!n) return Status::notFound(fmt::format("no inode {}", inode));
  if (name.empty() || name.size() > MAX_NAME_BYTES) {
    return Status::nameTooLong("attribute name must be 1 to 255 bytes");
  }
  if (value.size() > MAX_XATTR_VALUE) return Status::invalidArgument("attribute value over 64 KiB");
  bool exists = store.get(xattrKey(inode, name)).has_value();
  if ((flags & 1) && exists) return Status::alreadyExists(fmt::format("attribute {} exists", name));
  if ((flags & 2) && !exists) return Status(ErrorCode::NO_ATTRIBUTE, std::string(name));
  if (!exists &&
      store.scan(xattrKey(inode, ""), "", MAX_XATTRS_PER_INODE).size() >= MAX_XATTRS_PER_INODE) {
    return Status::noSpace("too many attributes on one inode");
  }
  n->ctimeNs = nowNs();
  Mutation m;
  m.put(xattrKey(inode, name), std::string(value));
  m.put(inodeKey(inode), encodeInode(*n));
  recordOutcome(m, MutationResult{Status::OK(), {}, {}});
  return store.commit(std::move(m)).then([]() { return Status::OK(); });
}

Result<std::string> Namespace::getxattr(uint64_t inode, std::string_view name) {
  if (!readInode(inode)) return Status::notFound(fmt::format("no inode {}", inode));
  auto v = store.get(xattrKey(inode, name));
  if (!v) return Status(ErrorCode::NO_ATTRIBUTE, std::string(name));
  return *v;
}

Result<std::vector<std::string>> Namespace::listxattr(uint64_t inode) {
  if (!readInode(inode)) return Status::notFound(fmt::format("no inode {}", inode));
  std::string prefix = xattrKey(inode, "");
  std::vector<std::string> names;
  for (auto& [key, value] : store.scan(prefix, "", MAX_XATTRS_PER_INODE)) {
    names.push_back(key.substr(prefix.size()));
  }
  return names;
}

kj::Promise<Status> Namespace::removexattr(uint64_t inode, std::string_view name) {
  auto n = readInode(inode);
  if (!n) return Status::notFound(fmt::format("no inode {}", inode));
  if (!store.get(xattrKey(inode, name))) return Status(ErrorCode::NO_ATTRIBUTE, std::string(name));
  n->ctimeNs = nowNs();
  Mutation m;
  m.del(xattrKey(inode, name));
  m.put(inodeKey(inode), encodeInode(*n));
  recordOutcome(m, MutationResult{Status::OK(), {}, {}});
  return store.commit(std::move(m)).then([]() { return Status::OK(); });
}

kj::Promise<MutationResult> Namespace::setattr(uint64_t inode, const SetAttrArgs& args) {
  MutationResult r;
  auto n = readInode(inode);
  if (!n) {
    r.status = Status::notFound(fmt::format("no inode {}", inode));
    return r;
  }
  Mutation m;
  int64_t now = nowNs();
  if (args.mode) n->mode = *args.mode & 07777;
  if (args.uid) n->uid = *args.uid;
  if (args.gid) n->gid = *args.gid;
  if (args.atimeNs) n->atimeNs = *args.atimeNs;
  if (args.mtimeNs) n->mtimeNs = *args.mtimeNs;
  if (args.size) {
    if (n->type == InodeType::DIRECTORY) {
      r.status = Status::isDirectory("cannot set the size of a directory");
      return r;
    }
    if (*args.size < n->size) {
      // Chunks that start at or past the new end go; the partial last one stays.
      uint64_t keep = (*args.size + chunkSize_ - 1) / chunkSize_;
      ChunkRefs refs(*this, r.releasedHandles);
      for (auto& c : listChunks(inode, static_cast<uint32_t>(keep), UINT32_MAX)) {
        refs.drop(m, {inode, c.index}, c);
      }
      refs.writeTo(m);
      // A new end within a chunk is on disk before the chunk is cut there (truncateChunk),
      // with the cut owed until its replicas have made it.
      uint32_t offset = static_cast<uint32_t>(*args.size % chunkSize_);
      m.sync = offset != 0;
      auto last = getChunk(inode, static_cast<uint32_t>(*args.size / chunkSize_));
      if (offset != 0 && last && !isShared(last->handle)) {
        last->cutAt = offset;
        m.put(chunkKey(inode, last->index), encodeChunk(*last));
      }
    }
    if (*args.size != n->size && !args.mtimeNs) n->mtimeNs = now;
    n->size = *args.size;
  }
  n->ctimeNs = now;
  m.put(inodeKey(inode), encodeInode(*n));
  r.inode = *n;
  return finish(std::move(m), std::move(r));
}

void Namespace::dropLink(Mutation& m, Inode victim, int64_t now, ChunkRefs& refs) {
  if (victim.type != InodeType::DIRECTORY && victim.nlink > 1) {
    victim.nlink -= 1;
    victim.ctimeNs = now;
    m.put(inodeKey(victim.inode), encodeInode(victim));
    return;
  }
  if (victim.type == InodeType::REGULAR && isOpen(victim.inode)) {
    // POSIX: a file unlinked while open lives, nameless, until its last close.
    victim.nlink = 0;
    victim.ctimeNs = now;
    m.put(inodeKey(victim.inode), encodeInode(victim));
    m.put(orphanKey(victim.inode), "");
    return;
  }
  deleteInode(m, victim, refs);
}

void Namespace::deleteInode(Mutation& m, const Inode& victim, ChunkRefs& refs) {
  m.del(inodeKey(victim.inode));
  m.del(orphanKey(victim.inode));
  if (victim.type == InodeType::SYMLINK) m.del(symlinkKey(victim.inode));
  for (auto& [key, value] : store.scan(xattrKey(victim.inode, ""), "", MAX_XATTRS_PER_INODE)) {
    m.del(key);
  }
  for (auto& c : listChunks(victim.inode, 0, UINT32_MAX)) refs.drop(m, {victim.inode, c.index}, c);
}

void Namespace::opened(uint64_t inode) { opens[inode]++; }

kj::Promise<MutationResult> Namespace::closed(uint64_t inode) {
  MutationResult r;
  auto it = opens.find(inode);
  if (it == opens.end()) return r;
  if (--it->second > 0) return r;
  opens.erase(it);
  if (!store.get(orphanKey(inode))) return r;
  // The last close of a file that lost its last name: now it goes.
  Mutation m;
  ChunkRefs refs(*this, r.releasedHandles);
  if (auto n = readInode(inode)) {
    deleteInode(m, *n, refs);
  } else {
    m.del(orphanKey(inode));
  }
  refs.writeTo(m);
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::expireOrphans() {
  MutationResult r;
  Mutation m;
  ChunkRefs refs(*this, r.releasedHandles);
  size_t deleted = 0;
  std::string after;
  // Page through every orphan (most are open; at most 1024 deletions per call).
  for (;;) {
    auto rows = store.scan("o", after, 4096);
    if (rows.empty()) break;
    for (auto& [key, value] : rows) {
      uint64_t inode = getBe(key, 1, 8);
      if (isOpen(inode) || deleted >= 1024) continue;
      ++deleted;
      if (auto n = readInode(inode)) {
        deleteInode(m, *n, refs);
      } else {
        m.del(key);
      }
    }
    after = rows.back().first;
  }
  refs.writeTo(m);
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::unlink(uint64_t parent, std::string_view name) {
  MutationResult r;
  auto child = lookup(parent, name);
  if (!child.ok()) return MutationResult{child.status, {}, {}};
  if (child.value.type == InodeType::DIRECTORY) {
    r.status = Status::isDirectory(fmt::format("'{}' is a directory", name));
    return r;
  }
  Mutation m;
  int64_t now = nowNs();
  Inode p = *readInode(parent);
  p.mtimeNs = p.ctimeNs = now;
  m.put(inodeKey(parent), encodeInode(p));
  m.del(direntKey(parent, name));
  if (trashPeriod > 0 * kj::SECONDS && child.value.type == InodeType::REGULAR &&
      child.value.nlink <= 1) {
    // Lazy deletion: the file leaves the namespace but keeps its inode and chunks; it has
    // no link left (fstat on a descriptor still open says so).
    std::string dir = pathOf(parent);
    std::string path = (dir == "/" ? "" : dir) + "/" + std::string(name);
    m.put(trashKey(now, child.value.inode), path);
    m.put(trashPathKey(path, now, child.value.inode), "");
    Inode trashed = child.value;
    trashed.nlink = 0;
    trashed.ctimeNs = now;
    m.put(inodeKey(trashed.inode), encodeInode(trashed));
    return finish(std::move(m), std::move(r));
  }
  ChunkRefs refs(*this, r.releasedHandles);
  dropLink(m, child.value, now, refs);
  refs.writeTo(m);
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::rmdir(uint64_t parent, std::string_view name) {
  MutationResult r;
  auto child = lookup(parent, name);
  if (!child.ok()) return MutationResult{child.status, {}, {}};
  if (child.value.type != InodeType::DIRECTORY) {
    r.status = Status::notDirectory(fmt::format("'{}' is not a directory", name));
    return r;
  }
  if (!store.scan(direntKey(child.value.inode, ""), "", 1).empty()) {
    r.status = Status::notEmpty(fmt::format("directory '{}' is not empty", name));
    return r;
  }
  Mutation m;
  int64_t now = nowNs();
  Inode p = *readInode(parent);
  p.nlink -= 1;
  p.mtimeNs = p.ctimeNs = now;
  m.put(inodeKey(parent), encodeInode(p));
  m.del(direntKey(parent, name));
  ChunkRefs refs(*this, r.releasedHandles);
  dropLink(m, child.value, now, refs);
  refs.writeTo(m);
  return finish(std::move(m), std::move(r));
}

bool Namespace::isAncestor(uint64_t ancestor, uint64_t inode) {
  // Directories have exactly one parent, so the walk to the root is a chain.
  for (uint64_t current = inode;;) {
    if (current == ancestor) return true;
    if (current == ROOT_INODE) return false;
    auto n = readInode(current);
    KJ_ASSERT(n.has_value(), "missing directory in parent chain", current);
    current = n->parent;
  }
}

kj::Promise<MutationResult> Namespace::rename(uint64_t srcParent, std::string_view srcName,
                                              uint64_t dstParent, std::string_view dstName,
                                              bool noReplace) {
  MutationResult r;
  if (!(r.status = validateName(dstName)).ok()) return r;
  auto src = lookup(srcParent, srcName);
  if (!src.ok()) return MutationResult{src.status, {}, {}};
  auto dstDir = requireDirectory(dstParent);
  if (!dstDir.ok()) return MutationResult{dstDir.status, {}, {}};
  bool srcIsDir = src.value.type == InodeType::DIRECTORY;
  if (srcIsDir && isAncestor(src.value.inode, dstParent)) {
    r.status =
        Status::invalidArgument(fmt::format("cannot move directory '{}' into itself", srcName));
    return r;
  }
  Mutation m;
  int64_t now = nowNs();
  std::optional<Inode> replaced;
  if (auto existing = readDirent(dstParent, dstName)) {
    if (noReplace) {
      r.status = Status::alreadyExists(fmt::format("'{}' exists", dstName));
      return r;
    }
    if (*existing == src.value.inode) return r;  // same file: nothing to do (POSIX)
    replaced = readInode(*existing);
    KJ_ASSERT(replaced.has_value());
    bool dstIsDir = replaced->type == InodeType::DIRECTORY;
    if (srcIsDir && !dstIsDir) {
      r.status = Status::notDirectory(fmt::format("'{}' is not a directory", dstName));
      return r;
    }
    if (!srcIsDir && dstIsDir) {
      r.status = Status::isDirectory(fmt::format("'{}' is a directory", dstName));
      return r;
    }
    if (dstIsDir && !store.scan(direntKey(replaced->inode, ""), "", 1).empty()) {
      r.status = Status::notEmpty(fmt::format("directory '{}' is not empty", dstName));
      return r;
    }
  }
  // Parents are re-read after each change so that srcParent == dstParent works.
  auto updateParent = [&](uint64_t inode, int linkDelta) {
    auto key = inodeKey(inode);
    Inode p = *readInode(inode);
    for (auto& [k, v] : m.ops) {
      if (k == key && v) p = *decodeInode(*v);
    }
    p.nlink = static_cast<uint32_t>(static_cast<int64_t>(p.nlink) + linkDelta);
    p.mtimeNs = p.ctimeNs = now;
    m.put(key, encodeInode(p));
  };
  ChunkRefs refs(*this, r.releasedHandles);
  if (replaced) {
    dropLink(m, *replaced, now, refs);
    if (replaced->type == InodeType::DIRECTORY) updateParent(dstParent, -1);
  }
  m.del(direntKey(srcParent, srcName));
  m.put(direntKey(dstParent, dstName), encodeU64(src.value.inode));
  Inode moved = src.value;
  moved.ctimeNs = now;
  if (srcIsDir) moved.name = std::string(dstName);
  if (srcIsDir && srcParent != dstParent) {
    moved.parent = dstParent;
    updateParent(srcParent, -1);
    updateParent(dstParent, +1);
  } else {
    updateParent(srcParent, 0);
    if (dstParent != srcParent) updateParent(dstParent, 0);
  }
  m.put(inodeKey(moved.inode), encodeInode(moved));
  refs.writeTo(m);
  r.inode = moved;
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::setReplication(uint64_t inode, uint8_t replication) {
  MutationResult r;
  if (replication < 1 || replication > MAX_REPLICATION) {
    r.status = Status::invalidArgument(
        fmt::format("replication must be 1 to {}, not {}", MAX_REPLICATION, replication));
    return r;
  }
  auto n = readInode(inode);
  if (!n) {
    r.status = Status::notFound(fmt::format("no inode {}", inode));
    return r;
  }
  n->replication = replication;
  n->ctimeNs = nowNs();
  Mutation m;
  m.put(inodeKey(inode), encodeInode(*n));
  r.inode = *n;
  return finish(std::move(m), std::move(r));
}

kj::Promise<MutationResult> Namespace::commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs) {
  MutationResult r;
  auto n = readInode(inode);
  if (!n) {
    r.status = Status::notFound(fmt::format("no inode {}", inode));
    return r;
  }
  if (n->type != InodeType::REGULAR) {
    r.status = Status::invalidArgument("not a regular file");
    return r;
  }
  n->size = std::max(n->size, size);
  n->mtimeNs = mtimeNs != 0 ? mtimeNs : nowNs();
  n->ctimeNs = nowNs();
  Mutation m;
  m.put(inodeKey(inode), encodeInode(*n));
  r.inode = *n;
  return finish(std::move(m), std::move(r));
}

std::optional<ChunkRecord> Namespace::getChunk(uint64_t inode, uint32_t index) {
  auto bytes = store.get(chunkKey(inode, index));
  if (!bytes) return std::nullopt;
  return decodeChunk(index, *bytes);
}

std::optional<uint32_t> Namespace::nextChunk(uint64_t inode, uint32_t from) {
  std::string prefix = "c";
  putBe64(prefix, inode);
  std::string after = from == 0 ? std::string() : chunkKey(inode, from - 1);
  for (auto& [key, value] : store.scan(prefix, after, 1)) {
    return static_cast<uint32_t>(getBe(key, 9, 4));
  }
  return std::nullopt;
}

std::vector<ChunkRecord> Namespace::listChunks(uint64_t inode, uint32_t first, uint32_t count) {
  std::string prefix = "c";
  putBe64(prefix, inode);
  std::string after = first == 0 ? std::string() : chunkKey(inode, first - 1);
  std::vector<ChunkRecord> out;
  uint64_t end = uint64_t{first} + count;
  for (auto& [key, value] : store.scan(prefix, after, count)) {
    uint32_t index = static_cast<uint32_t>(getBe(key, 9, 4));
    if (index >= end) break;
    out.push_back(decodeChunk(index, value));
  }
  return out;
}

void Namespace::forEachChunk(const std::function<void(uint64_t, const ChunkRecord&)>& visit) {
  std::string after;
  for (;;) {
    auto rows = store.scan("c", after, 4096);
    if (rows.empty()) break;
    for (auto& [key, value] : rows) {
      visit(getBe(key, 1, 8), decodeChunk(static_cast<uint32_t>(getBe(key, 9, 4)), value));
    }
    after = rows.back().first;
  }
}

std::vector<std::pair<uint64_t, ChunkRecord>> Namespace::allChunks() {
  std::vector<std::pair<uint64_t, ChunkRecord>> out;
  forEachChunk([&out](uint64_t inode, const ChunkRecord& r) { out.emplace_back(inode, r); });
  return out;
}

kj::Promise<Result<ChunkRecord>> Namespace::allocateChunk(uint64_t inode, uint32_t index) {
  auto n = readInode(inode);
  if (!n) return Result<ChunkRecord>(Status::notFound(fmt::format("no inode {}", inode)));
  if (n->type != InodeType::REGULAR) {
    return Result<ChunkRecord>(Status::invalidArgument("not a regular file"));
  }
  if (auto existing = getChunk(inode, index)) return Result<ChunkRecord>(*existing);
  Mutation m;
  ChunkRecord record{index, allocateHandle(m), 1, 1, true};
  m.put(chunkKey(inode, index), encodeChunk(record));
  return store.commit(std::move(m)).then([record]() { return Result<ChunkRecord>(record); });
}

kj::Promise<void> Namespace::forgetChunk(uint64_t inode, const ChunkRecord& record) {
  auto current = getChunk(inode, record.index);
  if (!current || current->handle != record.handle) return kj::READY_NOW;
  Mutation m;
  m.del(chunkKey(inode, record.index));
  return store.commit(std::move(m));
}

kj::Promise<void> Namespace::setChunkVersion(uint64_t inode, const ChunkRecord& record, bool sync) {
  Mutation m;
  m.sync = sync;
  auto owners = ownersOf(record.handle);
  if (owners.empty()) {
    // A record released meanwhile (or its slot given to a new chunk) is not written back.
    auto now = getChunk(inode, record.index);
    if (!now || now->handle != record.handle) return kj::READY_NOW;
    owners.push_back({inode, record.index});
  }
  for (auto& o : owners) {
    ChunkRecord r = record;
    r.index = o.index;
    m.put(chunkKey(o.inode, o.index), encodeChunk(r));
  }
  return store.commit(std::move(m));
}

kj::Promise<uint64_t> Namespace::reserveHandle() {
  Mutation m;
  uint64_t handle = allocateHandle(m);
  return store.commit(std::move(m)).then([handle]() { return handle; });
}

}  // namespace cairn
