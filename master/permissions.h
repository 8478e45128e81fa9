#pragma once
// POSIX permissions, as the master checks them for every namespace call: owner, group and
// other bits, root, sticky directories, and who may change modes, owners and times. Pure
// functions over an inode's attributes and the caller's credentials.

#include <cstdint>
#include <optional>
#include <vector>

#include "status.h"

namespace cairn {

struct Inode;

// Whom a call is made for.
struct Credentials {
  uint32_t uid = 0;
  std::vector<uint32_t> gids;  // the first is the primary group (new files get it)

  static Credentials root() { return Credentials{0, {0}}; }
  bool isRoot() const { return uid == 0; }
  bool inGroup(uint32_t gid) const;
  uint32_t primaryGid() const { return gids.empty() ? uid : gids[0]; }
};

constexpr int MAY_READ = 4;
constexpr int MAY_WRITE = 2;
constexpr int MAY_EXEC = 1;

// Whether `who` may access `n` for every bit of `mask`. Root may read and write anything,
// and execute (search) what has any execute bit or is a directory.
bool mayAccess(const Inode& n, const Credentials& who, int mask);
// permissionDenied unless mayAccess().
Status checkAccess(const Inode& n, const Credentials& who, int mask);
// Removing or renaming `victim` out of `dir`: write and search on `dir`, and in a sticky
// directory only the victim's owner, the directory's owner or root.
Status checkRemove(const Inode& dir, const Inode& victim, const Credentials& who);
// A mode change (chmod): only the owner or root; the setgid bit of a file whose group the
// caller is not in is dropped (as Linux does). Returns the mode to store.
Result<uint32_t> checkChmod(const Inode& n, const Credentials& who, uint32_t mode);
// An owner change (chown): the owner only by root; the group by root, or by the owner to a
// group the owner is in.
Status checkChown(const Inode& n, const Credentials& who, std::optional<uint32_t> uid,
                  std::optional<uint32_t> gid);
// Setting times: to given times only the owner or root; to now, also whoever may write.
Status checkTimes(const Inode& n, const Credentials& who, bool toNow);

}  // namespace cairn
