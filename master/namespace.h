#pragma once
// The file-system namespace: inodes, directory entries and each file's chunk list, kept
// in a NamespaceStore. Every operation runs on the master's event loop; a mutation is
// visible to the next operation at once, and its promise resolves when it is durable.
// Errors a caller must branch on (a missing name, a non-empty directory, ...) are
// Status values; the store failing is an exception.

#include <kj/async.h>
#include <kj/time.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "namespace_store.h"
#include "status.h"

namespace cairn {

constexpr uint64_t ROOT_INODE = 1;
constexpr uint8_t DEFAULT_REPLICATION = 3;
constexpr uint8_t MAX_REPLICATION = 32;

enum class InodeType : uint8_t {
  REGULAR = 0,
  DIRECTORY = 1,
  SYMLINK = 2,
  FIFO = 3,
  SOCKET = 4,
  CHAR_DEVICE = 5,
  BLOCK_DEVICE = 6,
};

constexpr uint32_t MODE_SETGID = 02000;
constexpr size_t MAX_SYMLINK_BYTES = 4095;
constexpr size_t MAX_XATTR_VALUE = 64 * 1024;
constexpr size_t MAX_XATTRS_PER_INODE = 1024;

struct Inode {
  uint64_t inode = 0;
  InodeType type = InodeType::REGULAR;
  uint32_t mode = 0;  // permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 1;
  uint64_t size = 0;
  int64_t atimeNs = 0;
  int64_t mtimeNs = 0;
  int64_t ctimeNs = 0;
  uint8_t replication = DEFAULT_REPLICATION;
  uint64_t parent = 0;  // directories only: their one parent
  uint64_t rdev = 0;    // device nodes only
  std::string name;     // directories only: their name in `parent` (for paths)
};

struct TrashEntry {
  std::string path;  // where the file was
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t deletedNs = 0;
};

struct ChunkRecord {
  uint32_t index = 0;
  uint64_t handle = 0;
  uint64_t version = 0;
  // The highest version ever sent to a replica (>= version). A replica that reports a
  // version in (version, issued] took a change whose answer never came back: it missed
  // what followed, so it is stale, never newer.
  uint64_t issued = 0;
  // Allocated, and no chunkserver has confirmed creating it yet: no lease was granted on
  // it, so no byte was ever written to it. Such a chunk with no replica known (its master
  // died before the chunkservers created it) is created again rather than missing.
  bool pending = false;
};

struct SetAttrArgs {
  std::optional<uint32_t> mode, uid, gid;
  std::optional<uint64_t> size;
  std::optional<int64_t> atimeNs, mtimeNs;
};

// What a mutation did, for the layers above: the new attributes, and chunk handles that
// no file refers to any more (their replicas are to be deleted).
struct MutationResult {
  Status status;
  Inode inode;
  std::vector<uint64_t> releasedHandles;
};

class Namespace {
 public:
  // `chunkSize` is used only when the store is new; afterwards the stored one wins.
  Namespace(NamespaceStore& store, const kj::Clock& clock, uint64_t chunkSize);

  uint64_t chunkSize() const { return chunkSize_; }
  // Reads the counters kept in memory again (a standby that became active: the log changed
  // the store under it), and makes the root of a new file system if the store is empty and
  // writable.
  void reload();

  Result<Inode> getattr(uint64_t inode);
  Result<Inode> lookup(uint64_t parent, std::string_view name);
  Result<Inode> resolve(std::string_view path);

  struct Entry {
    std::string name;
    Inode inode;
  };
  // Entries of directory `inode` after name `after`, at most `limit`; `more` if any remain.
  Status readdir(uint64_t inode, std::string_view after, size_t limit, std::vector<Entry>& entries,
                 bool& more);

  kj::Promise<MutationResult> mkdir(uint64_t parent, std::string_view name, uint32_t mode,
                                    uint32_t uid, uint32_t gid);
  kj::Promise<MutationResult> create(uint64_t parent, std::string_view name, uint32_t mode,
                                     uint32_t uid, uint32_t gid, uint8_t replication,
                                     bool exclusive);
  // A size change drops chunks wholly past the new end (released) and leaves the partial
  // last chunk to the caller, which must cut its replicas (see truncateChunk).
  kj::Promise<MutationResult> setattr(uint64_t inode, const SetAttrArgs& args);
  kj::Promise<MutationResult> unlink(uint64_t parent, std::string_view name);
  kj::Promise<MutationResult> rmdir(uint64_t parent, std::string_view name);
  kj::Promise<MutationResult> rename(uint64_t srcParent, std::string_view srcName,
                                     uint64_t dstParent, std::string_view dstName,
                                     bool noReplace = false);
  kj::Promise<MutationResult> setReplication(uint64_t inode, uint8_t replication);
  kj::Promise<MutationResult> symlink(uint64_t parent, std::string_view name,
                                      std::string_view target, uint32_t uid, uint32_t gid);
  Result<std::string> readlink(uint64_t inode);
  // A new name for an existing non-directory.
  kj::Promise<MutationResult> link(uint64_t inode, uint64_t newParent, std::string_view newName);
  // A FIFO, socket or device node (kept as metadata only).
  kj::Promise<MutationResult> mknod(uint64_t parent, std::string_view name, InodeType type,
                                    uint32_t mode, uint32_t uid, uint32_t gid, uint64_t rdev);

  // Stored extended attributes (the caller handles virtual ones). `flags`: 1 create only,
  // 2 replace only.
  kj::Promise<Status> setxattr(uint64_t inode, std::string_view name, std::string_view value,
                               uint32_t flags);
  Result<std::string> getxattr(uint64_t inode, std::string_view name);
  Result<std::vector<std::string>> listxattr(uint64_t inode);
  kj::Promise<Status> removexattr(uint64_t inode, std::string_view name);
  // Trash. With a trash period, unlinking a file's last name keeps the file, restorable
  // by its path, until expireTrash() removes it.
  void setTrashPeriod(kj::Duration period) { trashPeriod = period; }
  std::vector<TrashEntry> listTrash(size_t limit);
  // Puts the newest trashed file that lived at `path` back there, making missing parent
  // directories.
  kj::Promise<MutationResult> restore(std::string_view path);
  // Deletes trashed files older than the trash period; their chunks are released.
  kj::Promise<MutationResult> expireTrash();
  // The absolute path of directory `inode`.
  std::string pathOf(uint64_t directory);

  // Open files. A regular file that some client has open keeps its inode and chunks when
  // its last name goes (POSIX: an unlinked file lives until its last close): it becomes
  // an orphan, with no link, deleted by the last closed(); orphans nobody opens again
  // after a master restart are deleted by expireOrphans(). Opens are counted per client
  // session, in memory: a session that ends (its connection drops) closes its files.
  void opened(uint64_t inode);
  kj::Promise<MutationResult> closed(uint64_t inode);
  bool isOpen(uint64_t inode) const { return opens.count(inode) != 0; }
  kj::Promise<MutationResult> expireOrphans();

  // Files and directories in the namespace (for statfs).
  uint64_t inodeCount() { return nextInode - 1; }
  // size = max(size, current); mtime set when size or data changed.
  kj::Promise<MutationResult> commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs);

  // The retry cache (see NamespaceStore::beginRequest): the outcome recorded for a
  // request, and the pruning of those older than `maxAge` (a page at a time).
  std::optional<MutationResult> recordedOutcome(const std::string& key);
  kj::Promise<void> expireOutcomes(kj::Duration maxAge);

  // Chunks.
  std::optional<ChunkRecord> getChunk(uint64_t inode, uint32_t index);
  std::vector<ChunkRecord> listChunks(uint64_t inode, uint32_t first, uint32_t count);
  // The index of the first chunk of `inode` at or after `from`, if any.
  std::optional<uint32_t> nextChunk(uint64_t inode, uint32_t from);
  // Every chunk of every file, for the chunk map at start: (owner inode, record).
  std::vector<std::pair<uint64_t, ChunkRecord>> allChunks();
  // Records a new chunk at version 1 with a fresh handle.
  kj::Promise<Result<ChunkRecord>> allocateChunk(uint64_t inode, uint32_t index);
  // Forgets a chunk that no replica was ever made of (it held no byte), if `inode` still
  // has it at that index: the range is a hole again.
  kj::Promise<void> forgetChunk(uint64_t inode, const ChunkRecord& record);
  kj::Promise<void> setChunkVersion(uint64_t inode, const ChunkRecord& record);

 private:
  std::optional<Inode> readInode(uint64_t inode);
  std::optional<uint64_t> readDirent(uint64_t parent, std::string_view name);
  Result<Inode> requireDirectory(uint64_t inode);
  int64_t nowNs();
  uint64_t allocateInode(Mutation& m);
  // A new inode in directory `parent` under `name`, after the checks every create shares;
  // the directory's setgid bit passes its group (and, to directories, the bit) down.
  Result<Inode> newEntry(Mutation& m, uint64_t parent, std::string_view name, InodeType type,
                         uint32_t mode, uint32_t uid, uint32_t gid);
  // Removes one link to `victim` (already unlinked from its directory), deleting it and
  // its chunks when none remain.
  void dropLink(Mutation& m, Inode victim, int64_t now, std::vector<uint64_t>& released);
  // Removes the inode and everything it owns; its chunks are released.
  void deleteInode(Mutation& m, const Inode& victim, std::vector<uint64_t>& released);
  bool isAncestor(uint64_t ancestor, uint64_t inode);
  kj::Promise<MutationResult> finish(Mutation m, MutationResult result);
  // Adds the request's outcome to `m` if a request is being dispatched.
  void recordOutcome(Mutation& m, const MutationResult& result);
  std::string outcomeCursor;  // where expireOutcomes() goes on

  NamespaceStore& store;
  const kj::Clock& clock;
  uint64_t chunkSize_;
  uint64_t nextInode;
  uint64_t nextHandle;
  kj::Duration trashPeriod = 0 * kj::SECONDS;
  std::map<uint64_t, uint32_t> opens;  // inode -> sessions that have it open
};

// Key layout, exposed for tests and tools.
std::string inodeKey(uint64_t inode);
std::string direntKey(uint64_t parent, std::string_view name);
std::string chunkKey(uint64_t inode, uint32_t index);
std::string symlinkKey(uint64_t inode);
std::string xattrKey(uint64_t inode, std::string_view name);
std::string trashKey(int64_t deletedNs, uint64_t inode);
std::string orphanKey(uint64_t inode);
std::string requestKey(uint64_t client, uint64_t seq);
std::string encodeInode(const Inode& inode);
std::optional<Inode> decodeInode(std::string_view bytes);

}  // namespace cairn
