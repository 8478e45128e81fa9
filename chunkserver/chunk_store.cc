#include "chunk_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>

#include "crc32c.h"
#include "log.h"

namespace cairn {
namespace {

// One file per chunk: a 32-byte header (magic, format, block size, version) at 0, one
// 16-byte record per block from RECORDS_AT (little-endian: CRC32C of the whole block, the
// CRC of its content before an unfinished change, flags: bit 0 written, bit 1 that
// previous CRC is valid; 4 bytes reserved), and the data from CHUNK_DATA_OFFSET; the
// file's size is CHUNK_DATA_OFFSET + the chunk's length, and everything never written is
// a hole.
//
// A change of blocks goes: records naming both the new and the old CRC, then the data,
// then the records with the new CRC alone. A crash (kill -9) at any point leaves each
// block matching one of its record's CRCs, so no byte outside the change is lost.
// Format 1 kept the data alone in the file and a sidecar "<hex>.meta" with the header
// and 4-byte CRCs over each block's bytes up to the length; gaps were written as zeros.
constexpr char MAGIC[8] = {'C', 'A', 'I', 'R', 'N', 'C', 'H', 'K'};
constexpr uint32_t FORMAT_1 = 1;
constexpr uint32_t FORMAT = 2;
constexpr uint64_t HEADER_SIZE = 32;
constexpr uint64_t RECORDS_AT = 4096;
constexpr uint64_t RECORD_SIZE = 16;
constexpr uint64_t D = CHUNK_DATA_OFFSET;
static_assert(RECORDS_AT + RECORD_SIZE * ((uint64_t{2} << 30) / CHECKSUM_BLOCK) <= D,
              "the records of a 2 GiB chunk fit before the data");
constexpr uint32_t WRITTEN = 1;
constexpr uint32_t HAS_PREV = 2;
constexpr uint64_t B = CHECKSUM_BLOCK;
constexpr uint64_t PAGE = 4096;  // the smallest hole a file system keeps

uint64_t blocksFor(uint64_t length) { return (length + B - 1) / B; }

std::string hexName(uint64_t handle) { return fmt::format("{:02x}", handle); }

const char* zeros() {
  static const std::string block(B, '\0');
  return block.data();
}

bool allZero(const char* p, size_t n) {
  // Data is rarely zero at its start, so this usually returns after one comparison.
  while (n > 0) {
    size_t k = std::min<size_t>(n, B);
    if (memcmp(p, zeros(), k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

uint32_t blockCrc(const char* p) { return crc32c(0, p, B); }

// The CRC of a block of zeros: what a hole holds.
uint32_t zeroCrc() {
  static const uint32_t crc = blockCrc(zeros());
  return crc;
}

// A piece of a write: `bytes` go to `offset` in the data file.
struct Piece {
  uint64_t offset;
  std::string_view bytes;
};

// Appends `p`, joining it to the last piece when both lie back to back in memory and file.
void addPiece(std::vector<Piece>& pieces, Piece p) {
  if (!pieces.empty()) {
    Piece& last = pieces.back();
    if (last.offset + last.bytes.size() == p.offset &&
        last.bytes.data() + last.bytes.size() == p.bytes.data()) {
      last.bytes = std::string_view(last.bytes.data(), last.bytes.size() + p.bytes.size());
      return;
    }
  }
  pieces.push_back(p);
}

// Appends [start, end) to `ranges`, joining it to the last one when they touch.
void addRange(std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t start, uint64_t end) {
  if (!ranges.empty() && ranges.back().second == start) {
    ranges.back().second = end;
  } else {
    ranges.emplace_back(start, end);
  }
}

}  // namespace

ChunkStore::ChunkStore(Disk& disk, std::vector<std::string> dirs, uint64_t chunkSize,
                       std::optional<uint64_t> reserveBytes)
    : disk(disk), dirs(std::move(dirs)), chunkSize(chunkSize), reserveBytes(reserveBytes) {}

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

uint64_t ChunkStore::reserveOf(size_t, const DiskSpace& space) const {
  if (reserveBytes) return *reserveBytes;
  return std::min<uint64_t>(uint64_t{1} << 30, space.capacityBytes / 50);
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
        if (name.size() > 16 || name.find('.') != std::string::npos) {
          // A conversion that did not finish: the chunk's own file is still there.
          if (name.size() > 8 && name.compare(name.size() - 8, 8, ".convert") == 0) {
            disk.remove(top + "/" + bucket + "/" + name);
          }
          continue;
        }
        uint64_t handle = 0;
        try {
          handle = std::stoull(name, nullptr, 16);
        } catch (...) {
          continue;
        }
        auto entry = std::make_shared<Entry>();
        entry->dir = d;
        std::string path = pathIn(d, handle, "");
        if (disk.size(path + ".meta").ok()) {
          Status cs = convertFormat1(handle, *entry);
          if (!cs.ok()) {
            logWarn("chunk {:x}: cannot convert from format 1: {}; reporting it stale", handle,
                    cs.toString());
            entry->version = 0;
          }
        } else {
          auto size = disk.size(path);
          entry->length = size.ok() && size.value > D ? size.value - D : 0;
          std::string header;
          Status hs = disk.read(path, 0, HEADER_SIZE, header);
          uint32_t format = 0;
          if (hs.ok() && header.size() == HEADER_SIZE && memcmp(header.data(), MAGIC, 8) == 0) {
            memcpy(&format, header.data() + 8, 4);
            uint64_t version;
            memcpy(&version, header.data() + 16, 8);
            entry->version = version;
          }
          if (format != FORMAT) {
            logWarn("chunk {:x}: unreadable header; reporting it stale", handle);
            entry->version = 0;
          }
        }
        std::lock_guard<std::mutex> guard(mutex);
        chunks[handle] = std::move(entry);
      }
    }
  }
  logInfo("{} chunks found in {} data directories", chunks.size(), dirs.size());
  return Status::OK();
}

Status ChunkStore::convertFormat1(uint64_t handle, Entry& e) {
  // Each block is checked against its old CRC and copied into a new file, which then
  // replaces the old two; zero blocks become holes; a block that fails keeps a record
  // that fails too.
  std::string path = pathIn(e.dir, handle, "");
  std::string meta = path + ".meta";
  std::string next = path + ".convert";
  std::string header;
  // Converted already, and stopped before the old sidecar went.
  Status s = disk.read(path, 0, HEADER_SIZE, header);
  uint32_t format = 0;
  if (s.ok() && header.size() == HEADER_SIZE && memcmp(header.data(), MAGIC, 8) == 0) {
    memcpy(&format, header.data() + 8, 4);
  }
  if (format == FORMAT) {
    uint64_t version;
    memcpy(&version, header.data() + 16, 8);
    e.version = version;
    auto size = disk.size(path);
    e.length = size.ok() && size.value > D ? size.value - D : 0;
    return disk.remove(meta);
  }
  s = disk.read(meta, 0, HEADER_SIZE, header);
  if (!s.ok()) return s;
  format = 0;
  if (header.size() == HEADER_SIZE && memcmp(header.data(), MAGIC, 8) == 0) {
    memcpy(&format, header.data() + 8, 4);
    uint64_t version;
    memcpy(&version, header.data() + 16, 8);
    e.version = version;
  }
  if (format != FORMAT_1) return Status::corrupt("unreadable format 1 sidecar");
  auto size = disk.size(path);
  if (!size.ok()) return size.status;
  e.length = size.value;
  uint64_t count = blocksFor(e.length);
  std::string oldCrcs;
  s = disk.read(meta, HEADER_SIZE, 4 * count, oldCrcs);
  if (!s.ok()) return s;
  oldCrcs.resize(4 * count, '\0');
  disk.remove(next);
  s = writeHeaderAt(next, e, true);
  if (s.ok()) s = disk.truncate(next, D + e.length);
  std::vector<Block> blocks(count);
  std::string block;
  for (uint64_t b = 0; s.ok() && b < count; ++b) {
    uint64_t n = std::min<uint64_t>(B, e.length - b * B);
    s = disk.read(path, b * B, n, block);
    if (!s.ok()) break;
    uint32_t expected;
    memcpy(&expected, oldCrcs.data() + 4 * b, 4);
    bool good = block.size() == n && crc32c(0, block.data(), n) == expected;
    block.resize(B, '\0');
    if (good && allZero(block.data(), B)) continue;
    uint32_t crc = blockCrc(block.data());
    blocks[b].crc = good ? crc : ~crc;
    blocks[b].written = true;
    s = disk.write(next, D + b * B, block.data(), n, false);
  }
  if (s.ok()) s = writeRecordsAt(next, 0, blocks);
  if (s.ok()) s = disk.rename(next, path);
  if (!s.ok()) {
    disk.remove(next);
    return s;
  }
  disk.remove(meta);
  logInfo("chunk {:x}: converted from format 1 to {}", handle, FORMAT);
  return Status::OK();
}

std::vector<StoredChunk> ChunkStore::list() {
  std::lock_guard<std::mutex> guard(mutex);
  std::vector<StoredChunk> out;
  for (auto& [handle, e] : chunks) out.push_back({handle, e->version, e->length});
  return out;
}

uint64_t ChunkStore::nextAfter(uint64_t after) {
  std::lock_guard<std::mutex> guard(mutex);
  auto it = chunks.upper_bound(after);
  return it == chunks.end() ? 0 : it->first;
}

size_t ChunkStore::count() {
  std::lock_guard<std::mutex> guard(mutex);
  return chunks.size();
}

bool ChunkStore::has(uint64_t handle) { return find(handle) != nullptr; }

uint64_t ChunkStore::versionOf(uint64_t handle) {
  auto e = find(handle);
  return e == nullptr ? 0 : e->version.load();
}

Status ChunkStore::writeHeader(uint64_t handle, Entry& e, bool create) {
  return writeHeaderAt(pathIn(e.dir, handle, ""), e, create);
}

Status ChunkStore::writeHeaderAt(const std::string& path, Entry& e, bool create) {
  char header[HEADER_SIZE] = {};
  memcpy(header, MAGIC, 8);
  memcpy(header + 8, &FORMAT, 4);
  uint32_t blockSize = CHECKSUM_BLOCK;
  memcpy(header + 12, &blockSize, 4);
  uint64_t version = e.version;
  memcpy(header + 16, &version, 8);
  return disk.write(path, 0, header, HEADER_SIZE, create);
}

std::optional<Status> ChunkStore::readBlocks(Wait wait, uint64_t handle, Entry& e, uint64_t first,
                                             uint64_t count, std::vector<Block>& out) {
  std::string raw;
  auto s = readDisk(wait, pathIn(e.dir, handle, ""), RECORDS_AT + RECORD_SIZE * first,
                    RECORD_SIZE * count, raw);
  if (!s) return std::nullopt;
  if (!s->ok()) return Status::corrupt(fmt::format("chunk {:x}: {}", handle, s->message()));
  raw.resize(RECORD_SIZE * count, '\0');  // records never written are holes
  out.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t flags;
    memcpy(&out[i].crc, raw.data() + RECORD_SIZE * i, 4);
    memcpy(&out[i].prev, raw.data() + RECORD_SIZE * i + 4, 4);
    memcpy(&flags, raw.data() + RECORD_SIZE * i + 8, 4);
    out[i].written = flags & WRITTEN;
    out[i].hasPrev = flags & HAS_PREV;
  }
  return Status::OK();
}

Status ChunkStore::writeBlocks(uint64_t handle, Entry& e, uint64_t first,
                               const std::vector<Block>& blocks) {
  return writeRecordsAt(pathIn(e.dir, handle, ""), first, blocks);
}

Status ChunkStore::writeRecordsAt(const std::string& path, uint64_t first,
                                  const std::vector<Block>& blocks) {
  std::string raw(RECORD_SIZE * blocks.size(), '\0');
  for (size_t i = 0; i < blocks.size(); ++i) {
    uint32_t flags = (blocks[i].written ? WRITTEN : 0) | (blocks[i].hasPrev ? HAS_PREV : 0);
    memcpy(raw.data() + RECORD_SIZE * i, &blocks[i].crc, 4);
    memcpy(raw.data() + RECORD_SIZE * i + 4, &blocks[i].prev, 4);
    memcpy(raw.data() + RECORD_SIZE * i + 8, &flags, 4);
  }
  return disk.write(path, RECORDS_AT + RECORD_SIZE * first, raw.data(), raw.size(), false);
}

Status ChunkStore::create(uint64_t handle, uint64_t version) {
  if (find(handle)) return setVersion(handle, std::max(version, versionOf(handle)));
  size_t best = 0;
  uint64_t bestAvailable = 0;
  for (size_t d = 0; d < dirs.size(); ++d) {
    auto space = disk.space(dirs[d]);
    if (!space.ok()) continue;
    uint64_t reserve = reserveOf(d, space.value);
    uint64_t available = space.value.freeBytes > reserve ? space.value.freeBytes - reserve : 0;
    if (available > bestAvailable) {
      best = d;
      bestAvailable = available;
    }
  }
  if (bestAvailable < RECORDS_AT) {
    return Status::noSpace(
        fmt::format("every data directory is within its reserve; no room for chunk {:x}", handle));
  }
  auto entry = std::make_shared<Entry>();
  entry->dir = best;
  entry->version = version;
  std::string path = pathIn(best, handle, "");
  Status s = disk.makeDirs(path.substr(0, path.rfind('/')));
  if (s.ok()) s = writeHeader(handle, *entry, true);
  if (s.ok()) s = disk.truncate(path, D);  // empty: the data starts there
  if (!s.ok()) {
    disk.remove(path);
    return s;
  }
  std::lock_guard<std::mutex> guard(mutex);
  chunks[handle] = std::move(entry);
  noteChange(handle, version);
  return Status::OK();
}

Status ChunkStore::setVersion(uint64_t handle, uint64_t version) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (version < e->version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, not going back to {}",
                                            handle, e->version.load(), version));
  }
  if (version == e->version) return Status::OK();
  uint64_t old = e->version;
  e->version = version;
  Status s = writeHeader(handle, *e, false);
  if (s.ok()) {
    noteChange(handle, version);
  } else {
    e->version = old;
  }
  return s;
}

std::optional<Status> ChunkStore::forWrittenRuns(Wait wait, uint64_t handle, Entry& e,
                                                 uint64_t first, uint64_t count,
                                                 const Visit& visit) {
  std::vector<Block> blocks;
  auto read = readBlocks(wait, handle, e, first, count, blocks);
  if (!read || !read->ok()) return read;
  std::string path = pathIn(e.dir, handle, "");
  for (uint64_t i = 0; i < count;) {
    if (!blocks[i].written) {
      ++i;
      continue;
    }
    uint64_t j = i;
    while (j < count && blocks[j].written) ++j;
    uint64_t start = (first + i) * B;
    if (start >= e.length) break;  // records past the length are never set; ignore any
    uint64_t stop = std::min((first + j) * B, e.length);
    std::string bytes;
    read = readDisk(wait, path, D + start, stop - start, bytes);
    if (!read || !read->ok()) return read;
    if (bytes.size() != stop - start) {
      return Status::corrupt(fmt::format("chunk {:x}: file shorter than recorded", handle));
    }
    bytes.resize((j - i) * B, '\0');
    for (uint64_t k = i; k < j && (first + k) * B < e.length; ++k) {
      if (!blocks[k].matches(blockCrc(bytes.data() + (k - i) * B))) {
        return Status::corrupt(
            fmt::format("chunk {:x}: checksum mismatch in block {}", handle, first + k));
      }
    }
    Status s = visit(start, bytes);
    if (!s.ok()) return s;
    i = j;
  }
  return Status::OK();
}

Status ChunkStore::read(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
                        std::string& out) {
  return *readIn(Wait::YES, handle, version, offset, length, out);
}

std::optional<Status> ChunkStore::readNow(uint64_t handle, uint64_t version, uint64_t offset,
                                          uint32_t length, std::string& out) {
  return readIn(Wait::NO, handle, version, offset, length, out);
}

std::optional<Status> ChunkStore::readIn(Wait wait, uint64_t handle, uint64_t version,
                                         uint64_t offset, uint32_t length, std::string& out) {
  out.clear();
  std::shared_ptr<Entry> e;
  if (wait == Wait::YES) {
    e = find(handle);
  } else {
    // list() holds the map's lock while it copies every entry.
    std::unique_lock<std::mutex> guard(mutex, std::try_to_lock);
    if (!guard) return std::nullopt;
    auto it = chunks.find(handle);
    if (it != chunks.end()) e = it->second;
  }
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock, std::defer_lock);
  if (wait == Wait::YES) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return std::nullopt;  // a write holds it
  }
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, asked for {}", handle,
                                            e->version.load(), version));
  }
  if (offset >= e->length || length == 0) return Status::OK();
  uint64_t end = std::min<uint64_t>(offset + length, e->length);
  std::string result(end - offset, '\0');  // holes read as zeros
  uint64_t first = offset / B;
  auto s = forWrittenRuns(wait, handle, *e, first, (end - 1) / B - first + 1,
                          [&](uint64_t start, std::string_view bytes) {
                            uint64_t from = std::max(start, offset);
                            uint64_t to = std::min<uint64_t>(start + bytes.size(), end);
                            if (from < to) {
                              memcpy(result.data() + (from - offset), bytes.data() + (from - start),
                                     to - from);
                            }
                            return Status::OK();
                          });
  if (s && s->ok()) out = std::move(result);
  return s;
}

Status ChunkStore::readExtents(uint64_t handle, uint64_t version, uint64_t offset, uint32_t length,
                               std::vector<Extent>& out, uint64_t& chunkLength) {
  out.clear();
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, asked for {}", handle,
                                            e->version.load(), version));
  }
  chunkLength = e->length;
  if (offset >= e->length || length == 0) return Status::OK();
  uint64_t end = std::min<uint64_t>(offset + length, e->length);
  uint64_t first = offset / B;
  return forWrittenRuns(
      handle, *e, first, (end - 1) / B - first + 1, [&](uint64_t start, std::string_view bytes) {
        uint64_t from = std::max(start, offset);
        uint64_t to = std::min<uint64_t>(start + bytes.size(), end);
        if (from < to) {
          out.push_back({from, std::string(bytes.substr(from - start, to - from))});
        }
        return Status::OK();
      });
}

void ChunkStore::resync(uint64_t handle, Entry& e, uint64_t first, uint64_t count) {
  // Whatever part of a failed write reached the disk is now the block's content: the
  // write was not acknowledged, so any of its bytes may show, but no other byte changed
  // and the records must agree with the disk for those bytes to stay readable.
  std::string path = pathIn(e.dir, handle, "");
  std::vector<Block> blocks(count);
  std::string block;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t start = (first + i) * B;
    if (start >= e.length) break;
    if (!disk.read(path, D + start, B, block).ok()) return;
    block.resize(B, '\0');
    if (!allZero(block.data(), B)) {
      blocks[i].crc = blockCrc(block.data());
      blocks[i].written = true;
    }
  }
  writeBlocks(handle, e, first, blocks);
}

Status ChunkStore::applyRange(uint64_t handle, Entry& e, uint64_t offset, uint64_t length,
                              const char* data) {
  uint64_t end = offset + length;
  uint64_t first = offset / B;
  uint64_t count = (end - 1) / B - first + 1;
  std::vector<Block> old;
  Status s = readBlocks(handle, e, first, count, old);
  if (!s.ok()) return s;
  std::string path = pathIn(e.dir, handle, "");
  std::vector<Block> next(count);    // the records once the change is done
  std::vector<Block> during(count);  // while it is made: the new CRC, and the old one
  std::vector<Piece> pieces;
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  std::deque<std::string> merged;  // whole blocks built here, kept until written
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t start = (first + i) * B;
    uint64_t from = std::max(offset, start), to = std::min(end, start + B);
    const char* src = data ? data + (from - offset) : zeros();
    bool whole = from == start && to == start + B;
    std::string block;
    bool rewriteAll = false;
    uint32_t before = zeroCrc();  // the CRC of the block as it is now (a hole: zeros)
    if (!whole || (old[i].written && old[i].hasPrev)) {
      // The block as it is now: for its other bytes, or to learn which of its two CRCs an
      // unfinished earlier change left it at.
      if (start < e.length) {
        s = disk.read(path, D + start, std::min<uint64_t>(B, e.length - start), block);
        if (!s.ok()) return s;
      }
      block.resize(B, '\0');
      if (old[i].written) {
        before = blockCrc(block.data());
        // Merging into a bad block would give its bad bytes a good checksum.
        if (!old[i].matches(before)) {
          return Status::corrupt(
              fmt::format("chunk {:x}: checksum mismatch in block {}", handle, first + i));
        }
      } else if (!allZero(block.data(), B)) {
        // Left by a change made before records came first: not data. The whole block is
        // written (or punched) anew.
        std::fill(block.begin(), block.end(), '\0');
        rewriteAll = true;
      }
    } else if (old[i].written) {
      before = old[i].crc;
    }
    bool zero;
    if (whole) {
      zero = data == nullptr || allZero(src, B);
    } else {
      memcpy(block.data() + (from - start), src, to - from);
      zero = allZero(block.data(), B);
    }
    uint32_t after = zero ? zeroCrc() : blockCrc(whole ? src : block.data());
    during[i] = {after, true, before, true};
    if (zero) {
      next[i] = {};
      if (old[i].written || rewriteAll) addRange(holes, start, start + B);
      continue;
    }
    next[i] = {after, true};
    if (rewriteAll) {
      merged.push_back(std::move(block));
      addPiece(pieces, {start, std::string_view(merged.back().data(), B)});
    } else if (whole && old[i].written) {
      addPiece(pieces, {start, std::string_view(src, B)});
    } else if (whole) {
      // Over a hole, pages of zeros need not be written: they stay holes on disk too.
      for (uint64_t p = 0; p < B; p += PAGE) {
        if (!allZero(src + p, PAGE)) addPiece(pieces, {start + p, std::string_view(src + p, PAGE)});
      }
    } else {
      merged.push_back(std::move(block));
      const std::string& m = merged.back();
      addPiece(pieces, {from, std::string_view(m.data() + (from - start), to - from)});
    }
  }
  // Reserve first, the records too: a full disk then fails the write before any byte
  // changed.
  s = disk.allocate(path, RECORDS_AT + RECORD_SIZE * first, RECORD_SIZE * count);
  for (size_t k = 0; s.ok() && k < pieces.size(); ++k) {
    s = disk.allocate(path, D + pieces[k].offset, pieces[k].bytes.size());
  }
  if (!s.ok()) return s;
  s = writeBlocks(handle, e, first, during);
  if (!s.ok()) return s;
  if (end > e.length) {
    s = disk.truncate(path, D + end);  // a size change alone takes no disk
    if (s.ok()) e.length = end;
  }
  for (size_t k = 0; s.ok() && k < pieces.size(); ++k) {
    const Piece& p = pieces[k];
    // Whole blocks need not stay cached; a part of one is likely merged into soon (an
    // appender's next write), and reading it back from the disk would cost more.
    if (p.offset % B == 0 && p.bytes.size() % B == 0) {
      s = disk.writeUncached(path, D + p.offset, p.bytes.data(), p.bytes.size(), D);
    } else {
      s = disk.write(path, D + p.offset, p.bytes.data(), p.bytes.size(), false);
    }
  }
  for (size_t h = 0; s.ok() && h < holes.size(); ++h) {
    s = disk.punchHole(path, D + holes[h].first, holes[h].second - holes[h].first);
  }
  if (s.ok()) s = writeBlocks(handle, e, first, next);
  if (!s.ok()) {
    logWarn("chunk {:x}: write failed: {}", handle, s.toString());
    resync(handle, e, first, count);
  }
  return s;
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
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, write is for {}", handle,
                                            e->version.load(), version));
  }
  if (data.empty()) return Status::OK();
  return applyRange(handle, *e, offset, data.size(), data.data());
}

Status ChunkStore::extend(uint64_t handle, uint64_t version, uint64_t length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (length > chunkSize) return Status::invalidArgument("extend past the chunk size");
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, extend is for {}", handle,
                                            e->version.load(), version));
  }
  if (length <= e->length) return Status::OK();
  Status s = disk.truncate(pathIn(e->dir, handle, ""), D + length);  // the new part is a hole
  if (s.ok()) e->length = length;
  return s;
}

Result<uint64_t> ChunkStore::lengthOf(uint64_t handle, uint64_t version) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(
        fmt::format("chunk {:x} is at version {}, not {}", handle, e->version.load(), version));
  }
  return e->length;
}

Status ChunkStore::punch(uint64_t handle, uint64_t version, uint64_t offset, uint64_t length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (offset + length > chunkSize || offset + length < offset) {
    return Status::invalidArgument(fmt::format("punch past the end of chunk {:x}", handle));
  }
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, punch is for {}", handle,
                                            e->version.load(), version));
  }
  uint64_t end = std::min(offset + length, e->length);
  if (offset >= end) return Status::OK();  // past the length: a hole already
  return applyRange(handle, *e, offset, end - offset, nullptr);
}

Status ChunkStore::allocate(uint64_t handle, uint64_t version, uint64_t offset, uint64_t length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (offset + length > chunkSize || offset + length < offset) {
    return Status::invalidArgument(fmt::format("allocation past the end of chunk {:x}", handle));
  }
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, allocation is for {}",
                                            handle, e->version.load(), version));
  }
  return disk.allocate(pathIn(e->dir, handle, ""), D + offset, length);
}

Status ChunkStore::truncate(uint64_t handle, uint64_t version, uint64_t length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  if (length > chunkSize) return Status::invalidArgument("truncate past the chunk size");
  std::unique_lock<std::shared_mutex> lock(e->lock);
  if (version < e->version) {
    return Status::staleVersion(
        fmt::format("chunk {:x} is at version {}", handle, e->version.load()));
  }
  std::string path = pathIn(e->dir, handle, "");
  if (length < e->length) {
    // The block that the new end cuts keeps its head: check it, then record it anew. The
    // records of the blocks past the new end go first (they then read as holes), then
    // the cut, as in applyRange().
    uint64_t first = length / B;
    uint64_t count = blocksFor(e->length) - first;
    std::vector<Block> blocks;
    Status s = readBlocks(handle, *e, first, count, blocks);
    if (!s.ok()) return s;
    std::vector<Block> during(count), cut(count);
    if (length % B != 0 && blocks[0].written) {
      std::string head;
      s = disk.read(path, D + first * B, std::min<uint64_t>(B, e->length - first * B), head);
      if (!s.ok()) return s;
      head.resize(B, '\0');
      uint32_t before = blockCrc(head.data());
      if (!blocks[0].matches(before)) {
        return Status::corrupt(
            fmt::format("chunk {:x}: checksum mismatch in block {}", handle, first));
      }
      std::fill(head.begin() + static_cast<long>(length % B), head.end(), '\0');
      uint32_t after = blockCrc(head.data());
      during[0] = {after, true, before, true};
      if (!allZero(head.data(), B)) cut[0] = {after, true};
    }
    s = writeBlocks(handle, *e, first, during);
    if (s.ok()) s = disk.truncate(path, D + length);
    if (!s.ok()) return s;
    e->length = length;
    s = writeBlocks(handle, *e, first, cut);
    if (!s.ok()) return s;
  } else if (length > e->length) {
    Status s = disk.truncate(path, D + length);  // the new part is a hole
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
    noteChange(handle, version);
  }
  return Status::OK();
}

Status ChunkStore::blockMap(uint64_t handle, uint64_t version, std::string& bitmap,
                            uint64_t& length) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  if (e->version != version) {
    return Status::staleVersion(fmt::format("chunk {:x} is at version {}, asked for {}", handle,
                                            e->version.load(), version));
  }
  length = e->length;
  uint64_t count = blocksFor(e->length);
  std::vector<Block> blocks;
  Status s = readBlocks(handle, *e, 0, count, blocks);
  if (!s.ok()) return s;
  bitmap.assign((count + 7) / 8, '\0');
  for (uint64_t b = 0; b < count; ++b) {
    if (blocks[b].written) bitmap[b / 8] = static_cast<char>(bitmap[b / 8] | (1 << (b % 8)));
  }
  return Status::OK();
}

Status ChunkStore::sync(uint64_t handle) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  return disk.sync(pathIn(e->dir, handle, ""));
}

Status ChunkStore::remove(uint64_t handle) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto it = chunks.find(handle);
    if (it == chunks.end()) return Status::notFound(fmt::format("no chunk {:x}", handle));
    entry = std::move(it->second);
    chunks.erase(it);
    noteChange(handle, 0);
  }
  // Wait out readers and writers that found the chunk before it left the map (outside the
  // map's lock, which everyone else's calls take).
  std::unique_lock<std::shared_mutex> lock(entry->lock);
  lock.unlock();
  disk.remove(pathIn(entry->dir, handle, ".meta"));  // of format 1, if unconverted
  return disk.remove(pathIn(entry->dir, handle, ""));
}

void ChunkStore::noteChange(uint64_t handle, uint64_t version) {
  std::lock_guard<std::mutex> guard(changeMutex);
  changes.push_back({++changeCount, handle, version});
  if (changes.size() > MAX_CHANGES) changes.pop_front();
}

uint64_t ChunkStore::lastChange() {
  std::lock_guard<std::mutex> guard(changeMutex);
  return changeCount;
}

bool ChunkStore::changesSince(uint64_t seq, size_t limit, std::vector<Change>& out) {
  std::lock_guard<std::mutex> guard(changeMutex);
  if (seq >= changeCount) return true;
  if (changes.empty() || changes.front().seq > seq + 1) return false;
  // The numbers in the deque run without a gap.
  for (size_t i = seq + 1 - changes.front().seq; i < changes.size() && out.size() < limit; ++i) {
    out.push_back(changes[i]);
  }
  return true;
}

void ChunkStore::trimChanges(uint64_t seq) {
  std::lock_guard<std::mutex> guard(changeMutex);
  while (!changes.empty() && changes.front().seq <= seq) changes.pop_front();
}

Status ChunkStore::verify(uint64_t handle) {
  auto e = find(handle);
  if (e == nullptr) return Status::notFound(fmt::format("no chunk {:x}", handle));
  std::shared_lock<std::shared_mutex> lock(e->lock);
  uint64_t count = blocksFor(e->length);
  for (uint64_t first = 0; first < count; first += 16) {
    Status s = forWrittenRuns(handle, *e, first, std::min<uint64_t>(16, count - first),
                              [](uint64_t, std::string_view) { return Status::OK(); });
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

uint64_t ChunkStore::available() {
  uint64_t total = 0;
  for (size_t d = 0; d < dirs.size(); ++d) {
    auto s = disk.space(dirs[d]);
    if (!s.ok()) continue;
    uint64_t reserve = reserveOf(d, s.value);
    total += s.value.freeBytes > reserve ? s.value.freeBytes - reserve : 0;
  }
  return total;
}

}  // namespace cairn
