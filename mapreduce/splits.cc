#include "splits.h"

namespace cairn::mapreduce {

Status forEachLine(const ReadAt& read, uint64_t fileSize, uint64_t start, uint64_t end,
                   const std::function<void(uint64_t, std::string_view)>& line,
                   uint64_t blockBytes) {
  end = std::min(end, fileSize);
  if (start >= end) return Status::OK();
  uint64_t pos = start;
  // A line that began before `start` belongs to the previous split: skip to its end.
  if (start > 0) {
    auto before = read(start - 1, 1);
    if (!before.ok()) return before.status;
    if (before.value != "\n") {
      for (;;) {
        if (pos >= fileSize) return Status::OK();
        auto block = read(pos, std::min<uint64_t>(blockBytes, 64 << 10));
        if (!block.ok()) return block.status;
        if (block.value.empty()) return Status::OK();
        size_t nl = block.value.find('\n');
        if (nl != std::string::npos) {
          pos += nl + 1;
          break;
        }
        pos += block.value.size();
      }
    }
  }
  std::string pending;       // the start of a line not yet ended
  uint64_t pendingAt = pos;  // where it starts in the file
  while (pendingAt < end) {
    if (pos >= fileSize) {
      if (!pending.empty()) line(pendingAt, pending);  // a last line with no newline
      return Status::OK();
    }
    // Within the split read whole blocks up to its end; past it, only enough to finish the
    // last line, which usually ends within a few bytes.
    uint64_t want =
        pos < end ? std::min(blockBytes, end - pos) : std::min<uint64_t>(blockBytes, 64 << 10);
    auto block = read(pos, want);
    if (!block.ok()) return block.status;
    if (block.value.empty()) {
      if (!pending.empty()) line(pendingAt, pending);
      return Status::OK();
    }
    std::string_view data = block.value;
    size_t from = 0;
    while (from < data.size()) {
      size_t nl = data.find('\n', from);
      if (nl == std::string_view::npos) {
        pending.append(data.substr(from));
        break;
      }
      pending.append(data.substr(from, nl - from));
      line(pendingAt, pending);
      pending.clear();
      pendingAt = pos + nl + 1;
      from = nl + 1;
      if (pendingAt >= end) return Status::OK();
    }
    pos += data.size();
  }
  return Status::OK();
}

}  // namespace cairn::mapreduce
