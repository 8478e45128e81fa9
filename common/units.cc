#include "units.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace cairn {

Result<uint64_t> parseByteSize(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  double value = s.empty() ? -1 : strtod(s.c_str(), &end);
  if (s.empty() || end == s.c_str() || errno != 0 || !(value >= 0)) {
    return Status::invalidArgument(fmt::format("'{}' is not a size in bytes", text));
  }
  std::string unit(end);
  for (auto& c : unit) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  if (unit.size() == 3 && unit.compare(1, 2, "IB") == 0) unit.resize(1);  // KiB
  if (unit.size() == 2 && unit[1] == 'B') unit.resize(1);                 // KB
  if (unit == "B") unit.clear();
  double scale = 1;
  if (unit == "K") {
    scale = 1024.0;
  } else if (unit == "M") {
    scale = 1024.0 * 1024;
  } else if (unit == "G") {
    scale = 1024.0 * 1024 * 1024;
  } else if (unit == "T") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else if (!unit.empty()) {
    return Status::invalidArgument(fmt::format("'{}': unknown unit '{}'", text, end));
  }
  double bytes = std::floor(value * scale);
  if (bytes > 1.8e19) return Status::invalidArgument(fmt::format("'{}' is too large", text));
  return static_cast<uint64_t>(bytes);
}

std::string humanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u])
                : fmt::format("{:.1f} {}", bytes, units[u]);
}

}  // namespace cairn
