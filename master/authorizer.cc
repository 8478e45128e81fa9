#include "authorizer.h"

#include <fmt/format.h>

#include "master.h"

namespace cairn {
namespace {

Credentials nobody() { return Credentials{NOBODY, {NOBODY}}; }

kj::Promise<MutationResult> refused(Status s) { return MutationResult{std::move(s), {}, {}}; }

}  // namespace

Result<Credentials> credentialsFor(const Identity& peer, std::optional<Credentials> stated) {
  if (!peer.authenticated || peer.role == Role::ADMIN) {
    return stated ? *stated : Credentials::root();
  }
  Credentials who;
  switch (peer.role) {
    case Role::MOUNT:
      who = stated ? *stated : nobody();
      break;
    case Role::WORKER:
      // Workers and the coordinator act for a job's submitter, or as themselves.
      who = stated ? *stated : Credentials{peer.uid, peer.gids};
      break;
    case Role::USER:
      if (stated && stated->uid != peer.uid) {
        return Status::notPermitted(
            fmt::format("a {} certificate acts as uid {} only", roleName(peer.role), peer.uid));
      }
      who = Credentials{peer.uid, peer.gids};
      break;
    default:
      return Status::notPermitted(
          fmt::format("a {} certificate makes no namespace calls", roleName(peer.role)));
  }
  if (who.isRoot() && !peer.allowRoot) who = nobody();  // root_squash
  if (who.gids.empty()) who.gids.push_back(who.uid);
  return who;
}

bool isAdmin(const Identity& peer) { return !peer.authenticated || peer.role == Role::ADMIN; }

Authorizer::Authorizer(Master& master) : master(master), ns(master.names()) {}

Status Authorizer::changesAllowed() const {
  if (!master.isActive()) return Status(ErrorCode::NOT_ACTIVE, "this master is a standby");
  auto& chunks = master.chunkManager();
  return chunks.inManualSafeMode() ? chunks.safeModeRefusal() : Status::OK();
}

Result<Inode> Authorizer::directoryFor(const Credentials& who, uint64_t dir, int mask) {
  auto n = ns.getattr(dir);
  if (!n.ok()) return n;
  if (n.value.type != InodeType::DIRECTORY) {
    return Status::notDirectory(fmt::format("inode {} is not a directory", dir));
  }
  Status s = checkAccess(n.value, who, mask);
  if (!s.ok()) return s;
  return n;
}

Result<Inode> Authorizer::lookup(const Credentials& who, uint64_t parent, std::string_view name) {
  auto dir = directoryFor(who, parent, MAY_EXEC);
  if (!dir.ok()) return dir;
  return ns.lookup(parent, name);
}

Result<Inode> Authorizer::resolve(const Credentials& who, std::string_view path) {
  if (path.empty() || path[0] != '/') {
    return Status::invalidArgument(fmt::format("'{}' is not an absolute path", path));
  }
  auto current = ns.getattr(ROOT_INODE);
  size_t pos = 0;
  while (current.ok() && pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(pos, end - pos);
    pos = end + 1;
    if (part.empty()) continue;
    auto next = lookup(who, current.value.inode, part);
    if (!next.ok()) {
      return Status(next.status.code(), fmt::format("{}: {}", path, next.status.message()));
    }
    current = next;
  }
  return current;
}

Status Authorizer::readdir(const Credentials& who, uint64_t inode, std::string_view after,
                           size_t limit, std::vector<Namespace::Entry>& entries, bool& more) {
  auto dir = directoryFor(who, inode, MAY_READ);
  if (!dir.ok()) return dir.status;
  return ns.readdir(inode, after, limit, entries, more);
}

kj::Promise<MutationResult> Authorizer::mkdir(const Credentials& who, uint64_t parent,
                                              std::string_view name, uint32_t mode) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto dir = directoryFor(who, parent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  return ns.mkdir(parent, name, mode, who.uid, who.primaryGid());
}

kj::Promise<MutationResult> Authorizer::create(const Credentials& who, uint64_t parent,
                                               std::string_view name, uint32_t mode,
                                               uint8_t replication, bool exclusive, bool open) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto dir = directoryFor(who, parent, MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  auto existing = ns.lookup(parent, name);
  if (existing.ok()) {
    // open(O_CREAT) of a file that is there opens it (O_EXCL: EEXIST, as Linux answers
    // before checking the directory).
    if (open && !exclusive) {
      Status s = checkAccess(existing.value, who, MAY_WRITE);
      if (!s.ok()) return refused(s);
    }
  } else {
    Status s = checkAccess(dir.value, who, MAY_WRITE | MAY_EXEC);
    if (!s.ok()) return refused(s);
  }
  return ns.create(parent, name, mode, who.uid, who.primaryGid(), replication, exclusive);
}

kj::Promise<MutationResult> Authorizer::symlink(const Credentials& who, uint64_t parent,
                                                std::string_view name, std::string_view target) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto dir = directoryFor(who, parent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  return ns.symlink(parent, name, target, who.uid, who.primaryGid());
}

kj::Promise<MutationResult> Authorizer::mknod(const Credentials& who, uint64_t parent,
                                              std::string_view name, InodeType type, uint32_t mode,
                                              uint64_t rdev) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  if ((type == InodeType::CHAR_DEVICE || type == InodeType::BLOCK_DEVICE) && !who.isRoot()) {
    return refused(Status::notPermitted("only root makes device nodes"));
  }
  auto dir = directoryFor(who, parent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  return ns.mknod(parent, name, type, mode, who.uid, who.primaryGid(), rdev);
}

kj::Promise<MutationResult> Authorizer::link(const Credentials& who, uint64_t inode,
                                             uint64_t newParent, std::string_view newName) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto dir = directoryFor(who, newParent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  return ns.link(inode, newParent, newName);
}

Status Authorizer::mayRemove(const Credentials& who, uint64_t parent, std::string_view name) {
  auto dir = directoryFor(who, parent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return dir.status;
  auto victim = ns.lookup(parent, name);
  return victim.ok() ? checkRemove(dir.value, victim.value, who) : Status::OK();
}

kj::Promise<MutationResult> Authorizer::unlink(const Credentials& who, uint64_t parent,
                                               std::string_view name) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  Status s = mayRemove(who, parent, name);
  if (!s.ok()) return refused(s);
  return ns.unlink(parent, name);
}

kj::Promise<MutationResult> Authorizer::rmdir(const Credentials& who, uint64_t parent,
                                              std::string_view name) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  Status s = mayRemove(who, parent, name);
  if (!s.ok()) return refused(s);
  return ns.rmdir(parent, name);
}

kj::Promise<MutationResult> Authorizer::rename(const Credentials& who, uint64_t srcParent,
                                               std::string_view srcName, uint64_t dstParent,
                                               std::string_view dstName, bool noReplace) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto src = directoryFor(who, srcParent, MAY_WRITE | MAY_EXEC);
  if (!src.ok()) return refused(src.status);
  auto dst = directoryFor(who, dstParent, MAY_WRITE | MAY_EXEC);
  if (!dst.ok()) return refused(dst.status);
  auto victim = ns.lookup(srcParent, srcName);
  if (victim.ok()) {
    Status s = checkRemove(src.value, victim.value, who);
    // A directory that moves to another parent has its ".." rewritten.
    if (s.ok() && victim.value.type == InodeType::DIRECTORY && srcParent != dstParent) {
      s = checkAccess(victim.value, who, MAY_WRITE);
    }
    if (!s.ok()) return refused(s);
  }
  auto replaced = ns.lookup(dstParent, dstName);
  if (replaced.ok() && !noReplace) {
    Status s = checkRemove(dst.value, replaced.value, who);
    if (!s.ok()) return refused(s);
  }
  return ns.rename(srcParent, srcName, dstParent, dstName, noReplace);
}

Result<Inode> Authorizer::open(const Credentials& who, uint64_t inode, int mask) {
  if (mask & MAY_WRITE) {
    if (Status s = changesAllowed(); !s.ok()) return s;
  }
  auto n = ns.getattr(inode);
  if (!n.ok()) return n;
  Status s = checkAccess(n.value, who, mask & (MAY_READ | MAY_WRITE));
  if (!s.ok()) return s;
  return n;
}

kj::Promise<MutationResult> Authorizer::setattr(const Credentials& who, const OpenFiles& session,
                                                uint64_t inode, const SetAttrArgs& args) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto n = ns.getattr(inode);
  if (!n.ok()) return refused(n.status);
  SetAttrArgs allowed = args;
  if (args.mode) {
    auto mode = checkChmod(n.value, who, *args.mode);
    if (!mode.ok()) return refused(mode.status);
    allowed.mode = mode.value;
  }
  if (args.uid || args.gid) {
    Status s = checkChown(n.value, who, args.uid, args.gid);
    if (!s.ok()) return refused(s);
  }
  if (args.size && !session.holdsForWrite(inode)) {
    Status s = checkAccess(n.value, who, MAY_WRITE);
    if (!s.ok()) return refused(s);
  }
  if (args.atimeNs || args.mtimeNs) {
    Status s = checkTimes(n.value, who, /*toNow=*/true);
    if (!s.ok()) return refused(s);
  }
  return master.setattr(inode, allowed);
}

kj::Promise<MutationResult> Authorizer::setReplication(const Credentials& who, uint64_t inode,
                                                       uint8_t goal) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto n = ns.getattr(inode);
  if (!n.ok()) return refused(n.status);
  Status s = checkAccess(n.value, who, MAY_WRITE);
  if (!s.ok()) return refused(s);
  return master.setReplication(inode, goal);
}

kj::Promise<MutationResult> Authorizer::snapshot(const Credentials& who, uint64_t source,
                                                 uint64_t parent, std::string_view name) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  auto dir = directoryFor(who, parent, MAY_WRITE | MAY_EXEC);
  if (!dir.ok()) return refused(dir.status);
  auto mayCopy = [who](const Inode& n) {
    if (n.type == InodeType::SYMLINK) return Status::OK();
    return checkAccess(n, who, n.type == InodeType::DIRECTORY ? MAY_READ | MAY_EXEC : MAY_READ);
  };
  // The source itself before anything is frozen (the walk checks every entry again).
  auto src = ns.getattr(source);
  if (!src.ok()) return refused(src.status);
  if (Status s = mayCopy(src.value); !s.ok()) return refused(s);
  auto request = kj::heap<SnapshotRequest>();
  request->source = source;
  request->parent = parent;
  request->name = std::string(name);
  if (!who.isRoot()) request->owner = std::make_pair(who.uid, who.primaryGid());
  request->mayCopy = kj::mv(mayCopy);  // kj::Function would keep a reference to an lvalue
  return master.snapshot(kj::mv(request));
}

kj::Promise<Namespace::ShareResult> Authorizer::shareChunks(const Credentials& who,
                                                            const OpenFiles& session, uint64_t src,
                                                            uint64_t srcOffset, uint64_t dst,
                                                            uint64_t dstOffset, uint64_t length) {
  Status s = mayReadChunks(who, session, src);
  if (s.ok()) s = mayWriteChunks(who, session, dst);
  if (!s.ok()) return Namespace::ShareResult{{s, {}, {}}};
  return master.shareChunks(src, srcOffset, dst, dstOffset, length);
}

kj::Promise<Status> Authorizer::setxattr(const Credentials& who, uint64_t inode,
                                         const std::string& name, const std::string& value,
                                         uint32_t flags) {
  if (Status s = changesAllowed(); !s.ok()) return s;
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  Status s = checkAccess(n.value, who, MAY_WRITE);
  if (!s.ok()) return s;
  return master.setxattr(inode, name, value, flags);
}

Result<std::string> Authorizer::getxattr(const Credentials& who, uint64_t inode,
                                         const std::string& name) {
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  Status s = checkAccess(n.value, who, MAY_READ);
  if (!s.ok()) return s;
  return master.getxattr(inode, name);
}

Result<std::vector<std::string>> Authorizer::listxattr(const Credentials& who, uint64_t inode) {
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  Status s = checkAccess(n.value, who, MAY_READ);
  if (!s.ok()) return s;
  return master.listxattr(inode);
}

kj::Promise<Status> Authorizer::removexattr(const Credentials& who, uint64_t inode,
                                            const std::string& name) {
  if (Status s = changesAllowed(); !s.ok()) return s;
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  Status s = checkAccess(n.value, who, MAY_WRITE);
  if (!s.ok()) return s;
  return master.removexattr(inode, name);
}

std::vector<TrashEntry> Authorizer::listTrash(const Credentials& who, size_t limit) {
  auto all = ns.listTrash(limit);
  if (who.isRoot()) return all;
  std::vector<TrashEntry> mine;
  for (auto& e : all) {
    auto n = ns.getattr(e.inode);
    if (n.ok() && n.value.uid == who.uid) mine.push_back(e);
  }
  return mine;
}

kj::Promise<MutationResult> Authorizer::restore(const Credentials& who, std::string_view path) {
  if (Status s = changesAllowed(); !s.ok()) return refused(s);
  if (!who.isRoot()) {
    // The newest trashed file of that path is what comes back: it must be the caller's,
    // and go into a directory the caller may write.
    std::optional<TrashEntry> newest;
    for (auto& e : ns.listTrash(100000)) {
      if (e.path == path && (!newest || e.deletedNs >= newest->deletedNs)) newest = e;
    }
    if (!newest) return refused(Status::notFound(fmt::format("'{}' is not in the trash", path)));
    auto n = ns.getattr(newest->inode);
    if (!n.ok() || n.value.uid != who.uid) {
      return refused(Status::notPermitted(
          fmt::format("'{}' in the trash is another user's: only an admin restores it", path)));
    }
    size_t slash = path.rfind('/');
    std::string parentPath = slash == 0 ? "/" : std::string(path.substr(0, slash));
    auto parent = resolve(who, parentPath);
    if (!parent.ok()) return refused(parent.status);
    auto dir = directoryFor(who, parent.value.inode, MAY_WRITE | MAY_EXEC);
    if (!dir.ok()) return refused(dir.status);
  }
  return ns.restore(path);
}

Status Authorizer::mayReadChunks(const Credentials& who, const OpenFiles& session, uint64_t inode) {
  if (session.holds(inode)) return Status::OK();
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  return checkAccess(n.value, who, MAY_READ);
}

Status Authorizer::mayWriteChunks(const Credentials& who, const OpenFiles& session,
                                  uint64_t inode) {
  if (Status s = changesAllowed(); !s.ok()) return s;
  if (session.holdsForWrite(inode)) return Status::OK();
  auto n = ns.getattr(inode);
  if (!n.ok()) return n.status;
  return checkAccess(n.value, who, MAY_WRITE);
}

}  // namespace cairn
