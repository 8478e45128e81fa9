#include "names.h"

#include <fmt/format.h>

namespace cairn {

Status validateName(std::string_view name) {
  if (name.empty()) return Status::invalidArgument("empty name");
  if (name.size() > MAX_NAME_BYTES) {
    return Status::nameTooLong(
        fmt::format("name of {} bytes (at most {})", name.size(), MAX_NAME_BYTES));
  }
  if (name == "." || name == "..") {
    return Status::invalidArgument(fmt::format("'{}' is not a valid name", name));
  }
  if (name.find('/') != std::string_view::npos) {
    return Status::invalidArgument("name contains '/'");
  }
  if (name.find('\0') != std::string_view::npos) {
    return Status::invalidArgument("name contains NUL");
  }
  return Status::OK();
}

Result<std::vector<std::string>> splitPath(std::string_view path) {
  if (path.size() > MAX_PATH_BYTES) return Status::nameTooLong("path longer than 4096 bytes");
  if (path.empty() || path[0] != '/') {
    return Status::invalidArgument(fmt::format("'{}' is not an absolute path", path));
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) {
      std::string_view part = path.substr(i, j - i);
      Status s = validateName(part);
      if (!s.ok()) return Status(s.code(), fmt::format("{} in path '{}'", s.message(), path));
      parts.emplace_back(part);
    }
    i = j;
  }
  return parts;
}

}  // namespace cairn
