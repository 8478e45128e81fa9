#include "address.h"

#include <fmt/format.h>

#include <charconv>

namespace cairn {

std::string HostPort::toString() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Result<HostPort> parseHostPort(std::string_view text) {
  auto bad = [&](const char* why) {
    return Status::invalidArgument(fmt::format("bad address '{}': {}", text, why));
  };
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("expected HOST:PORT");
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return bad("empty host");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return bad("port must be a number from 0 to 65535");
  }
  return HostPort{std::string(host), static_cast<uint16_t>(value)};
}

std::string hostOf(std::string_view address) {
  auto parsed = parseHostPort(address);
  if (!parsed.ok()) return std::string(address);
  return parsed.value.host;
}

}  // namespace cairn
