#pragma once
// What the benchmark programs share: the client options of the cluster they are pointed
// at, from --master and the security flags (as the CLI takes them).

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "client.h"
#include "security.h"

namespace cairn {

// Options for a client of `master`; nullopt (after a message naming `tool`) when the
// credentials do not load.
inline std::optional<ClientOptions> benchClientOptions(const char* tool, const std::string& master,
                                                       const SecurityFlags& flags) {
  auto security = loadSecurity(flags);
  if (!security.ok()) {
    fprintf(stderr, "%s: %s\n", tool, security.status.message().c_str());
    return std::nullopt;
  }
  ClientOptions options;
  options.master = master;
  options.security = security.value;
  if (!security.value.tls) {
    options.defaultCaller =
        Caller{static_cast<uint32_t>(getuid()), {static_cast<uint32_t>(getgid())}};
  }
  return options;
}

}  // namespace cairn
