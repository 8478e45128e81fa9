#pragma once
// TLS 1.3 with client certificates on every connection, over OpenSSL (wrapped only here and
// in certs.cc), and the identities certificates carry. Every certificate of a cluster is
// issued by its CA and names a role and a name; those of users name a uid and groups, and
// those of mounts whether root on them is root. A peer is known by its certificate only.
//
// kj-tls (kj/compat/tls.h) is not used: at 0.9.2 it cannot require TLS 1.3, tells a server
// only its peer's common name (not the role, uid and groups), and moves every byte through
// 8 KiB readiness buffers.

#include <kj/async-io.h>
#include <kj/timer.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace cairn {

enum class Role : uint8_t { NONE = 0, MASTER, CHUNKSERVER, MOUNT, WORKER, ADMIN, USER };

// "master", "chunkserver", "mount", "worker", "admin", "user" ("none" for NONE).
const char* roleName(Role role);
std::optional<Role> parseRole(std::string_view name);

constexpr uint32_t NOBODY = 65534;

// Who is at the other end of a connection.
struct Identity {
  Role role = Role::NONE;
  std::string name;
  uint32_t uid = NOBODY;       // users and admins (admins are root)
  std::vector<uint32_t> gids;  // the first is the primary group
  bool allowRoot = false;      // mounts and workers: root on them is root, not nobody
  bool authenticated = false;  // by a certificate of the cluster (false: --insecure)

  // What a certificate carries beyond its role and name, as the URI in its subject
  // alternative names: "urn:cairn:role=user&name=alice&uid=1000&gids=1000+27&root=0"
  // (no commas: OpenSSL's configuration syntax splits names at them)..
  std::string toUri() const;
  static Result<Identity> fromUri(std::string_view uri);
};

// A stream after its handshake, and the peer it authenticated.
struct SecureStream {
  kj::Own<kj::AsyncIoStream> stream;
  Identity peer;
};

// This process's credentials: a directory holding cert.pem, key.pem (mode 0600) and the
// cluster CA's ca.pem. Thread-safe; used from event loops.
class TlsCredentials {
 public:
  static Result<std::unique_ptr<TlsCredentials>> load(const std::string& dir);
  ~TlsCredentials();

  // Reads the directory again (on SIGHUP): new connections present the new certificate;
  // those already made go on. On failure the old credentials stay.
  Status reload();
  Identity self() const;
  const std::string& directory() const { return dir; }

  // The server's side of a handshake. Fails (DISCONNECTED) for a peer without a valid,
  // unexpired certificate from the cluster's CA, or when it does not finish in `timeout`.
  // Web pages (`requireClientCertificate` false) ask for no client certificate; their
  // peer is anonymous.
  kj::Promise<SecureStream> accept(kj::Own<kj::AsyncIoStream> stream, kj::Timer& timer,
                                   kj::Duration timeout, bool requireClientCertificate = true);
  // The client's side: the server's certificate must be the cluster's, be valid for `host`
  // (an address or a name in its subject alternative names) and, unless `role` is NONE,
  // name that role.
  kj::Promise<SecureStream> connect(kj::Own<kj::AsyncIoStream> stream, const std::string& host,
                                    Role role, kj::Timer& timer, kj::Duration timeout);

 private:
  explicit TlsCredentials(std::string dir) : dir(std::move(dir)) {}
  std::shared_ptr<ssl_ctx_st> context() const;
  std::string dir;
  mutable std::mutex mutex;  // guards ctx and me
  std::shared_ptr<ssl_ctx_st> ctx;
  Identity me;
};

}  // namespace cairn
