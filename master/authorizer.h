#pragma once
// Who may do what in the namespace: every client call passes through here with the
// credentials it is made for, is checked by POSIX rules (master/permissions.h), and then
// runs in the same turn of the event loop (so nothing changes between check and act). The
// RPC service only translates. Calls by inode check the inode only, as NFS does with file
// handles: search permission on the path was checked when the name was looked up.

#include <kj/async.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "namespace.h"
#include "permissions.h"
#include "tls.h"

namespace cairn {

class Master;

// The files one client session holds open, and whether any open is for writing. Reads of
// a file's chunks, writes and size changes are allowed to a session holding it open in
// that mode, whoever makes them (as POSIX allows I/O on an open descriptor after a chmod).
struct OpenFiles {
  struct Opens {
    uint32_t count = 0;
    bool write = false;
  };
  std::map<uint64_t, Opens> byInode;

  bool holds(uint64_t inode) const { return byInode.count(inode) != 0; }
  bool holdsForWrite(uint64_t inode) const {
    auto it = byInode.find(inode);
    return it != byInode.end() && it->second.write;
  }
};

// The credentials calls on a connection are made with. `stated` is what a mount, a
// MapReduce worker (for a job's submitter), an admin, or anyone on an insecure cluster says
// of the caller; users are who their certificates say. Root is root only where the certificate
// allows it (an admin's always); otherwise squashed to nobody, as NFS's root_squash does.
// notPermitted when the peer may not state credentials (a user claiming another uid), or its role
// makes no namespace calls at all.
Result<Credentials> credentialsFor(const Identity& peer, std::optional<Credentials> stated);
// Whether the peer may administer the cluster (decommission, balance, safe mode, others'
// trash): admins, and anyone on an insecure cluster.
bool isAdmin(const Identity& peer);

// Every change is refused (readOnly) while an admin holds the cluster in safe mode.
class Authorizer {
 public:
  explicit Authorizer(Master& master);

  Result<Inode> lookup(const Credentials& who, uint64_t parent, std::string_view name);
  Result<Inode> resolve(const Credentials& who, std::string_view path);
  Status readdir(const Credentials& who, uint64_t inode, std::string_view after, size_t limit,
                 std::vector<Namespace::Entry>& entries, bool& more);
  // New entries belong to the caller (and its primary group, or the directory's group in a
  // setgid directory).
  kj::Promise<MutationResult> mkdir(const Credentials& who, uint64_t parent, std::string_view name,
                                    uint32_t mode);
  // With `open`, an existing file must be writable.
  kj::Promise<MutationResult> create(const Credentials& who, uint64_t parent, std::string_view name,
                                     uint32_t mode, uint8_t replication, bool exclusive, bool open);
  kj::Promise<MutationResult> symlink(const Credentials& who, uint64_t parent,
                                      std::string_view name, std::string_view target);
  kj::Promise<MutationResult> mknod(const Credentials& who, uint64_t parent, std::string_view name,
                                    InodeType type, uint32_t mode, uint64_t rdev);
  kj::Promise<MutationResult> link(const Credentials& who, uint64_t inode, uint64_t newParent,
                                   std::string_view newName);
  kj::Promise<MutationResult> unlink(const Credentials& who, uint64_t parent,
                                     std::string_view name);
  kj::Promise<MutationResult> rmdir(const Credentials& who, uint64_t parent, std::string_view name);
  kj::Promise<MutationResult> rename(const Credentials& who, uint64_t srcParent,
                                     std::string_view srcName, uint64_t dstParent,
                                     std::string_view dstName, bool noReplace);
  // Opening for `mask` (MAY_READ and/or MAY_WRITE): the file's attributes if allowed.
  Result<Inode> open(const Credentials& who, uint64_t inode, int mask);
  kj::Promise<MutationResult> setattr(const Credentials& who, const OpenFiles& session,
                                      uint64_t inode, const SetAttrArgs& args);
  kj::Promise<MutationResult> setReplication(const Credentials& who, uint64_t inode, uint8_t goal);
  // A snapshot needs write and search permission on the new entry's directory and read
  // permission on everything copied (search too on directories). Root's copy keeps the
  // owners and modes; anyone else's belongs to them, without setuid and setgid bits.
  kj::Promise<MutationResult> snapshot(const Credentials& who, uint64_t source, uint64_t parent,
                                       std::string_view name);
  // Sharing chunks: read access to the source, write access to the destination.
  kj::Promise<Namespace::ShareResult> shareChunks(const Credentials& who, const OpenFiles& session,
                                                  uint64_t src, uint64_t srcOffset, uint64_t dst,
                                                  uint64_t dstOffset, uint64_t length);
  kj::Promise<Status> setxattr(const Credentials& who, uint64_t inode, const std::string& name,
                               const std::string& value, uint32_t flags);
  Result<std::string> getxattr(const Credentials& who, uint64_t inode, const std::string& name);
  Result<std::vector<std::string>> listxattr(const Credentials& who, uint64_t inode);
  kj::Promise<Status> removexattr(const Credentials& who, uint64_t inode, const std::string& name);
  // Trash: root sees and restores every entry; others only their own files.
  std::vector<TrashEntry> listTrash(const Credentials& who, size_t limit);
  kj::Promise<MutationResult> restore(const Credentials& who, std::string_view path);
  // Chunk locations and writes: to a session holding the file open (for writing), or to
  // whoever may read (write) it.
  Status mayReadChunks(const Credentials& who, const OpenFiles& session, uint64_t inode);
  Status mayWriteChunks(const Credentials& who, const OpenFiles& session, uint64_t inode);

 private:
  // readOnly while an admin holds the cluster in safe mode (the automatic safe mode at start
  // refuses only what needs chunkservers).
  Status changesAllowed() const;
  Result<Inode> directoryFor(const Credentials& who, uint64_t dir, int mask);
  // Removing `name` from `parent` (a missing name is left to the namespace to report).
  Status mayRemove(const Credentials& who, uint64_t parent, std::string_view name);

  Master& master;
  Namespace& ns;
};

}  // namespace cairn
