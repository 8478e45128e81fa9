#pragma once
// Chunk replicas on local disks. Each chunk is one sparse file DATA/chunks/<first two hex
// digits>/<hex handle>: a header with its version, then per 64 KiB block whether the block
// was ever written and the CRC32C of its 64 KiB (zeros past the length), then from
// CHUNK_DATA_OFFSET the data; the file's size is that offset plus the chunk's length. Blocks never
// written are holes: they take no disk, read as zeros without a disk read, and are left out of
// copies. A write whose blocks come out all zeros leaves holes too.
//
// Every read verifies the written blocks it touches. A write reserves its disk blocks
// before it writes a byte, so that a full disk fails it (noSpace) with nothing changed;
// any other failure leaves the touched blocks consistent with what reached the disk, and
// never touches bytes outside the write. All calls but readNow() block on the disk: run
// them on a DiskPool. Thread-safe: calls for one chunk exclude each other where they must.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "disk.h"
#include "status.h"

namespace cairn {

constexpr uint32_t CHECKSUM_BLOCK = 64 * 1024;
// Where a chunk file's data starts (room for the records of a 2 GiB chunk before it).
constexpr uint64_t CHUNK_DATA_OFFSET = 1024 * 1024;

struct StoredChunk {
  uint64_t handle = 0;
  uint64_t version = 0;
  uint64_t length = 0;
};

// A run of written bytes of a chunk; what is between extents reads as zeros.
struct Extent {
  uint64_t offset = 0;
  std::string bytes;
};

class ChunkStore {
 public:
  // `dirs` are data directories; `chunkSize` bounds every chunk; below `reserveBytes` of
  // free space a directory takes no new chunk (0: the smaller of 1 GiB and 2 % of it).
  // `disk` must outlive this.
  ChunkStore(Disk& disk, std::vector<std::string> dirs, uint64_t chunkSize,
             std::optional<uint64_t> reserveBytes = std::nullopt);

  // Finds the chunks already on disk (and converts those of the first format, a data
  // file and a sidecar, to the current one). A chunk whose sidecar is unreadable is reported at
  // version 0, so that the master treats it as stale.
  Status open();
  void setChunkSize(uint64_t size) { chunkSize = size; }
  uint64_t maxChunkSize() const { return chunkSize; }

  std::vector<StoredChunk> list();
  // The smallest handle held above `after`; 0 if none (the scrubber's next, in turn).
  uint64_t nextAfter(uint64_t after);
  size_t count();
  bool has(uint64_t handle);
  // 0 if absent. Never waits for the chunk's lock: an event loop may call it.
  uint64_t versionOf(uint64_t handle);

  // Creates an empty chunk at `version` in the data directory with the most free space;
  // noSpace if every directory is within its reserve. An existing chunk only has its
  // version raised.
  Status create(uint64_t handle, uint64_t version);
  // Moves the replica to `version`, which must not be older than the stored one.
  Status setVersion(uint64_t handle, uint64_t version);
  // Reads [offset, offset+length) clipped to the chunk's length; replicaCorrupt if a
  // touched written block fails its checksum; staleVersion if `version` differs.
  Status read(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
              std::string& out);
  // read() if it can be done at once, without waiting for a lock or the disk (the bytes
  // are in the page cache, see Disk::readNow); nullopt where it would wait, and then the
  // caller goes to read() on a DiskPool thread. The one call an event loop may make.
  std::optional<Status> readNow(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
                                std::string& out);
  // The written parts of [offset, offset+length), block-aligned and clipped to the
  // length, verified as read() does; `chunkLength` is the chunk's length.
  Status readExtents(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
                     std::vector<Extent>& out, uint64_t& chunkLength);
  // Writes `data` at `offset`; the chunk grows to cover it (a gap stays a hole).
  Status write(uint64_t handle, uint64_t version, uint64_t offset, std::string_view data);
  // Makes [offset, offset+length) read as zeros and frees its whole blocks; the length
  // stays.
  Status punch(uint64_t handle, uint64_t version, uint64_t offset, uint64_t length);
  // Reserves disk for [offset, offset+length) so that writes there cannot fail for space;
  // the contents and the length stay.
  Status allocate(uint64_t handle, uint64_t version, uint64_t offset, uint64_t length);
  // Grows the chunk to `length` with a hole (record append's padding); a longer chunk
  // stays as it is. The version must match, as for write().
  Status extend(uint64_t handle, uint64_t version, uint64_t length);
  // The chunk's length at `version` (record append's end of chunk).
  Result<uint64_t> lengthOf(uint64_t handle, uint64_t version);
  // Cuts or extends (with a hole) to `length`, then moves to `version`.
  Status truncate(uint64_t handle, uint64_t version, uint64_t length);
  // One bit per block (least significant first), set where the block holds data.
  Status blockMap(uint64_t handle, uint64_t version, std::string& bitmap, uint64_t& length);
  Status sync(uint64_t handle);
  Status remove(uint64_t handle);
  // Re-reads every written block of the replica and checks it (the scrubber's check).
  Status verify(uint64_t handle);

  // Replica changes, numbered in the order they happened: created or moved to a new
  // version (`version`), or removed (version 0). Each master hears of them after the full
  // report it had at registration, so that a standby's map of replicas stays current.
  struct Change {
    uint64_t seq = 0;
    uint64_t handle = 0;
    uint64_t version = 0;
  };
  uint64_t lastChange();
  // Up to `limit` changes numbered after `seq`; false if some of them were forgotten
  // (then only a full report will do).
  bool changesSince(uint64_t seq, size_t limit, std::vector<Change>& out);
  // Forgets the changes numbered up to `seq` (every master has them).
  void trimChanges(uint64_t seq);

  // Capacity and free space summed over the data directories (whole file systems), and
  // what new chunks may still use (free space above each directory's reserve).
  DiskSpace space();
  uint64_t available();

  // The chunk's file, for tests and tools.
  std::string dataPath(uint64_t handle);

 private:
  struct Entry {
    size_t dir = 0;
    // Changed under `lock` held exclusive; read without it by versionOf(), which an event
    // loop calls (a write holds the lock for as long as the disk takes).
    std::atomic<uint64_t> version{0};
    uint64_t length = 0;
    std::shared_mutex lock;  // shared for reads, exclusive for changes
  };
  // A block's record.
  struct Block {
    uint32_t crc = 0;
    bool written = false;
    uint32_t prev = 0;  // with hasPrev: the CRC before a change that may not have landed
    bool hasPrev = false;
    bool matches(uint32_t c) const { return c == crc || (hasPrev && c == prev); }
  };
  using Visit = std::function<Status(uint64_t start, std::string_view blocks)>;
  // Whether a read may wait for locks and the disk (on a pool thread) or must not (on an
  // event loop, where the calls that take it say nullopt if it would have waited).
  enum class Wait { YES, NO };

  std::shared_ptr<Entry> find(uint64_t handle);
  std::string pathIn(size_t dir, uint64_t handle, const char* suffix);
  uint64_t reserveOf(size_t dir, const DiskSpace& space) const;
  Status writeHeader(uint64_t handle, Entry& e, bool create);
  Status writeHeaderAt(const std::string& path, Entry& e, bool create);
  Status readBlocks(uint64_t handle, Entry& e, uint64_t first, uint64_t count,
                    std::vector<Block>& out) {
    return *readBlocks(Wait::YES, handle, e, first, count, out);
  }
  std::optional<Status> readBlocks(Wait wait, uint64_t handle, Entry& e, uint64_t first,
                                   uint64_t count, std::vector<Block>& out);
  Status writeBlocks(uint64_t handle, Entry& e, uint64_t first, const std::vector<Block>& blocks);
  Status writeRecordsAt(const std::string& path, uint64_t first, const std::vector<Block>& blocks);
  // Calls `visit` for each run of written blocks in [first, first+count) with their bytes
  // (whole blocks, zeros past the length), after verifying them.
  Status forWrittenRuns(uint64_t handle, Entry& e, uint64_t first, uint64_t count,
                        const Visit& visit) {
    return *forWrittenRuns(Wait::YES, handle, e, first, count, visit);
  }
  std::optional<Status> forWrittenRuns(Wait wait, uint64_t handle, Entry& e, uint64_t first,
                                       uint64_t count, const Visit& visit);
  std::optional<Status> readIn(Wait wait, uint64_t handle, uint64_t version, uint64_t offset,
                               uint32_t length, std::string& out);
  // disk.read(), or with Wait::NO disk.readNow().
  std::optional<Status> readDisk(Wait wait, const std::string& path, uint64_t offset, size_t size,
                                 std::string& out) {
    if (wait == Wait::YES) return disk.read(path, offset, size, out);
    return disk.readNow(path, offset, size, out);
  }
  // Writes `data` (or zeros when `data` is null) over [offset, offset+length).
  Status applyRange(uint64_t handle, Entry& e, uint64_t offset, uint64_t length, const char* data);
  // After a failed write: the sidecar records of blocks [first, first+count) from what
  // is on disk now.
  void resync(uint64_t handle, Entry& e, uint64_t first, uint64_t count);
  Status convertFormat1(uint64_t handle, Entry& e);

  Disk& disk;
  std::vector<std::string> dirs;
  uint64_t chunkSize;
  std::optional<uint64_t> reserveBytes;
  std::mutex mutex;  // guards `chunks` (the map, not the entries)
  std::map<uint64_t, std::shared_ptr<Entry>> chunks;

  // Called where the change happens, under the lock that orders changes of that chunk.
  void noteChange(uint64_t handle, uint64_t version);
  static constexpr size_t MAX_CHANGES = 1'000'000;  // beyond: the oldest are forgotten
  std::mutex changeMutex;                           // guards the two below; taken last
  std::deque<Change> changes;
  uint64_t changeCount = 0;
};

}  // namespace cairn
