#pragma once
// The file-system namespace: inodes, directory entries and each file's chunk list, kept
// in a NamespaceStore. Every operation runs on the master's event loop; a mutation is
// visible to the next operation at once, and its promise resolves when it is in the log
// (see NamespaceStore::commit).
// Errors a caller must branch on (a missing name, a non-empty directory, ...) are
// Status values; the store failing is an exception.

#include <kj/async.h>
#include <kj/function.h>
#include <kj/time.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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
  // A truncate ended the file at this offset of the chunk, and its replicas may still hold
  // bytes past it (0: none owed). They are cut before the chunk takes a write or the file
  // grows: bytes a truncate removed never come back in place of zeros.
  uint32_t cutAt = 0;
};

// A chunk slot of a file: chunk `index` of `inode`.
struct ChunkOwner {
  uint64_t inode = 0;
  uint32_t index = 0;
  bool operator==(const ChunkOwner& o) const { return inode == o.inode && index == o.index; }
};

// A snapshot: a copy of the file or tree `source`, named `name` in directory `parent`,
// sharing every chunk with it.
struct SnapshotRequest {
  uint64_t source = 0;
  uint64_t parent = 0;
  std::string name;
  // The new entries belong to this uid and gid, without setuid and setgid bits (a copy
  // by a user); unset, they keep the source's owners and modes (a copy by root).
  std::optional<std::pair<uint32_t, uint32_t>> owner;
  // Checked for every entry copied: the snapshot fails with its status.
  kj::Function<Status(const Inode&)> mayCopy = [](const Inode&) { return Status::OK(); };
  // Whether the chunks of a regular file may be shared now (no write lease on them, none
  // to come): false fails the snapshot with `busy`, changing nothing.
  kj::Function<bool(uint64_t inode)> quiet = [](uint64_t) { return true; };
};
constexpr size_t MAX_SNAPSHOT_ENTRIES = 100'000;

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
  // Gives every trash entry made before the trash had an index by path its entry there
  // (once, by the active master: a restore then looks at its path's entries only).
  kj::Promise<void> indexTrash();
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

  // Shared chunks (namespace_share.cc). A chunk that snapshots or copies gave to more than
  // one file has the list of its owners recorded; a chunk never shared has none (its one
  // owner is the file whose record names it). Dropping a chunk from a file releases it
  // when no owner remains. A shared chunk is never written: the next write or cut copies
  // it first (ChunkManager), and the copy replaces it in the writer's file.

  // The owners of a chunk ever shared (empty: never shared).
  std::vector<ChunkOwner> ownersOf(uint64_t handle);
  bool isShared(uint64_t handle) { return ownersOf(handle).size() > 1; }
  // Every chunk shared now, with its owners (one pass over the owner lists, at start).
  void forEachSharedChunk(
      const std::function<void(uint64_t, const std::vector<ChunkOwner>&)>& visit);
  // The regular files in the tree at `root` (itself, when a file): at most `limit`, else
  // invalidArgument.
  Result<std::vector<uint64_t>> filesUnder(uint64_t root, size_t limit);
  // Copies the file or tree in one mutation: new inodes, the same chunk records (chunks
  // still pending hold no byte and are left out), attributes, symlink targets, extended
  // attributes and hard links within the tree. At most MAX_SNAPSHOT_ENTRIES entries.
  // `request` is used only during the call.
  kj::Promise<MutationResult> snapshot(SnapshotRequest& request);
  // A copy of [srcOffset, srcOffset+length) of `src` to `dstOffset` of `dst` by whole chunks,
  // where the offsets lie alike in their chunks: each chunk slot of `src` inside the range
  // (clipped to its size) gives `dst` its chunk (a hole where `src` has none), replacing
  // what `dst` held there, and `dst` grows to cover the bytes. The slot holding the end of
  // `src` goes too when it also holds the end of `dst` (sharing must not cut off what `dst`
  // held past it). `quiet` as for snapshots. The result's attributes are `dst`'s; the range
  // shared is [sharedOffset, sharedOffset+sharedLength) of `src` (empty: nothing shared,
  // the caller copies it all).
  struct ShareResult {
    MutationResult mutation;
    uint64_t sharedOffset = 0;
    uint64_t sharedLength = 0;
  };
  kj::Promise<ShareResult> shareChunks(uint64_t src, uint64_t srcOffset, uint64_t dst,
                                       uint64_t dstOffset, uint64_t length,
                                       kj::FunctionParam<bool(uint64_t inode)> quiet);
  // A chunk handle no record names yet (copy-on-write's copy), reserved on disk before any
  // chunkserver is given it.
  kj::Promise<uint64_t> reserveHandle();
  // Copy-on-write: `inode`'s slot takes `replacement` instead of the shared `old`, which
  // loses that owner. False (nothing changed) if the slot no longer holds `old`.
  kj::Promise<bool> replaceChunk(uint64_t inode, const ChunkRecord& old,
                                 const ChunkRecord& replacement);

  // Chunks.
  std::optional<ChunkRecord> getChunk(uint64_t inode, uint32_t index);
  std::vector<ChunkRecord> listChunks(uint64_t inode, uint32_t first, uint32_t count);
  // The index of the first chunk of `inode` at or after `from`, if any.
  std::optional<uint32_t> nextChunk(uint64_t inode, uint32_t from);
  // Every chunk of every file, for the chunk map at start: (owner inode, record), a file's
  // chunks in a row, read in batches.
  void forEachChunk(const std::function<void(uint64_t, const ChunkRecord&)>& visit);
  std::vector<std::pair<uint64_t, ChunkRecord>> allChunks();
  // Records a new chunk at version 1 with a fresh handle.
  kj::Promise<Result<ChunkRecord>> allocateChunk(uint64_t inode, uint32_t index);
  // Whether `handle` lies in a reserve already synced: then no master hands it out again,
  // whatever happens to the entry that used it.
  bool handleOnDisk(uint64_t handle) const { return handle < *handlesOnDisk; }
  // Forgets a chunk that no replica was ever made of (it held no byte), if `inode` still
  // has it at that index: the range is a hole again.
  kj::Promise<void> forgetChunk(uint64_t inode, const ChunkRecord& record);
  // Records the chunk's version in the slot of `inode` that names it, or in every owner's
  // when it is shared.
  // `sync`: acknowledged once synced (a version number handed out for the first time).
  kj::Promise<void> setChunkVersion(uint64_t inode, const ChunkRecord& record, bool sync);

 private:
  std::optional<Inode> readInode(uint64_t inode);
  std::optional<uint64_t> readDirent(uint64_t parent, std::string_view name);
  Result<Inode> requireDirectory(uint64_t inode);
  int64_t nowNs();
  // The next inode or chunk handle, for a change being built in `m`. Numbers are reserved on
  // disk ahead of use, 4096 at a time, by a synced entry: after a power cut a master never
  // hands out a number it handed out before (a mount may still hold that inode, a
  // chunkserver that chunk).
  uint64_t allocateInode(Mutation& m);
  uint64_t allocateHandle(Mutation& m);
  // `onDisk` (if any) learns the new limit once its reserve is synced.
  uint64_t allocateNumber(const std::string& key, uint64_t& next, uint64_t& limit,
                          std::shared_ptr<uint64_t> onDisk);
  // A new inode in directory `parent` under `name`, after the checks every create shares;
  // the directory's setgid bit passes its group (and, to directories, the bit) down.
  Result<Inode> newEntry(Mutation& m, uint64_t parent, std::string_view name, InodeType type,
                         uint32_t mode, uint32_t uid, uint32_t gid);
  // The chunk records one mutation removes and adds to shared chunks' owner lists: a
  // chunk whose last owner goes is released. Lists are read once and written back by
  // writeTo(), so that one mutation may touch a chunk many times.
  class ChunkRefs {
   public:
    ChunkRefs(Namespace& ns, std::vector<uint64_t>& released) : ns(ns), released(released) {}
    // `owner`'s record of chunk `record` is deleted.
    void drop(Mutation& m, ChunkOwner owner, const ChunkRecord& record);
    // `added` now shares the chunk `existing` names.
    void share(ChunkOwner existing, ChunkOwner added, uint64_t handle);
    void writeTo(Mutation& m);

   private:
    struct List {
      std::vector<ChunkOwner> owners;
      bool stored = false;  // the store has a list for the chunk
    };
    List& list(uint64_t handle);
    Namespace& ns;
    std::vector<uint64_t>& released;
    std::map<uint64_t, List> lists;
  };
  // Removes one link to `victim` (already unlinked from its directory), deleting it and
  // its chunks when none remain.
  void dropLink(Mutation& m, Inode victim, int64_t now, ChunkRefs& refs);
  // Removes the inode and everything it owns; its chunks are dropped.
  void deleteInode(Mutation& m, const Inode& victim, ChunkRefs& refs);
  // Calls `visit` for every entry of directory `dir`, a page of the store at a time; stops
  // at the first status that is not OK and returns it.
  Status forEachEntry(uint64_t dir,
                      kj::FunctionParam<Status(std::string_view name, const Inode& child)> visit);
  // Copies `old` (an entry of a snapshot's source) under `name` in `parent`.
  struct SnapshotState;
  Result<Inode*> copyEntry(SnapshotState& st, const Inode& old, uint64_t parent,
                           std::string_view name);
  bool isAncestor(uint64_t ancestor, uint64_t inode);
  kj::Promise<MutationResult> finish(Mutation m, MutationResult result);
  // Adds the request's outcome to `m` if a request is being dispatched.
  void recordOutcome(Mutation& m, const MutationResult& result);
  std::string outcomeCursor;  // where expireOutcomes() goes on

  NamespaceStore& store;
  const kj::Clock& clock;
  uint64_t chunkSize_;
  uint64_t nextInode, inodeLimit;  // handed out below nextInode; reserved below the limit
  uint64_t nextHandle, handleLimit;
  // Handles below this are reserved on disk (the reserve's entry is synced): shared with
  // the reserving commit's continuation, which may outlive this.
  std::shared_ptr<uint64_t> handlesOnDisk = std::make_shared<uint64_t>(0);
  kj::Duration trashPeriod = 0 * kj::SECONDS;
  bool trashIndexed();
  bool trashIndexKnown = false;        // TRASH_INDEXED_KEY was seen (or written)
  std::string trashIndexCursor;        // where indexTrash() goes on
  std::map<uint64_t, uint32_t> opens;  // inode -> sessions that have it open
};

// Key layout, exposed for tests and tools.
std::string inodeKey(uint64_t inode);
std::string direntKey(uint64_t parent, std::string_view name);
std::string chunkKey(uint64_t inode, uint32_t index);
std::string symlinkKey(uint64_t inode);
std::string xattrKey(uint64_t inode, std::string_view name);
std::string trashKey(int64_t deletedNs, uint64_t inode);
// The trash by path: each trashed file also under its path, oldest first.
std::string trashPathKey(std::string_view path, int64_t deletedNs, uint64_t inode);
std::string orphanKey(uint64_t inode);
std::string requestKey(uint64_t client, uint64_t seq);
std::string sharedKey(uint64_t handle);
std::string encodeInode(const Inode& inode);
std::optional<Inode> decodeInode(std::string_view bytes);

}  // namespace cairn
