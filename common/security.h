#pragma once
// How a process finds its credentials: `--credentials DIR`, else $CAIRN_CREDENTIALS (a
// directory holding cert.pem, key.pem and the cluster's ca.pem). `--insecure` (or
// CAIRN_INSECURE=1) runs plaintext, for one trusted host, and says so in the log. Every
// tool and daemon reads them the same way.

#include <kj/async-unix.h>

#include <string>

#include "rpc.h"
#include "status.h"

namespace CLI {
class App;
}

namespace cairn {

struct SecurityFlags {
  std::string credentials;
  bool insecure = false;
  double handshakeSeconds = 10;  // servers: a connection must finish its handshake in this
  size_t maxConnectionsPerPeer = 512;
};

// --credentials and --insecure; for daemons that serve (`server`), also the handshake
// timeout and the connections one peer address may hold.
void addSecurityFlags(CLI::App& app, SecurityFlags& flags, bool server = false);

// The security every connection of this process uses; invalidArgument when there are no
// credentials and plaintext was not asked for, or they cannot be loaded.
Result<RpcSecurity> loadSecurity(const SecurityFlags& flags);

// Call first thing in main() of a daemon (before threads): SIGHUP is then delivered to
// reloadOnSighup() instead of ending the process.
void captureSighup();
// Reloads the certificate and key on every SIGHUP; new connections use them, open ones go
// on. A bad file is logged and the old credentials stay.
kj::Promise<void> reloadOnSighup(kj::UnixEventPort& port, std::shared_ptr<TlsCredentials> tls);

}  // namespace cairn
