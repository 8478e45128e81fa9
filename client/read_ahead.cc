// FileCache's reads: read-your-writes, then read-ahead in segments for a sequential
// reader (see file_cache.h).

#include <algorithm>

#include "file_cache.h"

namespace cairn {

kj::Promise<Result<std::string>> FileCache::read(uint64_t inode, uint64_t offset, uint32_t size) {
  State& st = state(inode);
  if (idle(st)) return readCached(inode, offset, size);
  // Read-your-writes: what this client wrote goes out first. (A write of it that failed
  // is its writer's to hear of, not this reader's.)
  return flush(inode, true)
      .then([this, inode, offset, size](Status s) -> kj::Promise<Result<std::string>> {
        if (!s.ok()) return Result<std::string>(s);
        return readCached(inode, offset, size);
      });
}

namespace {
constexpr uint64_t SEGMENT_BYTES = 2 << 20;  // one read-ahead fetch, the first window
// Arrived segments kept behind the reader: the kernel's reads of one file may come out of
// order by about its read-ahead.
constexpr uint64_t KEEP_BEHIND = 1 << 20;
}  // namespace

kj::Promise<Result<std::string>> FileCache::readCached(uint64_t inode, uint64_t offset,
                                                       uint32_t size) {
  State& st = state(inode);
  uint64_t end = offset + size;
  if (auto* seg = onItsWay(st, offset, end)) return waitFor(*seg, inode, offset, size);
  if (auto out = fromAhead(st, offset, size)) {
    st.lastReadEnd = end;
    // Segments the reader has left behind go, and the window grows: it keeps up.
    while (!st.ahead.empty() && st.ahead.front().arrived &&
           st.ahead.front().offset + st.ahead.front().length + KEEP_BEHIND <= offset) {
      st.ahead.pop_front();
      st.window = std::min(opts.readAheadBytes, st.window * 2);
    }
    readAhead(inode, st, end);
    return Result<std::string>(std::move(*out));
  }
  uint64_t aheadStart = st.ahead.empty() ? 0 : st.ahead.front().offset;
  uint64_t aheadEnd = st.ahead.empty() ? 0 : st.ahead.back().offset + st.ahead.back().length;
  bool within = !st.ahead.empty() && offset >= aheadStart && offset <= aheadEnd;
  bool sequential = offset == st.lastReadEnd || within;
  st.lastReadEnd = end;
  if (sequential) {
    if (!within) st.ahead.clear();
    st.window = std::min(opts.readAheadBytes, std::max<size_t>(st.window * 2, SEGMENT_BYTES));
    readAhead(inode, st, offset);
    if (auto* seg = onItsWay(st, offset, end)) return waitFor(*seg, inode, offset, size);
  } else {
    st.window = 0;
  }
  // Not to be read ahead (or the segment fell short): a read of its own, which alone may
  // end the reader's view of the file short (see Client::read).
  auto out = kj::heap<std::string>();
  auto& ref = *out;
  return client.read(inode, offset, size, ref, size)
      .then([this, inode, offset, &ref](Status s) -> Result<std::string> {
        if (!s.ok()) return s;
        auto it = files.find(inode);
        if (it != files.end() && offset + ref.size() > it->second.size) {
          it->second.readPastSize = true;
        }
        return std::move(ref);
      })
      .attach(kj::mv(out));
}

kj::Promise<Result<std::string>> FileCache::waitFor(Segment& seg, uint64_t inode, uint64_t offset,
                                                    uint32_t size) {
  // Rather than ask twice. Then as any read: what this client wrote meanwhile goes first.
  return seg.fetched.addBranch().then(
      [this, inode, offset, size]() { return read(inode, offset, size); });
}

FileCache::Segment* FileCache::onItsWay(State& st, uint64_t offset, uint64_t end) {
  for (auto& seg : st.ahead) {
    if (!seg.arrived && seg.offset < end && offset < seg.offset + seg.length) return &seg;
  }
  return nullptr;
}

std::optional<std::string> FileCache::fromAhead(const State& st, uint64_t offset, uint32_t size) {
  uint64_t end = offset + size, pos = offset;
  std::string out;
  for (auto& seg : st.ahead) {
    if (pos == end) break;
    if (seg.offset + seg.length <= pos) continue;
    uint64_t held = seg.offset + seg.bytes.size();
    if (!seg.arrived || pos < seg.offset || pos >= held) return std::nullopt;
    uint64_t to = std::min(end, held);
    if (out.empty()) out.reserve(size);
    out.append(seg.bytes, pos - seg.offset, to - pos);
    pos = to;
  }
  if (pos != end) return std::nullopt;
  return out;
}

void FileCache::readAhead(uint64_t inode, State& st, uint64_t from) {
  // Nothing is fetched ahead of this client's own writes not yet sent: a later write()
  // drops the segments, but these would be fetched from before it.
  if (st.window == 0 || !idle(st)) return;
  uint64_t next = st.ahead.empty() ? from : st.ahead.back().offset + st.ahead.back().length;
  // Past the size this client knows only when reads found bytes there (another client
  // made the file longer); each read is cut at the file's end anyway.
  uint64_t limit = st.readPastSize ? UINT64_MAX : st.size;
  while (next < limit && next + SEGMENT_BYTES <= st.lastReadEnd + st.window) {
    uint64_t length = std::min(SEGMENT_BYTES, limit - next);
    auto out = kj::heap<std::string>();
    auto& ref = *out;
    uint64_t id = ++segments;
    auto fetched = client.read(inode, next, length, ref, 0)
                       .then([this, inode, id, &ref](Status s) {
                         arrived(inode, id, s.ok() ? &ref : nullptr);
                       })
                       .attach(kj::mv(out))
                       .catch_([this, inode, id](kj::Exception&&) { arrived(inode, id, nullptr); })
                       .fork();
    st.ahead.push_back(Segment{id, next, length, kj::mv(fetched), false, {}});
    next += length;
  }
}

void FileCache::arrived(uint64_t inode, uint64_t id, std::string* bytes) {
  // A segment dropped while readers waited for it is gone, or gone stale.
  auto it = files.find(inode);
  if (it == files.end()) return;
  for (auto& seg : it->second.ahead) {
    if (seg.id == id) {
      // A failed read leaves no bytes: the reader's own read reports why.
      if (bytes != nullptr) seg.bytes = std::move(*bytes);
      seg.arrived = true;
      return;
    }
  }
}

}  // namespace cairn
