#pragma once
// Open files for one client (a mount, the CLI, a MapReduce worker): the one write path
// every tool takes. A file is opened or created through FileCache, which hands out an
// OpenFile; its writes collect in a per-file buffer and go out as large pushes while the
// caller goes on (buffers that do not overlap concurrently, overlapping ones in order);
// flush() makes them visible to every other client (close-to-open), fsync() durable on
// every replica, close() both (and renames a file written under a temporary name into
// place). A file read sequentially is fetched ahead of its reader, in segments that each
// become readable as they arrive, over a window that grows while the reader keeps up. A
// write that fails never grows the file: the size recorded is what reached the
// chunkservers. Runs on the Client's loop.

#include <kj/async.h>

#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "client.h"

namespace cairn {

struct FileCacheOptions {
  size_t writeBufferBytes = 8 << 20;  // one push-and-commit
  size_t flushesInFlight = 6;         // buffers on their way per file before write() waits
  size_t readAheadBytes = 16 << 20;   // largest read-ahead window
};

struct CreateOptions {
  uint32_t mode = 0644;
  std::optional<Caller> caller;  // for whom (see Client); the file is theirs
  uint8_t replication = 0;       // 0: the directory's goal
  bool exclusive = false;        // alreadyExists if the name exists
  // Write under a temporary name and rename it to the file's name on close(), so that
  // readers never see a partial file and a failure leaves nothing behind. The temporary
  // is `tempName` in `tempParent` (defaults: ".NAME._COPYING_" beside the file); an old
  // one of the same name is replaced. With `noReplace`, close() fails with alreadyExists
  // (and removes the temporary) when the name exists by then.
  bool atomic = false;
  uint64_t tempParent = 0;
  std::string tempName;
  bool noReplace = false;
  bool syncOnClose = false;  // close() also makes every replica sync to disk
};

// fallocate(2)'s modes, as libcairn applies them (the FUSE bridge translates the flags).
struct AllocateMode {
  bool keepSize = false;   // FALLOC_FL_KEEP_SIZE: reserve without growing the file
  bool punchHole = false;  // FALLOC_FL_PUNCH_HOLE: zeros, whole blocks freed on every replica
  bool zeroRange = false;  // FALLOC_FL_ZERO_RANGE: zeros, and the disk reserved
};

class FileCache;

// One open of a regular file. Every OpenFile ends with close() or abort(); one dropped
// without either is closed in the background (its errors are only logged). Must be used
// and destroyed on the Client's loop.
class OpenFile {
 public:
  // Where an atomic file's temporary goes on close().
  struct Rename {
    uint64_t tempParent = 0;
    std::string tempName;
    uint64_t parent = 0;
    std::string name;
    bool noReplace = false;
    std::optional<Caller> as;
  };
  // Made by FileCache::open() and create() only.
  OpenFile(FileCache& cache, FileAttr attr, std::optional<Rename> rename, bool syncOnClose);
  ~OpenFile();
  uint64_t inode() const { return attr_.inode; }
  // The attributes when opened.
  const FileAttr& attr() const { return attr_; }
  // Buffers `data` at `offset` (in append mode, for the end of the file wherever that is
  // then: see setAppend). A failure of an earlier buffered write is returned here or by
  // the next flush.
  kj::Promise<Status> write(uint64_t offset, std::string data);
  // O_APPEND: every write lands whole at the end of the file as every client sees it, by
  // record append (Client::append), in the order written. Writes collect up to 1 MiB (and
  // a quarter of a chunk) and go out as one append; a write larger than that is split.
  void setAppend(bool on) { appendMode = on; }
  kj::Promise<Result<std::string>> read(uint64_t offset, uint32_t size);
  // Writes out everything buffered and records the file's new size at the master.
  kj::Promise<Status> flush();
  // flush(), then every replica of every chunk written since the last fsync syncs to disk.
  kj::Promise<Status> fsync();
  // flush() (fsync() with syncOnClose), the rename of an atomic file, and the end of the
  // open; the first failure is returned, and the open is over either way.
  kj::Promise<Status> close();
  // The end of the open, keeping nothing that is not written yet; an atomic file's
  // temporary is removed.
  kj::Promise<void> abort();

 private:
  FileCache& cache;
  FileAttr attr_;
  std::optional<Rename> rename;
  bool syncOnClose;
  bool appendMode = false;
  bool done = false;
};

class FileCache final : private kj::TaskSet::ErrorHandler {
 public:
  FileCache(Client& client, FileCacheOptions options = {});

  // Opens a regular file: it forgets what this client cached about it, so that it reads
  // what others wrote before (close-to-open). The master holds it open (it outlives its
  // last name) until the OpenFile ends.
  // `access`: ACCESS_READ and/or ACCESS_WRITE, checked by the master for `as`.
  kj::Promise<Result<kj::Own<OpenFile>>> open(uint64_t inode, int access = ACCESS_READ,
                                              std::optional<Caller> as = std::nullopt);
  // Creates `name` in `parent` (or opens it, without `exclusive`) and opens it.
  kj::Promise<Result<kj::Own<OpenFile>>> create(uint64_t parent, std::string name,
                                                CreateOptions options);

  // Calls by inode, for what arrives without an open file (the mount's setattr, getattr,
  // fallocate, lseek and copy_file_range name inodes).
  //
  // Changes attributes at the master; a size change first writes out what is buffered
  // (so that a cut applies to it too) and then drops cached bytes.
  kj::Promise<Result<FileAttr>> setattr(uint64_t inode, SetAttrRequest request,
                                        std::optional<Caller> as = std::nullopt);
  // The size including buffered writes, when this client has any.
  std::optional<uint64_t> localSize(uint64_t inode);
  // Attributes from the master as this client sees the file: its buffered writes count
  // in the size. Every attribute this client reports must pass through here (a size
  // smaller than what it wrote would make its kernel cut the file short).
  FileAttr asSeenHere(FileAttr attr);
  // fallocate(2) over [offset, offset+length): reserves disk on every replica (and grows
  // the file unless keepSize), or makes the range zeros (punchHole frees whole blocks).
  kj::Promise<Status> fallocate(uint64_t inode, AllocateMode mode, uint64_t offset,
                                uint64_t length);
  // lseek(SEEK_DATA / SEEK_HOLE), after what is buffered is written out.
  kj::Promise<Result<uint64_t>> seek(uint64_t inode, uint64_t offset, bool hole);
  // copy_file_range(2): copies up to `length` bytes (fewer past the source's end, and at
  // most 1 GiB) on the chunkservers and grows the destination to cover them. Returns the
  // bytes copied.
  kj::Promise<Result<uint64_t>> copyRange(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                          uint64_t dstOffset, uint64_t length);

 private:
  friend class OpenFile;
  struct Flush {
    uint64_t offset;
    uint64_t end;
    kj::ForkedPromise<void> promise;
    kj::Own<bool> done;
    bool append = false;  // lands at the end of the file: after every earlier flush
  };
  // Bytes [offset, offset + length) of a file, fetched ahead of its reader by one
  // Client::read. Once arrived, `bytes` may be shorter (the end of the file as that read
  // saw it) or empty (the read failed: the reader asks again itself).
  struct Segment {
    uint64_t id;
    uint64_t offset;
    uint64_t length;
    kj::ForkedPromise<void> fetched;  // owns the read; destroying the segment cancels it
    bool arrived = false;
    std::string bytes;
  };
  struct State {
    size_t refs = 0;
    uint64_t size = 0;       // as this client sees it, buffered writes included
    uint64_t confirmed = 0;  // backed by writes that reached the chunkservers, or the master
    bool sizeDirty = false;
    std::string buffer;
    uint64_t bufferOffset = 0;
    std::string appends;  // O_APPEND writes not yet sent, in order
    // The failure of an append while later ones were queued behind it: those are not sent
    // (they would land after a gap, out of the order written) but fail with it.
    Status appendFailure;
    std::list<Flush> flushes;
    Status error;
    std::set<uint32_t> dirtyChunks;  // written since the last fsync
    bool allChunksDirty = false;     // when the chunk size was not yet known
    // Read-ahead for a sequential reader: consecutive segments of the file, in order,
    // arrived or on their way, reaching `window` bytes past the last read.
    std::deque<Segment> ahead;
    uint64_t lastReadEnd = UINT64_MAX;
    size_t window = 0;
    bool readPastSize = false;  // a read found bytes past `size`: another client grew it
  };
  // One more open of `inode` (the master already holds it open for this client).
  void attach(uint64_t inode, uint64_t size);
  // Ends one open: flushes, and the master is told once the last open ends.
  kj::Promise<Status> release(uint64_t inode);
  kj::Promise<Status> write(uint64_t inode, uint64_t offset, std::string data);
  kj::Promise<Status> append(uint64_t inode, std::string data);
  kj::Promise<Result<std::string>> read(uint64_t inode, uint64_t offset, uint32_t size);
  // With `leaveError`, for a reader: a failure of an earlier write is left for the writer's
  // next write, flush, fsync or close, which must hear of it.
  kj::Promise<Status> flush(uint64_t inode, bool leaveError = false);
  kj::Promise<Status> fsync(uint64_t inode);
  // The file was cut or extended to `size` (after flush() and the master's change).
  void resized(uint64_t inode, uint64_t size);
  // The file grew to at least `end` at the master (a copy or an allocation).
  void grew(uint64_t inode, uint64_t end);

  State& state(uint64_t inode);
  void invalidate(State& st);
  // Sends what is buffered: the write buffer, then the appends after it.
  void startFlush(uint64_t inode, State& st);
  void startWrite(uint64_t inode, State& st);
  void startAppends(uint64_t inode, State& st);
  // Appends `data` in pieces of at most `piece` bytes, one after another; resolves to the
  // end of the last.
  kj::Promise<Result<uint64_t>> appendPieces(uint64_t inode, kj::ArrayPtr<const kj::byte> data,
                                             size_t piece);
  static constexpr size_t MAX_APPEND = 1 << 20;  // O_APPEND writes collected into one append
  // Back-pressure and the first failure of an earlier write.
  kj::Promise<Status> afterWrite(uint64_t inode);
  kj::Promise<void> waitFlushes(uint64_t inode, size_t leave);
  static void dropFinished(State& st);
  static bool idle(State& st);
  Status takeError(State& st);
  kj::Promise<Result<std::string>> readCached(uint64_t inode, uint64_t offset, uint32_t size);
  // Bytes [offset, offset + size) when arrived segments hold them all.
  static std::optional<std::string> fromAhead(const State& st, uint64_t offset, uint32_t size);
  // Waits for `seg`, then reads again.
  kj::Promise<Result<std::string>> waitFor(Segment& seg, uint64_t inode, uint64_t offset,
                                           uint32_t size);
  // The first segment on its way that holds some of bytes [offset, end).
  static Segment* onItsWay(State& st, uint64_t offset, uint64_t end);
  // Fetches segments (from `from` when there are none) until they reach `window` bytes
  // past the last read.
  void readAhead(uint64_t inode, State& st, uint64_t from);
  // Segment `id` of `inode` has come, with `bytes` (null: its read failed).
  void arrived(uint64_t inode, uint64_t id, std::string* bytes);
  void taskFailed(kj::Exception&& exception) override;

  Client& client;
  FileCacheOptions opts;
  uint64_t segments = 0;  // read-ahead segments made, for their ids
  std::map<uint64_t, State> files;
  kj::TaskSet background;  // closes of OpenFiles dropped without close()
};

}  // namespace cairn
