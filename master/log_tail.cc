#include "log_tail.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "crc32c.h"

namespace cairn {

namespace {

// LevelDB's log format (doc/log_format.md): 32 KiB blocks of records, each a 7-byte header
// (masked CRC32C of type and payload, payload length, type) and its payload. A block's
// last bytes, too few for a header, are zero; so is space preallocated and never written.
constexpr size_t BLOCK = 32768;
constexpr size_t HEADER = 7;
enum RecordType : uint8_t { ZERO = 0, FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4 };

uint32_t unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

// The size of the whole, intact record at `pos`, if there is one.
std::optional<size_t> recordAt(std::string_view log, size_t pos) {
  size_t blockEnd = std::min(log.size(), (pos / BLOCK + 1) * BLOCK);
  if (pos + HEADER > blockEnd) return std::nullopt;
  auto byte = [&](size_t i) { return static_cast<uint8_t>(log[pos + i]); };
  uint32_t crc = byte(0) | byte(1) << 8 | byte(2) << 16 | static_cast<uint32_t>(byte(3)) << 24;
  size_t length = byte(4) | byte(5) << 8;
  uint8_t type = byte(6);
  if (type == ZERO || type > LAST || pos + HEADER + length > blockEnd) return std::nullopt;
  uint32_t actual = crc32c(crc32c(0, &type, 1), log.data() + pos + HEADER, length);
  if (actual != unmask(crc)) return std::nullopt;
  return HEADER + length;
}

bool zeroHeader(std::string_view log, size_t pos) {
  return pos + HEADER <= log.size() &&
         log.substr(pos + 4, 3) == std::string_view("\0\0\0", 3);  // length 0, type ZERO
}

Status readAll(leveldb::Env& env, const std::string& path, std::string& out) {
  uint64_t size = 0;
  leveldb::Status s = env.GetFileSize(path, &size);
  leveldb::SequentialFile* raw = nullptr;
  if (s.ok()) s = env.NewSequentialFile(path, &raw);
  if (!s.ok()) return Status::ioError(fmt::format("{}: {}", path, s.ToString()));
  std::unique_ptr<leveldb::SequentialFile> in(raw);
  out.resize(size);
  size_t got = 0;
  while (got < size) {
    leveldb::Slice chunk;
    s = in->Read(size - got, &chunk, out.data() + got);
    if (!s.ok()) return Status::ioError(fmt::format("{}: {}", path, s.ToString()));
    if (chunk.empty()) break;
    if (chunk.data() != out.data() + got) std::copy_n(chunk.data(), chunk.size(), out.data() + got);
    got += chunk.size();
  }
  out.resize(got);
  return Status::OK();
}

Status writeSynced(leveldb::Env& env, const std::string& path, std::string_view bytes) {
  leveldb::WritableFile* raw = nullptr;
  leveldb::Status s = env.NewWritableFile(path, &raw);
  std::unique_ptr<leveldb::WritableFile> out(raw);
  if (s.ok()) s = out->Append(leveldb::Slice(bytes.data(), bytes.size()));
  if (s.ok()) s = out->Sync();
  if (s.ok()) s = out->Close();
  if (!s.ok()) return Status::ioError(fmt::format("{}: {}", path, s.ToString()));
  return Status::OK();
}

// Where the log stops being readable, and the end of its last whole record before that.
struct Scan {
  size_t badAt = 0;
  size_t wholeEnd = 0;
};

Scan scan(std::string_view log) {
  Scan out;
  size_t pos = 0;
  while (pos < log.size()) {
    size_t blockEnd = std::min(log.size(), (pos / BLOCK + 1) * BLOCK);
    if (blockEnd - pos < HEADER || zeroHeader(log, pos)) {
      pos = blockEnd;  // a block's zero trailer, or preallocated space: LevelDB skips it too
      continue;
    }
    auto n = recordAt(log, pos);
    if (!n) break;
    uint8_t type = static_cast<uint8_t>(log[pos + 6]);
    pos += *n;
    if (type == FULL || type == LAST) out.wholeEnd = pos;
  }
  out.badAt = pos;
  return out;
}

}  // namespace

Status cutTornLogTails(leveldb::Env& env, const std::string& dir, std::vector<TornTail>& cut) {
  std::vector<std::string> children;
  leveldb::Status listed = env.GetChildren(dir, &children);
  if (!listed.ok()) return Status::ioError(listed.ToString());
  // LevelDB's logs by number: only the newest can end in unsynced writes (the store syncs
  // an older one as LevelDB lets it go: SyncOnCloseEnv).
  std::vector<std::pair<uint64_t, std::string>> logs;
  for (auto& name : children) {
    if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".log") != 0) continue;
    logs.emplace_back(std::strtoull(name.c_str(), nullptr, 10), name);
  }
  std::sort(logs.begin(), logs.end());
  for (size_t i = 0; i < logs.size(); ++i) {
    std::string path = dir + "/" + logs[i].second;
    std::string log;
    Status read = readAll(env, path, log);
    if (!read.ok()) return read;
    Scan found = scan(log);
    if (found.badAt >= log.size()) continue;  // readable to its end
    if (i + 1 < logs.size()) {
      return Status::ioError(fmt::format(
          "metadata log {} is damaged at byte {} of {}, and a newer log follows it: not a torn "
          "write, so the master does not start over it",
          path, found.badAt, log.size()));
    }
    // A torn write ends the log: no intact record starts anywhere after the bad one.
    for (size_t at = found.badAt + 1; at < log.size(); ++at) {
      if (recordAt(log, at)) {
        return Status(ErrorCode::IO_ERROR,
                      fmt::format("metadata log {} is damaged at byte {} of {} with intact "
                                  "records after: not a torn write, so the master does not "
                                  "start over it",
                                  path, found.badAt, log.size()));
      }
    }
    std::string_view bytes(log);
    Status saved = writeSynced(env, path + ".torn", bytes.substr(found.wholeEnd));
    if (saved.ok()) saved = writeSynced(env, path + ".cut", bytes.substr(0, found.wholeEnd));
    if (!saved.ok()) return saved;
    leveldb::Status renamed = env.RenameFile(path + ".cut", path);
    if (!renamed.ok()) return Status::ioError(renamed.ToString());
    cut.push_back({path, found.wholeEnd, log.size() - found.wholeEnd});
  }
  return Status::OK();
}

}  // namespace cairn
