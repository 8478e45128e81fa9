#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "status.h"

namespace cairn {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string toString() const;
};

// Parses "HOST:PORT" (PORT 0..65535; "[v6]:PORT" allowed). Errors name the input.
Result<HostPort> parseHostPort(std::string_view text);

// The host part of "HOST:PORT", or the text itself when it has no port.
std::string hostOf(std::string_view address);

}  // namespace cairn
