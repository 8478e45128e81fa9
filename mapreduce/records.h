#pragma once
// The record format of map output and sorted runs: per record a u32 key length and a u32
// value length (little-endian), then the key and the value bytes.

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace cairn::mapreduce {

void appendRecord(std::string& out, std::string_view key, std::string_view value);
bool writeRecord(FILE* file, std::string_view key, std::string_view value);

// Calls record(key, value) for each whole record at the front of `data`; returns the
// bytes those took (a record cut at the end of `data` is left for the next call).
size_t forEachRecord(std::string_view data,
                     const std::function<void(std::string_view, std::string_view)>& record);

// Reads records from a file one at a time.
class RecordReader {
 public:
  explicit RecordReader(FILE* file) : file(file) {}
  ~RecordReader();
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;
  // False at the end of the file, or when it ends inside a record (then truncated()).
  bool next();
  bool truncated() const { return cut; }
  std::string key, value;

 private:
  FILE* file;
  bool cut = false;
};

}  // namespace cairn::mapreduce
