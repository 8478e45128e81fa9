#pragma once
// Byte sizes as people write and read them.

#include <cstdint>
#include <string>
#include <string_view>

#include "status.h"

namespace cairn {

// "4096", "64K", "1.5G", "2MiB": bytes, with an optional binary suffix (K, M, G, T, with
// or without "iB"/"B"). invalidArgument for anything else.
Result<uint64_t> parseByteSize(std::string_view text);

// "512 B", "1.5 MiB", "3.0 GiB".
std::string humanBytes(double bytes);

}  // namespace cairn
