#include "tls.h"

#include <fmt/format.h>
#include <kj/debug.h>
#include <kj/vector.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <climits>
#include <fstream>
#include <sstream>

#include "forwarding_stream.h"

namespace cairn {
namespace {

constexpr size_t READ_CHUNK = 256 * 1024;  // ciphertext read from the socket at once

std::string opensslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Result<std::string> readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::notFound(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The identity a certificate of the cluster carries: its role and name, and the rest from
// the URI in its subject alternative names.
Result<Identity> identityOf(X509* cert) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return Status::invalidArgument("certificate without a cairn identity");
  Result<Identity> found = Status::invalidArgument("certificate without a cairn identity");
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    auto* s = n->d.uniformResourceIdentifier;
    std::string_view uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<size_t>(ASN1_STRING_length(s)));
    if (uri.rfind("urn:cairn:", 0) == 0) {
      found = Identity::fromUri(uri);
      break;
    }
  }
  GENERAL_NAMES_free(names);
  if (found.ok()) found.value.authenticated = true;
  return found;
}

// What OpenSSL reads ciphertext from and writes it to: the stream's own buffers, so that
// no byte is copied through a memory BIO on its way.
struct Ciphertext {
  kj::Array<kj::byte> in;  // read from the socket; [inStart, inEnd) not yet taken by OpenSSL
  size_t inStart = 0, inEnd = 0;
  std::string out;  // written by OpenSSL, not yet handed to the socket
};

BIO_METHOD* ciphertextMethod() {
  static BIO_METHOD* method = []() {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cairn ciphertext");
    BIO_meth_set_create(m, [](BIO* b) {
      BIO_set_init(b, 1);
      return 1;
    });
    BIO_meth_set_write(m, [](BIO* b, const char* data, int length) {
      static_cast<Ciphertext*>(BIO_get_data(b))->out.append(data, static_cast<size_t>(length));
      return length;
    });
    BIO_meth_set_read(m, [](BIO* b, char* data, int length) {
      auto* c = static_cast<Ciphertext*>(BIO_get_data(b));
      BIO_clear_retry_flags(b);
      size_t n = std::min(c->inEnd - c->inStart, static_cast<size_t>(length));
      if (n == 0) {
        BIO_set_retry_read(b);  // "more to come", not the end of the stream
        return -1;
      }
      memcpy(data, c->in.begin() + c->inStart, n);
      c->inStart += n;
      return static_cast<int>(n);
    });
    BIO_meth_set_ctrl(m, [](BIO*, int cmd, long, void*) -> long { return cmd == BIO_CTRL_FLUSH; });
    return m;
  }();
  return method;
}

// A TLS connection over another stream. OpenSSL reads and writes the stream's buffers
// (Ciphertext); this class moves them to and from the stream in large pieces. One read at
// a time (as Cap'n Proto does); writes, including those a read makes (TLS's own
// messages), go out in order through one queue.
class TlsStream final : public ForwardingStream {
 public:
  TlsStream(kj::Own<kj::AsyncIoStream> inner, std::shared_ptr<ssl_ctx_st> context)
      : ForwardingStream(kj::mv(inner)), context(std::move(context)) {
    cipher.in = kj::heapArray<kj::byte>(READ_CHUNK);
    ssl = SSL_new(this->context.get());
    KJ_REQUIRE(ssl != nullptr, opensslErrors());
    BIO* bio = BIO_new(ciphertextMethod());
    KJ_REQUIRE(bio != nullptr, opensslErrors());
    BIO_set_data(bio, &cipher);
    SSL_set_bio(ssl, bio, bio);  // the SSL owns it now
  }
  ~TlsStream() noexcept(false) { SSL_free(ssl); }

  // Without `requireClientCertificate` (web pages), none is asked for and the peer is
  // anonymous (not authenticated).
  kj::Promise<Identity> handshakeAsServer(bool requireClientCertificate) {
    SSL_set_accept_state(ssl);
    if (!requireClientCertificate) {
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      return handshake().then([]() { return Identity{}; });
    }
    return handshake().then([this]() { return peerIdentity(); });
  }

  kj::Promise<Identity> handshakeAsClient(const std::string& host) {
    SSL_set_connect_state(ssl);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    // An address is checked against the IP names of the certificate, a name against its DNS
    // names.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
      KJ_REQUIRE(X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) == 1,
                 opensslErrors());
      SSL_set_tlsext_host_name(ssl, host.c_str());
    }
    return handshake().then([this]() { return peerIdentity(); });
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return readLoop(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0);
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    encrypt(kj::arrayPtr(static_cast<const kj::byte*>(buffer), size));
    return flush();
  }

  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    // Small pieces (message headers) go into one record with what follows them.
    kj::Vector<kj::byte> pending;
    for (auto& piece : pieces) {
      if (piece.size() < 4096) {
        pending.addAll(piece);
        continue;
      }
      if (!pending.empty()) {
        encrypt(pending.asPtr());
        pending.clear();
      }
      encrypt(piece);
    }
    if (!pending.empty()) encrypt(pending.asPtr());
    return flush();
  }

  void shutdownWrite() override {
    SSL_shutdown(ssl);
    shutdownTask = flush().then([this]() { inner->shutdownWrite(); }).eagerlyEvaluate(nullptr);
  }

 private:
  kj::Promise<void> handshake() {
    int r = SSL_do_handshake(ssl);
    if (r == 1) return flush();
    int err = SSL_get_error(ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
      return flush().then([this]() { return fill(); }).then([this](bool more) {
        if (!more)
          return kj::Promise<void>(
              KJ_EXCEPTION(DISCONNECTED, "peer left during the TLS handshake"));
        return handshake();
      });
    }
    std::string why = opensslErrors();
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) why += fmt::format(" ({})", X509_verify_cert_error_string(verify));
    // Tell the peer why (the alert is in the write BIO), then fail.
    return flush().then(
        [why]() -> kj::Promise<void> {
          return KJ_EXCEPTION(DISCONNECTED, "TLS handshake failed", why);
        },
        [why](kj::Exception&&) -> kj::Promise<void> {
          return KJ_EXCEPTION(DISCONNECTED, "TLS handshake failed", why);
        });
  }

  Identity peerIdentity() {
    X509* cert = SSL_get_peer_certificate(ssl);
    KJ_REQUIRE(cert != nullptr, "the TLS peer presented no certificate");
    KJ_DEFER(X509_free(cert));
    KJ_REQUIRE(SSL_get_verify_result(ssl) == X509_V_OK,
               "the TLS peer's certificate is not trusted");
    auto id = identityOf(cert);
    if (!id.ok()) KJ_FAIL_REQUIRE("bad peer certificate", id.status.toString());
    return id.value;
  }

  // Reads more ciphertext for OpenSSL (which has taken all there was); false at the end of
  // the stream.
  kj::Promise<bool> fill() {
    return inner->tryRead(cipher.in.begin(), 1, cipher.in.size()).then([this](size_t n) {
      cipher.inStart = 0;
      cipher.inEnd = n;
      return n > 0;
    });
  }

  kj::Promise<size_t> readLoop(kj::byte* out, size_t minBytes, size_t maxBytes, size_t done) {
    for (;;) {
      if (done >= minBytes && done > 0) return done;
      if (maxBytes == done) return done;
      int want = static_cast<int>(std::min<size_t>(maxBytes - done, INT_MAX));
      int n = SSL_read(ssl, out + done, want);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      int err = SSL_get_error(ssl, n);
      if (err == SSL_ERROR_ZERO_RETURN) return done;  // the peer closed the TLS session
      if (err != SSL_ERROR_WANT_READ) {
        return KJ_EXCEPTION(DISCONNECTED, "TLS read failed", opensslErrors());
      }
      // Whatever a read made OpenSSL say (a key update) goes out too.
      auto sent = !cipher.out.empty() ? flush() : kj::Promise<void>(kj::READY_NOW);
      return sent.then([this]() { return fill(); })
          .then([this, out, minBytes, maxBytes, done](bool more) -> kj::Promise<size_t> {
            if (!more) return done;  // the connection ended
            return readLoop(out, minBytes, maxBytes, done);
          });
    }
  }

  void encrypt(kj::ArrayPtr<const kj::byte> bytes) {
    // Room for the records at once (22 bytes of header and tag per 16 KiB record).
    cipher.out.reserve(cipher.out.size() + bytes.size() + (bytes.size() / 16384 + 1) * 32);
    while (bytes.size() > 0) {
      int n =
          SSL_write(ssl, bytes.begin(), static_cast<int>(std::min<size_t>(bytes.size(), INT_MAX)));
      KJ_REQUIRE(n > 0, "TLS write failed", opensslErrors());
      bytes = bytes.slice(static_cast<size_t>(n), bytes.size());
    }
  }

  // Sends what OpenSSL wrote, after whatever was queued before.
  kj::Promise<void> flush() {
    if (!cipher.out.empty()) {
      auto bytes = kj::heap<std::string>();
      bytes->swap(cipher.out);
      auto previous = kj::mv(writeTail);
      auto sent = previous
                      .then([this, bytes = kj::mv(bytes)]() mutable {
                        auto& ref = *bytes;
                        return inner->write(ref.data(), ref.size()).attach(kj::mv(bytes));
                      })
                      .fork();
      writeTail = sent.addBranch();
      return sent.addBranch();
    }
    auto done = writeTail.fork();
    writeTail = done.addBranch();
    return done.addBranch();
  }

  std::shared_ptr<ssl_ctx_st> context;  // kept for as long as the connection lives
  SSL* ssl = nullptr;
  Ciphertext cipher;
  kj::Promise<void> writeTail = kj::READY_NOW;
  kj::Maybe<kj::Promise<void>> shutdownTask;
};

struct CtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

Result<std::shared_ptr<SSL_CTX>> makeContext(const std::string& dir, Identity& me) {
  auto cert = readText(dir + "/cert.pem");
  auto key = readText(dir + "/key.pem");
  auto ca = readText(dir + "/ca.pem");
  for (auto* r : {&cert, &key, &ca}) {
    if (!r->ok()) return r->status;
  }
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()), CtxDeleter());
  if (!ctx) return Status::invalidArgument(opensslErrors());
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(c, 0);  // no session tickets: nothing is said after the handshake
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  // AES-128-GCM first: safe, and the fastest with AES-NI.
  SSL_CTX_set_ciphersuites(
      c, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // The certificate and key, and the only CA trusted: the cluster's.
  BIO* certBio = BIO_new_mem_buf(cert.value.data(), static_cast<int>(cert.value.size()));
  X509* x = PEM_read_bio_X509(certBio, nullptr, nullptr, nullptr);
  BIO_free(certBio);
  if (x == nullptr)
    return Status::invalidArgument(fmt::format("{}/cert.pem: {}", dir, opensslErrors()));
  KJ_DEFER(X509_free(x));
  BIO* keyBio = BIO_new_mem_buf(key.value.data(), static_cast<int>(key.value.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(keyBio, nullptr, nullptr, nullptr);
  BIO_free(keyBio);
  if (pkey == nullptr)
    return Status::invalidArgument(fmt::format("{}/key.pem: {}", dir, opensslErrors()));
  KJ_DEFER(EVP_PKEY_free(pkey));
  if (SSL_CTX_use_certificate(c, x) != 1 || SSL_CTX_use_PrivateKey(c, pkey) != 1 ||
      SSL_CTX_check_private_key(c) != 1) {
    return Status::invalidArgument(
        fmt::format("{}: the key does not match the certificate: {}", dir, opensslErrors()));
  }
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  BIO* caBio = BIO_new_mem_buf(ca.value.data(), static_cast<int>(ca.value.size()));
  int cas = 0;
  while (X509* caCert = PEM_read_bio_X509(caBio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, caCert);
    X509_free(caCert);
    ++cas;
  }
  ERR_clear_error();  // the end of the PEM stream is reported as an error
  BIO_free(caBio);
  if (cas == 0) return Status::invalidArgument(fmt::format("{}/ca.pem holds no certificate", dir));
  auto id = identityOf(x);
  if (!id.ok())
    return Status::invalidArgument(fmt::format("{}/cert.pem: {}", dir, id.status.message()));
  me = id.value;
  return ctx;
}

}  // namespace

const char* roleName(Role role) {
  switch (role) {
    case Role::NONE:
      return "none";
    case Role::MASTER:
      return "master";
    case Role::CHUNKSERVER:
      return "chunkserver";
    case Role::MOUNT:
      return "mount";
    case Role::WORKER:
      return "worker";
    case Role::ADMIN:
      return "admin";
    case Role::USER:
      return "user";
  }
  return "none";
}

std::optional<Role> parseRole(std::string_view name) {
  for (Role r :
       {Role::MASTER, Role::CHUNKSERVER, Role::MOUNT, Role::WORKER, Role::ADMIN, Role::USER}) {
    if (name == roleName(r)) return r;
  }
  return std::nullopt;
}

std::string Identity::toUri() const {
  std::string gidList;
  for (uint32_t g : gids) gidList += (gidList.empty() ? "" : "+") + std::to_string(g);
  return fmt::format("urn:cairn:role={}&name={}&uid={}&gids={}&root={}", roleName(role), name, uid,
                     gidList, allowRoot ? 1 : 0);
}

Result<Identity> Identity::fromUri(std::string_view uri) {
  constexpr std::string_view PREFIX = "urn:cairn:";
  if (uri.rfind(PREFIX, 0) != 0 || uri.size() > 4096) {
    return Status::invalidArgument("not a cairn identity");
  }
  Identity id;
  bool haveRole = false;
  std::string_view rest = uri.substr(PREFIX.size());
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view field = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    size_t eq = field.find('=');
    if (eq == std::string_view::npos) return Status::invalidArgument("bad identity field");
    std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    auto number = [](std::string_view v) -> std::optional<uint32_t> {
      if (v.empty() || v.size() > 10) return std::nullopt;
      uint64_t n = 0;
      for (char c : v) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<uint64_t>(c - '0');
      }
      if (n > UINT32_MAX) return std::nullopt;
      return static_cast<uint32_t>(n);
    };
    if (key == "role") {
      auto r = parseRole(value);
      if (!r) return Status::invalidArgument("unknown role");
      id.role = *r;
      haveRole = true;
    } else if (key == "name") {
      id.name = std::string(value);
    } else if (key == "uid") {
      auto n = number(value);
      if (!n) return Status::invalidArgument("bad uid");
      id.uid = *n;
    } else if (key == "gids") {
      while (!value.empty()) {
        size_t comma = value.find('+');
        auto n = number(value.substr(0, comma));
        if (!n || id.gids.size() >= 64) return Status::invalidArgument("bad gids");
        id.gids.push_back(*n);
        value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
      }
    } else if (key == "root") {
      id.allowRoot = value == "1";
    }
  }
  if (!haveRole) return Status::invalidArgument("identity without a role");
  return id;
}

Result<std::unique_ptr<TlsCredentials>> TlsCredentials::load(const std::string& dir) {
  std::unique_ptr<TlsCredentials> c(new TlsCredentials(dir));
  Status s = c->reload();
  if (!s.ok()) return s;
  return c;
}

TlsCredentials::~TlsCredentials() = default;

Status TlsCredentials::reload() {
  Identity id;
  auto ctx = makeContext(dir, id);
  if (!ctx.ok()) return ctx.status;
  std::lock_guard<std::mutex> lock(mutex);
  this->ctx = std::move(ctx.value);
  me = std::move(id);
  return Status::OK();
}

Identity TlsCredentials::self() const {
  std::lock_guard<std::mutex> lock(mutex);
  return me;
}

std::shared_ptr<ssl_ctx_st> TlsCredentials::context() const {
  std::lock_guard<std::mutex> lock(mutex);
  return ctx;
}

kj::Promise<SecureStream> TlsCredentials::accept(kj::Own<kj::AsyncIoStream> stream,
                                                 kj::Timer& timer, kj::Duration timeout,
                                                 bool requireClientCertificate) {
  auto tls = kj::heap<TlsStream>(kj::mv(stream), context());
  auto& ref = *tls;
  return timer.timeoutAfter(timeout, ref.handshakeAsServer(requireClientCertificate))
      .then([tls = kj::mv(tls)](Identity peer) mutable {
        return SecureStream{kj::mv(tls), std::move(peer)};
      });
}

kj::Promise<SecureStream> TlsCredentials::connect(kj::Own<kj::AsyncIoStream> stream,
                                                  const std::string& host, Role role,
                                                  kj::Timer& timer, kj::Duration timeout) {
  auto tls = kj::heap<TlsStream>(kj::mv(stream), context());
  auto& ref = *tls;
  return timer.timeoutAfter(timeout, ref.handshakeAsClient(host))
      .then([tls = kj::mv(tls), role](Identity peer) mutable -> SecureStream {
        if (role != Role::NONE && peer.role != role) {
          KJ_FAIL_REQUIRE("the peer's certificate is not for its role", roleName(role),
                          roleName(peer.role));
        }
        return SecureStream{kj::mv(tls), std::move(peer)};
      });
}

}  // namespace cairn
