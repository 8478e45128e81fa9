// `cairn append` and `cairn cat --records`: records (client/record_io.h) written by record
// append and read back without padding or duplicates.

#include <fmt/format.h>
#include <poll.h>

#include <cstring>
#include <set>

#include "commands.h"
#include "record_io.h"

namespace cairn {
namespace {

constexpr size_t APPEND_BATCH = 1 << 20;  // records sent in one append, at most
constexpr size_t READ_BLOCK = 8 << 20;

// The next record of standard input: a line (with its newline), or `size` bytes.
bool nextRecord(FILE* in, size_t size, std::string& out) {
  out.clear();
  if (size == 0) {
    char* line = nullptr;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, in);
    if (n > 0) out.assign(line, static_cast<size_t>(n));
    free(line);
    return n > 0;
  }
  out.resize(size);
  size_t n = fread(out.data(), 1, size, in);
  out.resize(n);
  return n > 0;
}

}  // namespace

int cmdAppend(CliContext& c, const std::string& path, size_t recordSize, FILE* in) {
  auto attr = resolve(c, path);
  if (attr.status.code() == ErrorCode::NOT_FOUND) {
    auto [parentPath, name] = splitParent(path);
    auto parent = resolve(c, parentPath);
    if (!parent.ok()) return fail(c, parentPath, parent.status);
    attr = c.client.create(parent.value.inode, name, 0644, 0, false).wait(c.waitScope);
  }
  if (!attr.ok()) return fail(c, path, attr.status);
  if (attr.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", path));
  uint64_t inode = attr.value.inode;
  uint64_t chunkSize = c.client.ensureChunkSize(inode).wait(c.waitScope);
  if (chunkSize == 0) return fail(c, path, Status::unavailable("the master gave no chunk size"));
  size_t batchLimit = std::min<size_t>(APPEND_BATCH, chunkSize / 4);
  RecordWriter writer;
  std::string batch, payload;
  std::set<uint32_t> chunks;  // appended to: synced before this reports done
  auto send = [&]() -> Status {
    if (batch.empty()) return Status::OK();
    auto at = c.client
                  .append(inode, kj::arrayPtr(reinterpret_cast<const kj::byte*>(batch.data()),
                                              batch.size()))
                  .wait(c.waitScope);
    if (!at.ok()) return at.status;
    chunks.insert(static_cast<uint32_t>(at.value / chunkSize));
    batch.clear();
    return Status::OK();
  };
  // A batch goes when it is full, and as soon as the input has nothing more ready (a slow
  // producer, `tail -f LOG | cairn append`, gets its records in at once).
  auto waiting = [&]() {
    pollfd p{fileno(in), POLLIN, 0};
    return poll(&p, 1, 0) == 0;
  };
  while (true) {
    if (!batch.empty() && waiting()) {
      Status s = send();
      if (!s.ok()) return fail(c, path, s);
    }
    if (!nextRecord(in, recordSize, payload)) break;
    if (RECORD_HEADER + payload.size() > batchLimit) {
      return failText(c, fmt::format("{}: a record of {} bytes is larger than {} (a record with "
                                     "its header is at most a quarter of a chunk, and 1 MiB)",
                                     path, payload.size(), batchLimit - RECORD_HEADER));
    }
    if (batch.size() + RECORD_HEADER + payload.size() > batchLimit) {
      Status s = send();
      if (!s.ok()) return fail(c, path, s);
    }
    writer.frame(payload, batch);
  }
  if (ferror(in)) return failText(c, fmt::format("standard input: {}", strerror(errno)));
  Status s = send();
  if (s.ok() && !chunks.empty()) {
    s = c.client.syncChunks(inode, {chunks.begin(), chunks.end()}).wait(c.waitScope);
  }
  return s.ok() ? 0 : fail(c, path, s);
}

int cmdCatRecords(CliContext& c, const std::string& path) {
  auto attr = resolve(c, path);
  if (!attr.ok()) return fail(c, path, attr.status);
  if (attr.value.type != FileType::REGULAR)
    return failText(c, fmt::format("{}: Is not a regular file", path));
  RecordReader reader;
  std::string buf;
  bool closed = false;
  for (uint64_t off = 0; off < attr.value.size && !closed; off += READ_BLOCK) {
    uint64_t n = std::min<uint64_t>(READ_BLOCK, attr.value.size - off);
    Status s = c.client.read(attr.value.inode, off, n, buf).wait(c.waitScope);
    if (!s.ok()) return fail(c, path, s);
    reader.feed(buf, [&](const Record& r) {
      if (!closed && fwrite(r.payload.data(), 1, r.payload.size(), c.out) != r.payload.size()) {
        closed = true;
      }
    });
    if (buf.size() < n) break;  // the file shrank while we read it
  }
  if (fflush(c.out) != 0 || closed) {
    if (errno == EPIPE) return PIPE_CLOSED;
    return failText(c, fmt::format("{}: write failed: {}", path, strerror(errno)));
  }
  return 0;
}

}  // namespace cairn
