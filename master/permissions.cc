#include "permissions.h"

#include <fmt/format.h>

#include <algorithm>

#include "namespace.h"

namespace cairn {
namespace {
constexpr uint32_t STICKY = 01000;

Status denied(const Inode& n, const char* what) {
  return Status(ErrorCode::PERMISSION_DENIED, fmt::format("{} inode {}", what, n.inode));
}

Status notPermitted(const Inode& n, const char* what) {
  return Status(ErrorCode::NOT_PERMITTED, fmt::format("{} inode {}", what, n.inode));
}
}  // namespace

bool Credentials::inGroup(uint32_t gid) const {
  return std::find(gids.begin(), gids.end(), gid) != gids.end();
}

bool mayAccess(const Inode& n, const Credentials& who, int mask) {
  if (who.isRoot()) {
    if (!(mask & MAY_EXEC)) return true;
    return n.type == InodeType::DIRECTORY || (n.mode & 0111) != 0;
  }
  uint32_t bits;
  if (who.uid == n.uid) {
    bits = (n.mode >> 6) & 7;
  } else if (who.inGroup(n.gid)) {
    bits = (n.mode >> 3) & 7;
  } else {
    bits = n.mode & 7;
  }
  return (bits & static_cast<uint32_t>(mask)) == static_cast<uint32_t>(mask);
}

Status checkAccess(const Inode& n, const Credentials& who, int mask) {
  if (mayAccess(n, who, mask)) return Status::OK();
  const char* what = mask & MAY_WRITE  ? "no write permission on"
                     : mask & MAY_READ ? "no read permission on"
                                       : "no search permission on";
  return denied(n, what);
}

Status checkRemove(const Inode& dir, const Inode& victim, const Credentials& who) {
  Status s = checkAccess(dir, who, MAY_WRITE | MAY_EXEC);
  if (!s.ok()) return s;
  if ((dir.mode & STICKY) && !who.isRoot() && who.uid != victim.uid && who.uid != dir.uid) {
    return denied(victim, "sticky directory: not the owner of");
  }
  return Status::OK();
}

Result<uint32_t> checkChmod(const Inode& n, const Credentials& who, uint32_t mode) {
  if (!who.isRoot() && who.uid != n.uid) return notPermitted(n, "not the owner of");
  mode &= 07777;
  if (!who.isRoot() && !who.inGroup(n.gid) && n.type != InodeType::DIRECTORY) {
    mode &= ~MODE_SETGID;
  }
  return mode;
}

Status checkChown(const Inode& n, const Credentials& who, std::optional<uint32_t> uid,
                  std::optional<uint32_t> gid) {
  if (who.isRoot()) return Status::OK();
  if (uid && *uid != n.uid) return notPermitted(n, "only root gives away");
  if (gid && *gid != n.gid) {
    if (who.uid != n.uid) return notPermitted(n, "not the owner of");
    if (!who.inGroup(*gid)) return notPermitted(n, "not a member of the group for");
  }
  return Status::OK();
}

Status checkTimes(const Inode& n, const Credentials& who, bool toNow) {
  if (who.isRoot() || who.uid == n.uid) return Status::OK();
  if (toNow && mayAccess(n, who, MAY_WRITE)) return Status::OK();
  return toNow ? denied(n, "no write permission on") : notPermitted(n, "not the owner of");
}

}  // namespace cairn
