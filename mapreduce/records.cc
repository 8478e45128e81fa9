#include "records.h"

#include <cstring>

namespace cairn::mapreduce {
namespace {

uint32_t loadU32(const char* p) {
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

void appendRecord(std::string& out, std::string_view key, std::string_view value) {
  uint32_t lengths[2] = {static_cast<uint32_t>(key.size()), static_cast<uint32_t>(value.size())};
  out.append(reinterpret_cast<const char*>(lengths), sizeof(lengths));
  out.append(key);
  out.append(value);
}

bool writeRecord(FILE* f, std::string_view k, std::string_view v) {
  uint32_t lengths[2] = {static_cast<uint32_t>(k.size()), static_cast<uint32_t>(v.size())};
  return fwrite(lengths, sizeof(lengths), 1, f) == 1 &&
         fwrite(k.data(), 1, k.size(), f) == k.size() &&
         fwrite(v.data(), 1, v.size(), f) == v.size();
}

size_t forEachRecord(std::string_view data,
                     const std::function<void(std::string_view, std::string_view)>& record) {
  size_t pos = 0;
  while (data.size() - pos >= 8) {
    uint64_t k = loadU32(data.data() + pos), v = loadU32(data.data() + pos + 4);
    if (data.size() - pos - 8 < k + v) break;
    record(data.substr(pos + 8, k), data.substr(pos + 8 + k, v));
    pos += 8 + k + v;
  }
  return pos;
}

RecordReader::~RecordReader() {
  if (file) fclose(file);
}

bool RecordReader::next() {
  uint32_t lengths[2];
  size_t got = fread(lengths, 1, sizeof(lengths), file);
  if (got != sizeof(lengths)) {
    cut = got != 0;
    return false;
  }
  key.resize(lengths[0]);
  value.resize(lengths[1]);
  if (fread(key.data(), 1, key.size(), file) != key.size() ||
      fread(value.data(), 1, value.size(), file) != value.size()) {
    cut = true;
    return false;
  }
  return true;
}

}  // namespace cairn::mapreduce
