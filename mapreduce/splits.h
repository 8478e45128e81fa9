#pragma once
// Input splits for MapReduce: one per chunk of each input file. A line belongs to the split
// in which it starts; a split's last line runs on into the next chunks until its newline
// (or the end of the file). Nothing is counted twice or lost, including a last line with no
// newline, an empty file, and a line longer than a chunk.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "status.h"

namespace cairn::mapreduce {

// Reads up to `length` bytes at `offset` of the input (fewer at its end). A failure stops
// the split.
using ReadAt = std::function<Result<std::string>(uint64_t offset, uint64_t length)>;

// Calls `line(offset, text)` for every line that starts in [start, end) of a file of
// `fileSize` bytes, `text` without its newline. Reads `blockBytes` at a time.
Status forEachLine(const ReadAt& read, uint64_t fileSize, uint64_t start, uint64_t end,
                   const std::function<void(uint64_t, std::string_view)>& line,
                   uint64_t blockBytes = 1 << 20);

}  // namespace cairn::mapreduce
