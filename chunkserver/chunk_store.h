#pragma once
// Chunk replicas on local disks. Each chunk is a file DATA/chunks/<first two hex digits>/<hex
// handle> with a sidecar "<hex handle>.meta" holding its version and one CRC32C per 64 KiB
// block. Every read verifies the blocks it touches. All calls block on the disk: run them
// on a DiskPool. Thread-safe: calls for one chunk exclude each other where they must.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "disk.h"
#include "status.h"

namespace cairn {

constexpr uint32_t CHECKSUM_BLOCK = 64 * 1024;

struct StoredChunk {
  uint64_t handle = 0;
  uint64_t version = 0;
  uint64_t length = 0;
};

class ChunkStore {
 public:
  // `dirs` are data directories; `chunkSize` bounds every chunk. `disk` must outlive this.
  ChunkStore(Disk& disk, std::vector<std::string> dirs, uint64_t chunkSize);

  // Finds the chunks already on disk. A chunk whose sidecar is unreadable is reported at
  // version 0, so that the master treats it as stale.
  Status open();
  void setChunkSize(uint64_t size) { chunkSize = size; }
  uint64_t maxChunkSize() const { return chunkSize; }

  std::vector<StoredChunk> list();
  bool has(uint64_t handle);
  uint64_t versionOf(uint64_t handle);  // 0 if absent

  // Creates an empty chunk at `version` in the directory with the most free space; an
  // existing chunk only has its version raised.
  Status create(uint64_t handle, uint64_t version);
  // Moves the replica to `version`, which must not be older than the stored one.
  Status setVersion(uint64_t handle, uint64_t version);
  // Reads [offset, offset+length) clipped to the chunk's length; replicaCorrupt if a
  // touched block fails its checksum; staleVersion if `version` differs.
  Status read(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
              std::string& out);
  // Writes `data` at `offset` (a gap past the end reads as zeros).
  Status write(uint64_t handle, uint64_t version, uint64_t offset, std::string_view data);
  // Cuts or extends (with zeros) to `length`, then moves to `version`.
  Status truncate(uint64_t handle, uint64_t version, uint64_t length);
  Status sync(uint64_t handle);
  Status remove(uint64_t handle);
  // Re-reads the whole replica and checks every block (the scrubber's check).
  Status verify(uint64_t handle);

  // Capacity and use summed over the data directories (whole file systems).
  DiskSpace space();

  // Paths, for tests and tools.
  std::string dataPath(uint64_t handle);
  std::string metaPath(uint64_t handle);

 private:
  struct Entry {
    size_t dir = 0;
    uint64_t version = 0;
    uint64_t length = 0;
    std::shared_mutex lock;  // shared for reads, exclusive for changes
  };
  std::shared_ptr<Entry> find(uint64_t handle);
  std::string pathIn(size_t dir, uint64_t handle, const char* suffix);
  Status writeHeader(uint64_t handle, Entry& e, bool create);
  Status writeChecksums(uint64_t handle, Entry& e, uint64_t start, std::string_view bytes);
  Status verifyBlocks(uint64_t handle, Entry& e, uint64_t start, std::string_view bytes);

  Disk& disk;
  std::vector<std::string> dirs;
  uint64_t chunkSize;
  std::mutex mutex;  // guards `chunks` (the map, not the entries)
  std::map<uint64_t, std::shared_ptr<Entry>> chunks;
};

}  // namespace cairn
