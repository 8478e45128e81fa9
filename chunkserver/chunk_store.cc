#include "chunk_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "crc32c.h"
#include "log.h"

namespace cairn {
namespace {

constexpr char MAGIC[8] = {'C', 'A', 'I', 'R', 'N', 'C', 'H', 'K'};
constexpr uint32_t META_FORMAT = 1;
constexpr uint64_t HEADER_SIZE = 32;

uint64_t blockOf(uint64_t offset) { return offset / CHECKSUM_BLOCK; }

std::string hexName(uint64_t handle) { return fmt::format("{:02x}", handle); }

}  // namespace

ChunkStore::ChunkStore(Disk& disk, std::vector<std::string> dirs, uint64_t chunkSize)
    : disk(disk), dirs(std::move(dirs)), chunkSize(chunkSize) {}

std::string ChunkStore::pathIn(size_t dir, uint64_t handle, const char* suffix) {
  std::string name = hexName(handle);
  return fmt::format("{}/chunks/{}/{}{}", dirs[dir], name.substr(0, 2), name, suffix);
}

std::shared_ptr<ChunkStore::Entry> ChunkStore::find(uint64_t handle) {
  std::lock_guard<std::mutex> guard(mutex);
  auto it = chunks.find(handle);
  return it == chunks.end() ? nullptr : it->second;
}

std::string ChunkStore::dataPath(uint64_t handle) {
  auto e = find(handle);
  return pathIn(e ? e->dir : 0, handle, "");
}

std::string ChunkStore::metaPath(uint64_t handle) {
  auto e = find(handle);
  return pathIn(e ? e->dir : 0, handle, ".meta");
}

Status ChunkStore::open() {
  for (size_t d = 0; d < dirs.size(); ++d) {
    std::string top = dirs[d] + "/chunks";
    Status s = disk.makeDirs(top);
    if (!s.ok()) return s;
    std::vector<std::string> buckets;
    s = disk.list(top, buckets);
    if (!s.ok()) return s;
    for (auto& bucket : buckets) {
      std::vector<std::string> names;
      if (!disk.list(top + "/" + bucket, names).ok()) continue;
      for (auto& name : names) {
        if (name.size() > 16 || name.find('.') != std::string::npos) continue;
        uint64_t handle = 0;
        try {
          handle = std::stoull(name, nullptr, 16);
        } catch (...) {
          continue;
        }
        auto entry = std::make_shared<Entry>();
        entry->dir = d;
        auto length = disk.size(pathIn(d, handle, ""));
        entry->length = length.ok() ? length.value : 0;
        std::string header;
        Status hs = disk.read(pathIn(d, handle, ".meta"), 0, HEADER_SIZE, header);
        if (hs.ok() && header.size() == HEADER_SIZE && memcmp(header.data(), MAGIC, 8) == 0) {
          memcpy(&entry->version, header.data() + 16, 8);
        } else {
          logWarn("chunk {:x}: unreadable sidecar; reporting it stale", handle);
        }
        std::lock_guard<std::mutex> guard(mutex);
        chunks[handle] = std::move(entry);
      }
    }
  }
  logInfo("{} chunks found in {} data directories", chunks.size(), dirs.size());
  return Status::OK();
}

std::vector<StoredChunk> ChunkStore::list() {
  std::lock_guard<std::mutex> guard(mutex);
  std::vector<StoredChunk> out;
  for (auto& [handle, e] : chunks) out.push_back({handle, e->version, e->length});
  return out;
}

bool ChunkStore::has(uint64_t handle) { return find(handle) != nullptr; }

uint64_t ChunkStore::versionOf(uint64_t handle) {
  auto e = find(handle);
  if (e == nullptr) return 0;
  std::shared_lock<std::shared_mutex> lock(e->lock);
  return e->version;
}

Status ChunkStore::writeHeader(uint64_t handle, Entry& e, bool create) {
  char header[HEADER_SIZE] = {};
  memcpy(header, MAGIC, 8);
  memcpy(header + 8, &META_FORMAT, 4);
  memcpy(header + 16, &e.version, 8);
  return disk.write(pathIn(e.dir, handle, ".meta"), 0, header, HEADER_SIZE, create);
}

Status ChunkStore::create(uint64_t handle, uint64_t version) {
  if (find(handle)) return setVersion(handle, std::max(version,
                                                                          versionOf(handle)));
  size_t best = 0;
  uint64_t bestFree = 0;
  for (size_t d = 0; d < dirs.size(); ++d) {
    auto space = disk.space(dirs[d]);
    if (space.ok() && space.value.freeBytes > bestFree) {
      best = d;
      bestFree = space.value.freeBytes;
    }
  }
  if (bestFree < chunkSize) {  // room for the whole chunk, or it goes elsewhere
    return Status::noSpace(fmt::format("no data directory has room for chunk {:x}", handle));
  }
  auto entry = std::make_shared<Entry>();
  entry->dir = best;
  entry->version = version;
  std::string data = pathIn(best, handle, "");
  Status s = disk.makeDirs(data.substr(0, data.rfind('/')));
  if (s.ok()) s = disk.write(data, 0, "", 0, true);
  if (s.ok()) s = writeHeader(handle, *entry, true);
  if (!s.ok()) {
    disk.remove(data);
    disk.remove(pathIn(best, handle, ".meta"));
    return s;
  }
  std::lock_guard<std::mutex> guard(mutex);
  chunks[handle] = std::move(entry);
  return Status::OK();
}

Status ChunkStore::setVersion(uint64_t handle, uint64_t version) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (version < e->version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, not going back to {}",
                                            handle, e->version, version));
  }
  if (version == e->version) return Status::OK();
  uint64_t old = e->version;
  e->version = version;
  Status s = writeHeader(handle, *e, false);
  if (!s.ok()) e->version = old;
  return s;
}

Status ChunkStore::writeChecksums(uint64_t handle, Entry& e, uint64_t start,
                                  std::string_view bytes) {
  // `bytes` are the whole contents of the blocks from `start` (block-aligned) on.
  std::string crcs;
  for (size_t off = 0; off < bytes.size(); off += CHECKSUM_BLOCK) {
    size_t n = std::min<size_t>(CHECKSUM_BLOCK, bytes.size() - off);
    uint32_t crc = crc32c(0, bytes.data() + off, n);
    crcs.append(reinterpret_cast<const char*>(&crc), 4);
  }
  return disk.write(pathIn(e.dir, handle, ".meta"), HEADER_SIZE + 4 * blockOf(start),
                    crcs.data(), crcs.size(), false);
}

Status ChunkStore::verifyBlocks(uint64_t handle, Entry& e, uint64_t start,
                                std::string_view bytes) {
  std::string crcs;
  size_t blocks = (bytes.size() + CHECKSUM_BLOCK - 1) / CHECKSUM_BLOCK;
  Status s = disk.read(pathIn(e.dir, handle, ".meta"), HEADER_SIZE + 4 * blockOf(start),
                       4 * blocks, crcs);
  if (!s.ok()) return Status::corrupt(fmt::format("chunk {:x}: {}", handle, s.message()));
  if (crcs.size() != 4 * blocks) {
    return Status::corrupt(fmt::format("chunk {:x}: checksums missing", handle));
  }
  for (size_t b = 0; b < blocks; ++b) {
    size_t off = b * CHECKSUM_BLOCK;
    size_t n = std::min<size_t>(CHECKSUM_BLOCK, bytes.size() - off);
    uint32_t expected;
    memcpy(&expected, crcs.data() + 4 * b, 4);
    if (crc32c(0, bytes.data() + off, n) != expected) {
      return Status::corrupt(fmt::format("chunk {:x}: checksum mismatch in block {}", handle,
                                         blockOf(start) + b));
    }
  }
  return Status::OK();
}

Status ChunkStore::read(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
                        std::string& out) {
  out.clear();
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, asked for {}", handle,
                                            e->version, version));
  }
  if (offset >= e->length || length == 0) return Status::OK();
  uint64_t end = std::min<uint64_t>(offset + length, e->length);
  uint64_t start = blockOf(offset) * CHECKSUM_BLOCK;
  uint64_t stop = std::min<uint64_t>((blockOf(end - 1) + 1) * CHECKSUM_BLOCK, e->length);
  std::string blocks;
  Status s = disk.read(pathIn(e->dir, handle, ""), start, stop - start, blocks);
  if (!s.ok()) return s;
  if (blocks.size() != stop - start) {
    return Status::corrupt(fmt::format("chunk {:x}: file shorter than recorded", handle));
  }
  s = verifyBlocks(handle, *e, start, blocks);
  if (!s.ok()) return s;
  out = blocks.substr(offset - start, end - offset);
  return Status::OK();
}

Status ChunkStore::write(uint64_t handle, uint64_t version, uint64_t offset,
                         std::string_view data) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (offset + data.size() > chunkSize) {
    return Status::invalidArgument(fmt::format("write past the end of chunk {:x}", handle));
  }
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, write is for {}",
                                            handle, e->version, version));
  }
  uint64_t end = offset + data.size();
  uint64_t newLength = std::max(e->length, end);
  // The region rewritten is whole checksum blocks: from the block holding the first new
  // byte (or the old end, when the write leaves a gap) to the block holding the last.
  uint64_t start = blockOf(std::min(offset, e->length)) * CHECKSUM_BLOCK;
  uint64_t stop = std::min<uint64_t>((blockOf(end - 1) + 1) * CHECKSUM_BLOCK, newLength);
  if (data.empty()) return Status::OK();
  std::string path = pathIn(e->dir, handle, "");
  uint64_t keepHead = std::min(offset, e->length);
  uint64_t tailEnd = std::min(stop, e->length);
  if (keepHead == start && tailEnd <= end && offset == start) {
    // Whole blocks from the first byte on (the common, sequential case): no old bytes to
    // merge, so the data goes to disk and into the checksums as it is.
    Status s = disk.write(path, offset, data.data(), data.size(), false);
    if (s.ok()) s = writeChecksums(handle, *e, start, data);
    if (!s.ok()) {
      logWarn("chunk {:x}: write failed: {}", handle, s.toString());
      return s;
    }
    e->length = newLength;
    return Status::OK();
  }
  std::string region(stop - start, '\0');
  if (keepHead > start) {
    std::string head;
    Status s = disk.read(path, start, keepHead - start, head);
    if (!s.ok()) return s;
    memcpy(region.data(), head.data(), head.size());
  }
  if (tailEnd > end) {
    std::string tail;
    Status s = disk.read(path, end, tailEnd - end, tail);
    if (!s.ok()) return s;
    memcpy(region.data() + (end - start), tail.data(), tail.size());
  }
  memcpy(region.data() + (offset - start), data.data(), data.size());
  Status s = disk.write(path, start, region.data(), region.size(), false);
  if (s.ok()) s = writeChecksums(handle, *e, start, region);
  if (!s.ok()) {
    // The replica may now be half-written; its checksums will say so on the next read.
    logWarn("chunk {:x}: write failed: {}", handle, s.toString());
    return s;
  }
  e->length = newLength;
  return Status::OK();
}

Status ChunkStore::truncate(uint64_t handle, uint64_t version, uint64_t length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (length > chunkSize) return Status::invalidArgument("truncate past the chunk size");
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (version < e->version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}", handle, e->version));
  }
  std::string path = pathIn(e->dir, handle, "");
  if (length < e->length) {
    Status s = disk.truncate(path, length);
    if (!s.ok()) return s;
    uint64_t start = blockOf(length) * CHECKSUM_BLOCK;
    std::string last;
    if (length > start) {
      s = disk.read(path, start, length - start, last);
      if (!s.ok()) return s;
      s = writeChecksums(handle, *e, start, last);
      if (!s.ok()) return s;
    }
    disk.truncate(pathIn(e->dir, handle, ".meta"),
                  HEADER_SIZE + 4 * ((length + CHECKSUM_BLOCK - 1) / CHECKSUM_BLOCK));
    e->length = length;
  } else if (length > e->length) {
    uint64_t start = blockOf(e->length) * CHECKSUM_BLOCK;
    std::string region;
    Status s = disk.read(path, start, e->length - start, region);
    if (!s.ok()) return s;
    region.resize(length - start, '\0');
    s = disk.write(path, start, region.data(), region.size(), false);
    if (s.ok()) s = writeChecksums(handle, *e, start, region);
    if (!s.ok()) return s;
    e->length = length;
  }
  if (version != e->version) {
    uint64_t old = e->version;
    e->version = version;
    Status s = writeHeader(handle, *e, false);
    if (!s.ok()) {
      e->version = old;
      return s;
    }
  }
  return Status::OK();
}

Status ChunkStore::sync(uint64_t handle) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  Status s = disk.sync(pathIn(e->dir, handle, ""));
  if (s.ok()) s = disk.sync(pathIn(e->dir, handle, ".meta"));
  return s;
}

Status ChunkStore::remove(uint64_t handle) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto it = chunks.find(handle);
    if (it == chunks.end()) return Status::notFound(fmt::format("no chunk {:x}", handle));
    // Wait out readers and writers of this chunk before it goes.
    std::unique_lock<std::shared_mutex> lock(it->second->lock);
    lock.unlock();
    entry = std::move(it->second);
    chunks.erase(it);
  }
  Status a = disk.remove(pathIn(entry->dir, handle, ""));
  Status b = disk.remove(pathIn(entry->dir, handle, ".meta"));
  return a.ok() ? b : a;
}

Status ChunkStore::verify(uint64_t handle) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  std::string path = pathIn(e->dir, handle, "");
  for (uint64_t off = 0; off < e->length; off += 16 * CHECKSUM_BLOCK) {
    std::string bytes;
    uint64_t n = std::min<uint64_t>(16 * CHECKSUM_BLOCK, e->length - off);
    Status s = disk.read(path, off, n, bytes);
    if (!s.ok()) return s;
    if (bytes.size() != n) return Status::corrupt("chunk file shorter than recorded");
    s = verifyBlocks(handle, *e, off, bytes);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

DiskSpace ChunkStore::space() {
  DiskSpace total;
  for (auto& d : dirs) {
    auto s = disk.space(d);
    if (!s.ok()) continue;
    total.capacityBytes += s.value.capacityBytes;
    total.freeBytes += s.value.freeBytes;
  }
  return total;
}

}  // namespace cairn
