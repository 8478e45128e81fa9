#pragma once
// libcairn: the client library every tool uses. One Client lives on one kj event loop; all
// of its calls must be made on that loop (see BlockingClient for other threads). Each call
// is bounded in time: a master or chunkserver that does not answer becomes a Status
// (unavailable, naming the address), never a hang.

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "chunkserver.capnp.h"
#include "master.capnp.h"
#include "rpc.h"
#include "status.h"
#include "tokens.h"

namespace cairn {

using FileType = wire::FileType;

struct FileAttr {
  uint64_t inode = 0;
  FileType type = FileType::REGULAR;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  int64_t atimeNs = 0;
  int64_t mtimeNs = 0;
  int64_t ctimeNs = 0;
  uint8_t replication = 0;
  uint32_t chunkCount = 0;
  uint64_t rdev = 0;
};

struct DirEntryInfo {
  std::string name;
  FileAttr attr;
};

struct ReplicaInfo {
  std::string address;
  std::string rack;
};

struct ChunkInfo {
  uint32_t index = 0;
  uint64_t handle = 0;
  uint64_t version = 0;
  std::vector<ReplicaInfo> replicas;
  std::string primary;
  uint32_t leaseRemainingMs = 0;
  ChunkToken token;           // what the chunkservers ask for (read, or write after prepareWrite)
  bool inlineWrites = false;  // every replica takes a small write's bytes in the call
};

struct FileLayout {
  uint64_t chunkSize = 0;
  uint64_t fileSize = 0;
  std::vector<ChunkInfo> chunks;  // holes are absent
};

struct ServerStatus {
  std::string address;
  std::string rack;
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;
  uint64_t chunkCount = 0;
  bool live = false;
  bool decommissioning = false;
  uint64_t availableBytes = 0;  // free space above its reserve
  uint64_t heartbeatAgeMs = 0;
};

// One chunk of a file as the master sees it (fsck).
struct ChunkCheckInfo {
  struct Replica {
    std::string address;
    wire::ReplicaState state;
  };
  uint32_t index = 0;
  uint64_t handle = 0;
  uint64_t version = 0;
  uint8_t goal = 0;
  wire::ChunkVerdict verdict = wire::ChunkVerdict::HEALTHY;
  std::vector<Replica> replicas;
  uint32_t files = 1;  // files holding the chunk (shared by snapshots and copies)
};

struct TrashInfo {
  std::string path;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t deletedNs = 0;
  int64_t expiresNs = 0;
};

struct HealthInfo {
  bool safeMode = false;
  uint64_t chunks = 0;
  uint64_t underReplicated = 0;
  uint64_t missing = 0;
  uint64_t overReplicated = 0;
  uint64_t copiesInFlight = 0;
  uint64_t corrupt = 0;    // replicas found bad, kept as the last copy of their chunk
  uint64_t unchecked = 0;  // not looked at yet since the master started
  uint64_t onOneRack = 0;  // at their goal, on one rack while another has room
};

// One master as it describes itself (cairn admin masters).
struct MasterInfo {
  std::string address;  // as the client names it
  bool reachable = false;
  std::string role;  // active, standby, catching-up (unreachable: empty)
  uint64_t epoch = 0;
  uint64_t lsn = 0;                 // last log entry applied
  std::string active;               // the active master as ZooKeeper names it
  std::vector<std::string> inSync;  // the active: the standbys in sync
  std::string error;                // why it did not answer
};

struct SafeModeState {
  bool on = false;
  bool manual = false;  // an admin's: the namespace is read only until an admin leaves it
};

struct SetAttrRequest {
  std::optional<uint32_t> mode, uid, gid;
  std::optional<uint64_t> size;
  std::optional<int64_t> atimeNs, mtimeNs;
};

// Where a server-side copy reads from: a chunk of another (or the same) file.
struct CopySource {
  uint64_t inode = 0;
  uint32_t index = 0;
  uint32_t chunkOffset = 0;
};

// One mutation of one chunk, as the write protocol carries it.
struct ChunkMutation {
  wire::Mutation kind = wire::Mutation::DATA;
  uint32_t chunkOffset = 0;
  uint32_t length = 0;
  kj::ArrayPtr<const kj::byte> data;  // DATA: the bytes, pushed from here...
  std::optional<CopySource> source;   // ...or copied by the chunkservers from here
  bool skip = false;                  // nothing to do for this range
};

// Whom a namespace call is made for, as the calling process is known: its uid and groups
// (the first is its primary group). Without one, calls are made for this client's identity
// (the user of its certificate; root for an admin's). The master accepts stated
// credentials from mounts, workers and admins only (see ClientService.asCaller).
constexpr int ACCESS_READ = 4;
constexpr int ACCESS_WRITE = 2;

struct Caller {
  uint32_t uid = 0;
  std::vector<uint32_t> gids;
  bool operator<(const Caller& o) const { return uid != o.uid ? uid < o.uid : gids < o.gids; }
};

struct ClientOptions {
  // HOST:PORT, or one per master separated by commas: namespace calls go to the active one,
  // found by asking each in turn, and follow it through a failover.
  std::string master;
  // This host's names as chunkservers advertise them (addresses or a --host name); reads
  // prefer replicas there.
  std::vector<std::string> localHosts;
  kj::Duration rpcTimeout = 15 * kj::SECONDS;  // data calls and chunk preparation
  kj::Duration metaTimeout = 5 * kj::SECONDS;  // namespace calls to the master
  kj::Duration connectTimeout = 3 * kj::SECONDS;
  kj::Duration retryFor = 20 * kj::SECONDS;  // how long reads and writes keep retrying
  // How long a namespace call keeps trying the masters while none answers as active (a
  // failover takes a ZooKeeper session timeout and a moment). Unset: 30 s with several
  // masters, 5 s with one (enough for a restart; a master that is down is reported soon).
  std::optional<kj::Duration> masterRetryFor;
  // Read-only namespace calls (stat, lookup, readdir, locations, links, xattrs) go first
  // to a standby in sync, taking load off the active master; a standby that refuses (out
  // of sync), fails, or knows no replica of a chunk sends the call to the active one.
  // Unset: CAIRN_STANDBY_READS=1 in the environment.
  std::optional<bool> standbyReads;
  uint32_t pieceBytes = 1 << 20;             // size of one push or read RPC
  uint32_t parallelPieces = 8;               // pieces in flight per call
  kj::Duration layoutTtl = 2 * kj::SECONDS;  // how long read() trusts cached chunk locations
  // Seeds write buffer ids and replica choice; 0 draws one from the system, so that no two
  // clients (which share chunkservers' buffer-id space) pick the same ids.
  uint64_t seed = 0;
  RpcSecurity security;  // TLS credentials (null: plaintext, --insecure)
  // Whom calls without a Caller are made for; unset: this client's identity.
  std::optional<Caller> defaultCaller;
  // How long getattr() answers for a directory with the attributes that this client's own
  // last change in it brought back (the master sends them with every namespace change),
  // instead of asking the master again. A mount sets its attr_timeout: the kernel drops a
  // directory's attributes after each change in it and asks again before the next lookup
  // there, a master round trip per create, unlink or mkdir that this spares. 0: off.
  kj::Duration dirAttrTtl = 0 * kj::SECONDS;
  // How long close() may keep the end of an open before telling the master, so that the
  // closes of this time go in one call (a mount: a create then costs two master calls, not
  // three). The master holds the file that much longer (an unlinked one's data lives that
  // much longer). 0: each close() is sent at once and waited for, so that a process that
  // exits next has closed its files.
  kj::Duration closeDelay = 0 * kj::SECONDS;
};

// Hears, while a client's master session watches (Client::watchNamespace), of the changes
// other clients (or the master) make to the names and attributes this client was answered
// about. Called on the client's loop.
class NamespaceWatcher {
 public:
  virtual ~NamespaceWatcher() = default;
  // Names (a directory and a name in it) whose entries changed, and inodes whose attributes
  // or data changed.
  virtual void changed(const std::vector<std::pair<uint64_t, std::string>>& entries,
                       const std::vector<uint64_t>& inodes) = 0;
  // Anything answered before may be stale: the session ended, or the master forgot what it
  // answered.
  virtual void allChanged() = 0;
};

class Client {
 public:
  Client(ClientOptions options, kj::Network& network, kj::Timer& timer);
  ~Client();

  const std::string& masterAddress() const { return opts.master; }
  // The master calls go to now.
  const std::string& currentMaster() const { return masters[masterIndex]; }

  // Every master session from the next call on asks the master to tell `watcher` what
  // changes (null: none). Not with standbyReads: a standby's answers are not watched.
  void watchNamespace(NamespaceWatcher* watcher);
  // Whether the master watches this session for `watcher` now: what is answered from here
  // on is told when it changes, until allChanged().
  bool watching() const { return watchedId != 0; }  // (a new session ends the last watch)
  // Moves whenever a watch begins or ends or the master says anything may have changed: an
  // answer to a call started at another epoch may predate a change that was not told.
  uint64_t watchEpoch() const { return watchEpoch_; }

  // Namespace.
  kj::Promise<Result<FileAttr>> resolve(std::string path, std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> lookup(uint64_t parent, std::string name,
                                       std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> getattr(uint64_t inode, std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> mkdir(uint64_t parent, std::string name, uint32_t mode,
                                      std::optional<Caller> as = std::nullopt);
  // With `open`, the new (or existing) file is also opened, as by open() for writing.
  kj::Promise<Result<FileAttr>> create(uint64_t parent, std::string name, uint32_t mode,
                                       uint8_t replication, bool exclusive, bool open = false,
                                       std::optional<Caller> as = std::nullopt);
  // Open files: open() is a getattr that also has the master hold the file open for this
  // client, so that it outlives its last name (unlink of an open file) until the matching
  // close(). Every successful open() (or create with `open`) is matched by one close().
  // The master learns again of the files held open whenever the client reconnects.
  // `access`: 4 read, 2 write, or both (checked by the master for the caller).
  kj::Promise<Result<FileAttr>> open(uint64_t inode, int access,
                                     std::optional<Caller> as = std::nullopt);
  kj::Promise<void> close(uint64_t inode);
  // Sends the closes that closeDelay keeps, if any; resolves once the master answered (or
  // after metaTimeout).
  kj::Promise<void> sendCloses();
  kj::Promise<Result<FileAttr>> setattr(uint64_t inode, SetAttrRequest request,
                                        std::optional<Caller> as = std::nullopt);
  // One page of a directory: entries after `after`; `more` says whether others follow.
  kj::Promise<Result<std::vector<DirEntryInfo>>> readdir(uint64_t inode, std::string after,
                                                         uint32_t limit, bool* more,
                                                         std::optional<Caller> as = std::nullopt);
  // Every entry of a directory, page after page.
  kj::Promise<Result<std::vector<DirEntryInfo>>> listAll(uint64_t dir,
                                                         std::optional<Caller> as = std::nullopt);
  // Like `mkdir -p`: makes the missing directories of an absolute path; returns the last.
  kj::Promise<Result<FileAttr>> makeDirs(std::string path, std::optional<Caller> as = std::nullopt);
  // Like `rm -r`: removes `name` in `parent` and, for a directory, everything under it.
  kj::Promise<Status> removeTree(uint64_t parent, std::string name,
                                 std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> unlink(uint64_t parent, std::string name,
                             std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> rmdir(uint64_t parent, std::string name,
                            std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> rename(uint64_t srcParent, std::string srcName, uint64_t dstParent,
                             std::string dstName, bool noReplace = false,
                             std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> symlink(uint64_t parent, std::string name, std::string target,
                                        std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<std::string>> readlink(uint64_t inode,
                                            std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> link(uint64_t inode, uint64_t newParent, std::string newName,
                                     std::optional<Caller> as = std::nullopt);
  // A snapshot of the file or tree `source` as `name` in `parent`: chunks shared until
  // either side writes them (see the master's schema). busy when the tree kept changing.
  kj::Promise<Result<FileAttr>> snapshot(uint64_t source, uint64_t parent, std::string name,
                                         std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> mknod(uint64_t parent, std::string name, FileType type,
                                      uint32_t mode, uint64_t rdev,
                                      std::optional<Caller> as = std::nullopt);
  // flags: 1 create only, 2 replace only.
  kj::Promise<Status> setxattr(uint64_t inode, std::string name, std::string value, uint32_t flags,
                               std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<std::string>> getxattr(uint64_t inode, std::string name,
                                            std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<std::vector<std::string>>> listxattr(uint64_t inode,
                                                          std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> removexattr(uint64_t inode, std::string name,
                                  std::optional<Caller> as = std::nullopt);
  struct FsStats {
    uint64_t capacityBytes = 0;
    uint64_t freeBytes = 0;
    uint64_t files = 0;
  };
  kj::Promise<Result<FsStats>> statfs();
  // Every change of the namespace answered so far, by this client or any other, is on the
  // masters' disks (a master syncs within 10 ms by itself): fsync, fsyncdir and the end of
  // a command wait for it.
  kj::Promise<Status> syncMetadata();
  kj::Promise<Result<FileAttr>> setReplication(uint64_t inode, uint8_t replication,
                                               std::optional<Caller> as = std::nullopt);
  // The first offset at or after `offset` that holds data (or, with `hole`, is in a hole;
  // the end of the file counts as a hole), as lseek(SEEK_DATA / SEEK_HOLE) answers.
  // endOfData when `offset` is at or past the end, or no data follows it.
  kj::Promise<Result<uint64_t>> seek(uint64_t inode, uint64_t offset, bool hole);

  // Chunks.
  // Chunk locations (with read tokens); the caller must be able to read the file.
  kj::Promise<Result<FileLayout>> layout(uint64_t inode, uint32_t firstIndex, uint32_t count,
                                         std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<std::vector<ServerStatus>>> servers(uint64_t* chunkSize);
  kj::Promise<Result<std::vector<TrashInfo>>> trashList(std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> trashRestore(std::string path,
                                             std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> decommission(std::string address, uint64_t* remaining, bool* done);
  kj::Promise<Result<double>> balance(double threshold);
  kj::Promise<Result<HealthInfo>> health();
  // Safe mode after `action` (get, enter or leave; the last two for admins).
  kj::Promise<Result<SafeModeState>> safeMode(wire::SafeModeAction action);
  // Every master this client knows of, asked directly.
  kj::Promise<std::vector<MasterInfo>> masterStates();
  // Asks the active master to hand over to a standby in sync (admins).
  kj::Promise<Status> failover();
  // Every chunk of a regular file (holes are absent), with its replicas and the master's
  // verdict, asked for 4096 at a time.
  kj::Promise<Result<std::vector<ChunkCheckInfo>>> fsck(uint64_t inode,
                                                        std::optional<Caller> as = std::nullopt);

  // Reads up to `length` bytes at `offset` into `out` (resized to what the file holds:
  // shorter at its end; holes read as zeros). Chunks are read in parallel, each from the
  // closest replica, failing over to others.
  // A read shorter than `needed` bytes (default: all of `length`) is made only on a fresh
  // word of the master about the file's size, never on cached chunk locations alone.
  kj::Promise<Status> read(uint64_t inode, uint64_t offset, uint64_t length, std::string& out,
                           std::optional<uint64_t> needed = std::nullopt);
  // Writes `data` at `offset` through the GFS write path. The file's size is not
  // changed: call commitSize once the writes are done. On failure nothing acknowledged
  // before is lost and the replicas stay (see master/replica_rule.h); noSpace when the
  // chunkservers are full.
  kj::Promise<Status> write(uint64_t inode, uint64_t offset, kj::ArrayPtr<const kj::byte> data);
  // Makes [offset, offset+length) read as zeros, freeing the disk of whole blocks on every
  // replica (fallocate PUNCH_HOLE); the size is not changed.
  kj::Promise<Status> punch(uint64_t inode, uint64_t offset, uint64_t length);
  // Reserves disk on every replica for [offset, offset+length), making the chunks that do
  // not exist yet; the contents and the size are not changed.
  kj::Promise<Status> allocate(uint64_t inode, uint64_t offset, uint64_t length);
  // Copies [srcOffset, srcOffset+length) of `srcInode` to `dstOffset` of `dstInode`: whole
  // chunks are shared with the source (copy-on-write, when the offsets lie alike in their
  // chunks), the rest is copied on the chunkservers; no byte passes through this client.
  // Holes of the source become holes. The destination grows by what was shared only
  // (commitSize the rest), and the source is not read past its size: callers clip `length`
  // to it.
  kj::Promise<Status> copyRange(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                uint64_t dstOffset, uint64_t length);
  // The same on the chunkservers only (pushFrom), sharing nothing.
  kj::Promise<Status> copyBytes(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                uint64_t dstOffset, uint64_t length);
  kj::Promise<Result<FileAttr>> commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs = 0);
  // Record append (GFS): `record` (at most a quarter of a chunk) lands whole at the end of
  // the file, at an offset the primary of the file's last chunk picks among all appends to
  // it; a record that does not fit pads that chunk and goes to the next, so no record
  // spans two chunks. The file's size then covers it; returns where it landed. At least
  // once: after a failure it is sent again, so an attempt that failed may have left a
  // whole copy or padding behind it (record_io.h reads past both). Appends from any number
  // of clients never overwrite each other. `record` must outlive the promise.
  kj::Promise<Result<uint64_t>> append(uint64_t inode, kj::ArrayPtr<const kj::byte> record);
  // The cluster's chunk size, asked of the master (about `inode`) if not yet known; 0 if
  // the master could not say.
  kj::Promise<uint64_t> ensureChunkSize(uint64_t inode);

  // Makes every replica of the given chunks (all chunks if empty) sync to disk.
  kj::Promise<Status> syncChunks(uint64_t inode, std::vector<uint32_t> indices);
  // Drops cached chunk locations of `inode` (another client may have changed it).
  void forgetLayout(uint64_t inode) { layouts.erase(inode); }

  // The cluster's chunk size once any call has learnt it, else 0.
  uint64_t knownChunkSize() const { return chunkSize; }

  // The timer the client runs on, for tools that poll.
  kj::Timer& timerForTools() { return timer; }

  // Orders replicas: this host first, then the rest spread by handle.
  std::vector<ReplicaInfo> orderReplicas(const ChunkInfo& chunk);

 private:
  // fsck() from chunk `first` on, after `got`.
  kj::Promise<Result<std::vector<ChunkCheckInfo>>> fsckFrom(uint64_t inode, uint32_t first,
                                                            std::vector<ChunkCheckInfo> got,
                                                            std::optional<Caller> as);
  // The master session's service, making calls for `as` (else for this client's identity).
  wire::ClientService::Client master(const std::optional<Caller>& as = std::nullopt);
  // The master of session `session` failed a call: the next call goes to the next master
  // (unless the session has already been given up).
  void masterFailed(uint64_t session);
  void unhold(uint64_t inode);  // forgets one open of `inode`
  kj::Promise<void> keepSession();
  // A namespace call: `request` (made on master(as)) is sent, and sent again to the next
  // master while the one called is unreachable or not active, until masterRetryFor.
  struct MasterCall;
  template <typename T, typename P, typename R, typename Fn>
  kj::Promise<T> callMaster(std::optional<Caller> as, capnp::Request<P, R>&& request,
                            Fn&& onResponse, kj::Duration timeout = 0 * kj::SECONDS);
  // Sends `call`'s parameters to `service` (the active master's or a standby's), timed.
  kj::Promise<capnp::Response<capnp::AnyPointer>> sendCall(wire::ClientService::Client service,
                                                           MasterCall& call);
  template <typename T, typename R, typename Fn>
  kj::Promise<T> attemptMaster(std::shared_ptr<MasterCall> call, std::shared_ptr<Fn> onResponse);
  // Whether `call` goes on (to the next master) after a failure; false once out of time.
  kj::Promise<bool> retryMaster(MasterCall& call, bool timedOut);
  // The service of `base`'s session that makes calls for `as`.
  wire::ClientService::Client callerService(wire::ClientService::Client& base,
                                            std::map<Caller, wire::ClientService::Client>& cache,
                                            const std::optional<Caller>& as);
  // A standby's service for read-only calls, if standby reads are on and one is to be
  // tried now; readerFailed() moves on to the next standby (after a pause once each
  // failed) unless the reader session `session` has already been given up.
  kj::Maybe<wire::ClientService::Client> reader(const std::optional<Caller>& as);
  void readerFailed(uint64_t session);
  Status masterError(const kj::Exception& e, kj::Duration timeout);

  kj::Promise<Result<std::vector<DirEntryInfo>>> listFrom(uint64_t dir,
                                                          std::vector<DirEntryInfo> sofar,
                                                          std::optional<Caller> as = std::nullopt);
  kj::Promise<Result<FileAttr>> makeDirsFrom(FileAttr dir, std::vector<std::string> names,
                                             size_t next, std::optional<Caller> as = std::nullopt);
  kj::Promise<Status> removeEntries(uint64_t dir, std::vector<DirEntryInfo> entries, size_t next,
                                    std::optional<Caller> as = std::nullopt);

  // read() over the layout of the chunks involved, cached unless `fresh`.
  kj::Promise<Status> readWith(uint64_t inode, uint64_t offset, uint64_t length, std::string& out,
                               uint64_t needed, kj::TimePoint deadline, uint64_t chunkSize,
                               bool fresh);
  kj::Promise<Status> readPiece(uint64_t inode, ChunkInfo chunk, uint64_t chunkOffset,
                                uint32_t length, kj::byte* out, kj::TimePoint deadline);
  kj::Promise<Status> readChunk(ChunkInfo chunk, uint64_t chunkOffset, uint32_t length,
                                kj::byte* out, size_t replicaIndex);
  // The indices of the chunks that exist in [first, last], page after page.
  kj::Promise<Result<std::set<uint32_t>>> presentChunks(uint64_t inode, uint32_t first,
                                                        uint32_t last, std::set<uint32_t> sofar);
  // Splits [offset, offset+length) at chunk boundaries and at most `maxPortion` bytes;
  // `make` describes each portion's mutation (it may take less than offered), and each is
  // applied with mutateChunk().
  kj::Promise<Status> forEachPortion(
      uint64_t inode, uint64_t offset, uint64_t length, uint64_t maxPortion,
      kj::Function<ChunkMutation(uint32_t index, uint32_t chunkOffset, uint64_t at, uint64_t n)>
          make);
  // Gets a lease from the master and applies `m` to chunk `index`, retrying until
  // `deadline`; after a failure the master hears what each replica said and decides.
  // `m` must outlive the promise.
  // The master's prepareWrite: chunk `index` allocated and leased, with what the last
  // attempt's replicas said (`failures`, at `failedVersion`).
  kj::Promise<Result<ChunkInfo>> prepareChunk(uint64_t inode, uint32_t index,
                                              const std::vector<ReplicaFailure>& failures,
                                              uint64_t failedVersion);
  // Makes every replica of `chunk` sync; replicas that fail are reported to the master as
  // failed writes are, and the replica set it answers with syncs again, until `deadline`.
  kj::Promise<Status> syncChunk(uint64_t inode, ChunkInfo chunk, kj::TimePoint deadline,
                                uint32_t attempt);
  // append() to chunk `index`, at or after `minOffset` in it, retrying until `deadline`.
  struct AppendTry;
  kj::Promise<Result<uint64_t>> appendAt(AppendTry t, std::vector<ReplicaFailure> failures,
                                         uint64_t failedVersion);
  kj::Promise<Status> mutateChunk(uint64_t inode, uint32_t index, const ChunkMutation& m,
                                  kj::TimePoint deadline, uint32_t attempt,
                                  std::vector<ReplicaFailure> failures, uint64_t failedVersion);
  kj::Promise<DataOutcome> applyMutation(ChunkInfo chunk, const ChunkMutation& m);
  kj::Promise<DataOutcome> pushInto(const ChunkInfo& chunk, uint64_t dataId,
                                    kj::ArrayPtr<const kj::byte> data);
  kj::Promise<DataOutcome> pullInto(const ChunkInfo& chunk, uint64_t dataId, CopySource source,
                                    uint32_t length);
  kj::Promise<DataOutcome> pullFrom(ChunkInfo chunk, uint64_t dataId, ChunkInfo from,
                                    kj::Own<std::vector<ReplicaInfo>> sources, size_t next,
                                    uint32_t fromOffset, uint32_t length);
  // A data call to a chunkserver; an unreachable one becomes a failure naming it.
  template <typename Req>
  kj::Promise<DataOutcome> dataCall(Req&& request, std::string address);
  kj::Promise<Status> readRange(uint64_t inode, uint64_t offset, uint64_t length, kj::byte* out,
                                kj::TimePoint deadline);
  // seek() from chunk `index` on.
  kj::Promise<Result<uint64_t>> seekFrom(uint64_t inode, uint64_t offset, bool hole, uint64_t size,
                                         uint64_t chunkSize, uint32_t index);
  // The chunk's length (8 bytes) and its block bitmap, from the first replica that answers.
  kj::Promise<Result<std::string>> blockMapOf(ChunkInfo chunk, size_t replicaIndex);
  template <typename Req>
  kj::Promise<Status> callChunkserver(Req&& request, std::string address);

  ClientOptions opts;
  kj::Timer& timer;
  PeerPool peers;
  std::mt19937_64 rng;
  std::vector<std::string> masters;  // from opts.master
  uint64_t clientId = 0;             // names this client's mutations (retry cache)
  uint64_t nextRequest = 1;
  size_t masterIndex = 0;  // the one called now
  kj::Maybe<wire::ClientService::Client> masterService;
  // Files this client holds open: each open's caller and access, opened again on a new
  // session.
  struct HeldOpen {
    std::optional<Caller> as;
    int access = 0;
  };
  std::map<uint64_t, std::vector<HeldOpen>> held;
  std::map<uint64_t, uint32_t> opening;  // opens (counted in `held`) not yet answered
  // Opens ended but not yet closed at the master (see closeDelay), all of this session:
  // a new session forgets them (it holds only what `held` opens again).
  std::vector<uint64_t> closing;
  kj::Promise<void> closingTimer = nullptr;
  std::map<Caller, wire::ClientService::Client> callerServices;  // of this session
  bool standbyReads = false;
  size_t readerIndex = 0;  // the master read-only calls try first (never masterIndex)
  kj::Maybe<wire::ClientService::Client> readerService;
  std::map<Caller, wire::ClientService::Client> readerCallers;
  uint32_t readerFailures = 0;  // in a row
  kj::TimePoint readersPausedUntil = kj::origin<kj::TimePoint>();
  kj::Promise<void> keepalive = nullptr;
  // Watching (watchNamespace): sessions are numbered; the one the master watches, 0: none.
  class WatcherServer;
  struct WatchLink {
    Client* client;  // null once the client is gone
  };
  NamespaceWatcher* nsWatcher = nullptr;
  std::shared_ptr<WatchLink> watchLink = std::make_shared<WatchLink>(WatchLink{this});
  uint64_t sessionNumber = 0;
  uint64_t readerSession = 0;               // bumped with each new readerService
  uint64_t nextWatchId = 0, watchedId = 0;  // watch requests, and the one accepted
  uint64_t watchEpoch_ = 0;
  void startWatch(wire::ClientService::Client& service);
  // Watch `id` ended (its connection did, or its master stepped down): what was answered
  // under it may be stale.
  void watchLost(uint64_t id);
  void changedFromMaster(const std::vector<std::pair<uint64_t, std::string>>& entries,
                         const std::vector<uint64_t>& inodes, bool all);
  // Directories whose every name this client knows while watched, so that a lookup of a
  // name not among them is answered here (a create's look first costs no master call).
  // Learnt by listing a directory after a lookup in it missed; kept by this client's own
  // changes and what the master tells. Names only join (one removed stays, as "maybe"), so
  // an absence answered here is one the master would answer. Forgotten with the watch.
  struct KnownDir {
    uint64_t id = 0;        // the listing that learns it
    bool complete = false;  // every page read
    bool tooBig = false;    // or not to be known (too many names, or the listing failed)
    std::unordered_set<std::string> names;
  };
  static constexpr size_t MAX_KNOWN_DIR = 100000;     // names in one directory
  static constexpr size_t MAX_KNOWN_NAMES = 1 << 20;  // in all
  static constexpr size_t MAX_KNOWN_DIRS = 1 << 16;
  std::unordered_map<uint64_t, KnownDir> knownDirs;
  size_t knownNames = 0;
  uint64_t nextKnownDir = 0;
  void mayExist(uint64_t parent, const std::string& name);
  void learnDir(uint64_t dir, std::optional<Caller> as);
  kj::Promise<void> learnPage(uint64_t dir, uint64_t id, std::string after,
                              std::optional<Caller> as);
  uint64_t chunkSize = 0;  // learnt from the master; fixed for a cluster
  struct CachedLayout {
    FileLayout layout;
    uint32_t first = 0;
    uint32_t count = 0;
    kj::TimePoint fetched = kj::origin<kj::TimePoint>();
  };
  // Chunk locations for reads, so that a read costs no master round trip. Writes, size
  // changes and read failures drop an inode's entry.
  std::map<uint64_t, CachedLayout> layouts;
  // What the last append to a file left known, so that appends in a row skip the master:
  // the file's size as the master answered the size commit, and the lease (and write
  // token) of the chunk appended to, until shortly before either expires. Dropped at any
  // failure.
  struct AppendHint {
    uint64_t size = 0;
    kj::TimePoint sizeAt = kj::origin<kj::TimePoint>();
    std::optional<ChunkInfo> lease;
    kj::TimePoint leaseUntil = kj::origin<kj::TimePoint>();
  };
  std::map<uint64_t, AppendHint> appendHints;
  // Directories as this client's last change in each left them (see dirAttrTtl).
  struct FreshDir {
    FileAttr attr;
    kj::TimePoint until = kj::origin<kj::TimePoint>();
  };
  std::unordered_map<uint64_t, FreshDir> freshDirs;
  uint64_t dirForgets = 0;  // forgetDir() calls so far
  // After a call that changed `changed`: keeps the directories its response brought back
  // (`dirs`), and forgets what was kept of the others. `forgetsBefore`: dirForgets when
  // the call was sent.
  template <typename Response>
  void noteDirs(Response& r, std::initializer_list<uint64_t> changed, uint64_t forgetsBefore);
  // A change to directory `inode` whose response brings no attributes back.
  void forgetDir(uint64_t inode);
  void pruneAppendHints();
  kj::Promise<Result<FileLayout>> cachedLayout(uint64_t inode, uint32_t first, uint32_t count);
};

// Converts the wire's attributes.
FileAttr attrFromWire(wire::Attr::Reader a);

}  // namespace cairn
