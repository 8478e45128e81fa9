#pragma once
// Per-file write-back buffering and sequential read-ahead for one client (a mount). Writes
// to an inode collect in a buffer and go out as large pushes while the caller goes on;
// buffers that do not overlap go out concurrently, overlapping ones in order. flush()
// makes them visible to every other client (close-to-open). Reads of a file being read
// sequentially fetch a growing window ahead and prefetch the next one. Runs on the
// Client's loop.

#include <kj/async.h>

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

class FileCache {
 public:
  FileCache(Client& client, FileCacheOptions options = {});

  // Every open() is matched by one release(), which flushes. open() forgets what this
  // client cached about the file, so that it reads what others wrote before (close-to-open).
  void open(uint64_t inode, uint64_t size);
  kj::Promise<Status> release(uint64_t inode);

  // Buffers `data` at `offset`. A failure of an earlier buffered write is returned here or
  // by the next flush.
  kj::Promise<Status> write(uint64_t inode, uint64_t offset, std::string data);
  kj::Promise<Result<std::string>> read(uint64_t inode, uint64_t offset, uint32_t size);
  // Writes out everything buffered and records the file's new size at the master.
  kj::Promise<Status> flush(uint64_t inode);
  // flush(), then every replica of every chunk written since the last fsync syncs to disk.
  kj::Promise<Status> fsync(uint64_t inode);
  // Changes attributes at the master; a size change first writes out what is buffered
  // (so that a cut applies to it too) and then drops cached bytes.
  kj::Promise<Result<FileAttr>> setattr(uint64_t inode, SetAttrRequest request);
  // Extends the file to at least `end` bytes (fallocate mode 0: holes read as zeros).
  kj::Promise<Status> extend(uint64_t inode, uint64_t end);
  // The size including buffered writes, when this client has any.
  std::optional<uint64_t> localSize(uint64_t inode);
  // The file was cut or extended to `size` (after flush() and the master's setattr).
  void resized(uint64_t inode, uint64_t size);

 private:
  struct Flush {
    uint64_t offset;
    uint64_t end;
    kj::ForkedPromise<void> promise;
    kj::Own<bool> done;
  };
  struct State {
    size_t refs = 0;
    uint64_t size = 0;
    bool sizeDirty = false;
    std::string buffer;
    uint64_t bufferOffset = 0;
    std::list<Flush> flushes;
    Status error;
    std::set<uint32_t> dirtyChunks;  // written since the last fsync
    bool allChunksDirty = false;     // when the chunk size was not yet known
    // Read-ahead: bytes [aheadOffset, aheadOffset + ahead.size()) as last fetched.
    uint64_t aheadOffset = 0;
    std::string ahead;
    uint64_t lastReadEnd = UINT64_MAX;
    size_t window = 0;
    uint64_t generation = 0;  // bumped whenever cached bytes may have gone stale
    kj::Maybe<kj::ForkedPromise<void>> prefetch;  // kept until replaced, even when done
    bool prefetching = false;
    uint64_t prefetchEnd = 0;
  };
  State& state(uint64_t inode);
  void invalidate(State& st);
  void startFlush(uint64_t inode, State& st);
  kj::Promise<void> waitFlushes(uint64_t inode, size_t leave);
  static void dropFinished(State& st);
  static bool idle(State& st);
  Status takeError(State& st);
  kj::Promise<Result<std::string>> readCached(uint64_t inode, uint64_t offset, uint32_t size);
  void maybePrefetch(uint64_t inode, State& st);

  Client& client;
  FileCacheOptions opts;
  std::map<uint64_t, State> files;
};

}  // namespace cairn
