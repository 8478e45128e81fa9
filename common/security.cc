#include "security.h"

#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "log.h"

namespace cairn {

void addSecurityFlags(CLI::App& app, SecurityFlags& flags, bool server) {
  app.add_option("--credentials", flags.credentials,
                 "directory with this process's cert.pem, key.pem and the cluster's ca.pem "
                 "(default: $CAIRN_CREDENTIALS)");
  app.add_flag("--insecure", flags.insecure,
               "plaintext, unauthenticated connections: for one trusted host only "
               "(or CAIRN_INSECURE=1)");
  if (!server) return;
  app.add_option("--handshake-timeout", flags.handshakeSeconds,
                 "seconds a new connection has to finish its TLS handshake")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--max-connections-per-peer", flags.maxConnectionsPerPeer,
                 "open connections one peer address may hold; more are closed at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
}

Result<RpcSecurity> loadSecurity(const SecurityFlags& flags) {
  const char* envInsecure = getenv("CAIRN_INSECURE");
  bool insecure = flags.insecure || (envInsecure != nullptr && std::string(envInsecure) == "1");
  std::string dir = flags.credentials;
  if (dir.empty()) {
    if (const char* env = getenv("CAIRN_CREDENTIALS")) dir = env;
  }
  RpcSecurity security;
  security.handshakeTimeout =
      static_cast<int64_t>(flags.handshakeSeconds * 1000) * kj::MILLISECONDS;
  security.maxConnectionsPerPeer = flags.maxConnectionsPerPeer;
  if (insecure) {
    logWarn(
        "running INSECURE: plaintext connections, no authentication, no authorization of "
        "peers; use only on one trusted host");
    return security;
  }
  if (dir.empty()) {
    return Status::invalidArgument(
        "no credentials: pass --credentials DIR or set CAIRN_CREDENTIALS (see `cairn admin "
        "cert issue`), or --insecure for plaintext on one trusted host");
  }
  auto tls = TlsCredentials::load(dir);
  if (!tls.ok())
    return Status::invalidArgument(fmt::format("credentials in {}: {}", dir, tls.status.message()));
  security.tls = std::shared_ptr<TlsCredentials>(std::move(tls.value));
  return security;
}

void captureSighup() { kj::UnixEventPort::captureSignal(SIGHUP); }

kj::Promise<void> reloadOnSighup(kj::UnixEventPort& port, std::shared_ptr<TlsCredentials> tls) {
  return port.onSignal(SIGHUP).then([&port, tls](siginfo_t) {
    if (tls) {
      Status s = tls->reload();
      if (s.ok()) {
        logInfo("SIGHUP: credentials in {} reloaded", tls->directory());
      } else {
        logError("SIGHUP: credentials not reloaded, the old ones stay: {}", s.message());
      }
    }
    return reloadOnSighup(port, tls);
  });
}

}  // namespace cairn
