#pragma once
// libcairn: the client library every tool uses. One Client lives on one kj event loop; all
// of its calls must be made on that loop (see BlockingClient for other threads). Each call
// is bounded in time: a master or chunkserver that does not answer becomes a Status
// (unavailable, naming the address), never a hang.

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "chunkserver.capnp.h"
#include "master.capnp.h"
#include "rpc.h"
#include "status.h"

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
};

struct SetAttrRequest {
  std::optional<uint32_t> mode, uid, gid;
  std::optional<uint64_t> size;
  std::optional<int64_t> atimeNs, mtimeNs;
};

struct ClientOptions {
  std::string master;  // HOST:PORT
  // This host's names as chunkservers advertise them (addresses or a --host name); reads
  // prefer replicas there.
  std::vector<std::string> localHosts;
  kj::Duration rpcTimeout = 15 * kj::SECONDS;  // data calls and chunk preparation
  kj::Duration metaTimeout = 5 * kj::SECONDS;  // namespace calls to the master
  kj::Duration connectTimeout = 3 * kj::SECONDS;
  kj::Duration retryFor = 20 * kj::SECONDS;  // how long reads and writes keep retrying
  uint32_t pieceBytes = 1 << 20;             // size of one push or read RPC
  uint32_t parallelPieces = 8;               // pieces in flight per call
  kj::Duration layoutTtl = 2 * kj::SECONDS;  // how long read() trusts cached chunk locations
  // Seeds write buffer ids and replica choice; 0 draws one from the system, so that no two
  // clients (which share chunkservers' buffer-id space) pick the same ids.
  uint64_t seed = 0;
};

class Client {
 public:
  Client(ClientOptions options, kj::Network& network, kj::Timer& timer);
  ~Client();

  const std::string& masterAddress() const { return opts.master; }

  // Namespace.
  kj::Promise<Result<FileAttr>> resolve(std::string path);
  kj::Promise<Result<FileAttr>> lookup(uint64_t parent, std::string name);
  kj::Promise<Result<FileAttr>> getattr(uint64_t inode);
  kj::Promise<Result<FileAttr>> mkdir(uint64_t parent, std::string name, uint32_t mode,
                                      uint32_t uid, uint32_t gid);
  kj::Promise<Result<FileAttr>> create(uint64_t parent, std::string name, uint32_t mode,
                                       uint32_t uid, uint32_t gid, uint8_t replication,
                                       bool exclusive);
  kj::Promise<Result<FileAttr>> setattr(uint64_t inode, SetAttrRequest request);
  // One page of a directory: entries after `after`; `more` says whether others follow.
  kj::Promise<Result<std::vector<DirEntryInfo>>> readdir(uint64_t inode, std::string after,
                                                         uint32_t limit, bool* more);
  // Every entry of a directory, page after page.
  kj::Promise<Result<std::vector<DirEntryInfo>>> listAll(uint64_t dir);
  // Like `mkdir -p`: makes the missing directories of an absolute path; returns the last.
  kj::Promise<Result<FileAttr>> makeDirs(std::string path, uint32_t uid, uint32_t gid);
  // Like `rm -r`: removes `name` in `parent` and, for a directory, everything under it.
  kj::Promise<Status> removeTree(uint64_t parent, std::string name);
  kj::Promise<Status> unlink(uint64_t parent, std::string name);
  kj::Promise<Status> rmdir(uint64_t parent, std::string name);
  kj::Promise<Status> rename(uint64_t srcParent, std::string srcName, uint64_t dstParent,
                             std::string dstName, bool noReplace = false);
  kj::Promise<Result<FileAttr>> symlink(uint64_t parent, std::string name, std::string target,
                                        uint32_t uid, uint32_t gid);
  kj::Promise<Result<std::string>> readlink(uint64_t inode);
  kj::Promise<Result<FileAttr>> link(uint64_t inode, uint64_t newParent, std::string newName);
  kj::Promise<Result<FileAttr>> mknod(uint64_t parent, std::string name, FileType type,
                                      uint32_t mode, uint32_t uid, uint32_t gid, uint64_t rdev);
  // flags: 1 create only, 2 replace only.
  kj::Promise<Status> setxattr(uint64_t inode, std::string name, std::string value, uint32_t flags);
  kj::Promise<Result<std::string>> getxattr(uint64_t inode, std::string name);
  kj::Promise<Result<std::vector<std::string>>> listxattr(uint64_t inode);
  kj::Promise<Status> removexattr(uint64_t inode, std::string name);
  struct FsStats {
    uint64_t capacityBytes = 0;
    uint64_t freeBytes = 0;
    uint64_t files = 0;
  };
  kj::Promise<Result<FsStats>> statfs();
  kj::Promise<Result<FileAttr>> setReplication(uint64_t inode, uint8_t replication);

  // Chunks.
  kj::Promise<Result<FileLayout>> layout(uint64_t inode, uint32_t firstIndex, uint32_t count);
  kj::Promise<Result<std::vector<ServerStatus>>> servers(uint64_t* chunkSize);
  kj::Promise<Result<std::vector<TrashInfo>>> trashList();
  kj::Promise<Result<FileAttr>> trashRestore(std::string path);
  kj::Promise<Status> decommission(std::string address, uint64_t* remaining, bool* done);
  kj::Promise<Result<double>> balance(double threshold);
  kj::Promise<Result<HealthInfo>> health();

  // Reads up to `length` bytes at `offset` into `out` (resized to what the file holds:
  // shorter at its end; holes read as zeros). Chunks are read in parallel, each from the
  // closest replica, failing over to others.
  kj::Promise<Status> read(uint64_t inode, uint64_t offset, uint64_t length, std::string& out);
  // Writes `data` at `offset` through the GFS write path. The file's size is not
  // changed: call commitSize once the writes are done.
  kj::Promise<Status> write(uint64_t inode, uint64_t offset, kj::ArrayPtr<const kj::byte> data);
  kj::Promise<Result<FileAttr>> commitSize(uint64_t inode, uint64_t size, int64_t mtimeNs = 0);

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
  wire::ClientService::Client master();
  void masterFailed();
  template <typename T, typename Req, typename Fn>
  kj::Promise<T> callMaster(Req&& request, Fn&& onResponse, kj::Duration timeout = 0 * kj::SECONDS);
  Status masterError(const kj::Exception& e, kj::Duration timeout);

  kj::Promise<Result<std::vector<DirEntryInfo>>> listFrom(uint64_t dir,
                                                          std::vector<DirEntryInfo> sofar);
  kj::Promise<Result<FileAttr>> makeDirsFrom(FileAttr dir, std::vector<std::string> names,
                                             size_t next, uint32_t uid, uint32_t gid);
  kj::Promise<Status> removeEntries(uint64_t dir, std::vector<DirEntryInfo> entries, size_t next);

  kj::Promise<uint64_t> ensureChunkSize(uint64_t inode);
  kj::Promise<Status> readPiece(uint64_t inode, ChunkInfo chunk, uint64_t chunkOffset,
                                uint32_t length, kj::byte* out, kj::TimePoint deadline);
  kj::Promise<Status> readChunk(ChunkInfo chunk, uint64_t chunkOffset, uint32_t length,
                                kj::byte* out, size_t replicaIndex);
  kj::Promise<Status> writeChunk(uint64_t inode, uint32_t index, uint32_t chunkOffset,
                                 kj::ArrayPtr<const kj::byte> data, kj::TimePoint deadline,
                                 uint32_t attempt, std::string failedReplica);
  kj::Promise<Status> pushAndCommit(ChunkInfo chunk, uint32_t chunkOffset,
                                    kj::ArrayPtr<const kj::byte> data);
  kj::Promise<Status> readRange(uint64_t inode, uint64_t offset, uint64_t length, kj::byte* out,
                                kj::TimePoint deadline);
  template <typename Req>
  kj::Promise<Status> callChunkserver(Req&& request, std::string address);

  ClientOptions opts;
  kj::Timer& timer;
  PeerPool peers;
  std::mt19937_64 rng;
  kj::Maybe<wire::ClientService::Client> masterService;
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
  kj::Promise<Result<FileLayout>> cachedLayout(uint64_t inode, uint32_t first, uint32_t count);
};

// Converts the wire's attributes.
FileAttr attrFromWire(wire::Attr::Reader a);

}  // namespace cairn
