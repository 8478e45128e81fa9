#pragma once
// Validation of names and paths that arrive from the network or the command line.

#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace cairn {

constexpr size_t MAX_NAME_BYTES = 255;
constexpr size_t MAX_PATH_BYTES = 4096;

// A directory entry name: not empty, not "." or "..", no '/' or NUL, at most 255 bytes.
Status validateName(std::string_view name);

// Splits an absolute path into validated components ("/" gives none). Repeated and
// trailing slashes are allowed; "." and ".." are not.
Result<std::vector<std::string>> splitPath(std::string_view path);

}  // namespace cairn
