#include "certs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

namespace cairn {
namespace {

std::string errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "OpenSSL error" : out;
}

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* c) const { X509_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

Key newKey() { return Key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

// Writes `pem` to `path` with `mode`, replacing it whole (a temporary renamed into place).
Status writeFile(const std::string& path, const std::string& pem, mode_t mode) {
  std::string temp = path + ".tmp";
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::ioError(fmt::format("{}: {}", temp, strerror(errno)));
  fchmod(fd, mode);  // whatever the umask
  bool ok = ::write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size());
  ok = fsync(fd) == 0 && ok;
  close(fd);
  if (!ok || rename(temp.c_str(), path.c_str()) != 0) {
    unlink(temp.c_str());
    return Status::ioError(fmt::format("cannot write {}", path));
  }
  return Status::OK();
}

std::string pemOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::string pemOf(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

Result<std::string> readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::notFound(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status addExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr)
    return Status::invalidArgument(fmt::format("extension {}: {}", value, errors()));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return Status::OK();
}

// A certificate for `subjectKey`, valid from a minute ago for `days`, named `name` in role
// `role`, to be signed by `issuerKey` (itself for a CA).
Cert newCert(EVP_PKEY* subjectKey, const std::string& org, const std::string& unit,
             const std::string& name, int days) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), subjectKey);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& value) {
    X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0);
  };
  add("O", org);
  add("OU", unit);
  add("CN", name.substr(0, 64));
  return cert;
}

bool validName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

}  // namespace

Status initCa(const std::string& dir, int days) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::ioError(fmt::format("cannot create {}: {}", dir, ec.message()));
  chmod(dir.c_str(), 0700);
  if (access((dir + "/ca.pem").c_str(), F_OK) == 0) {
    return Status::alreadyExists(fmt::format("{} already holds a CA", dir));
  }
  Key key = newKey();
  if (!key) return Status::ioError(errors());
  Cert cert = newCert(key.get(), "cairn", "ca", "Cairn cluster CA", days);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  Status s =
      addExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  if (s.ok())
    s = addExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  if (s.ok()) s = addExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  if (!s.ok()) return s;
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return Status::ioError(errors());
  s = writeFile(dir + "/ca-key.pem", pemOf(key.get()), 0600);
  if (s.ok()) s = writeFile(dir + "/ca.pem", pemOf(cert.get()), 0644);
  return s;
}

Status issueCert(const std::string& caDir, const CertRequest& request, const std::string& outDir) {
  const Identity& id = request.identity;
  if (id.role == Role::NONE) return Status::invalidArgument("a certificate needs a role");
  if (!validName(id.name)) {
    return Status::invalidArgument("a name is 1 to 64 letters, digits, '-', '_' or '.'");
  }
  if (request.days < 0 || request.days > 36500) return Status::invalidArgument("days: 0 to 36500");
  auto caPem = readAll(caDir + "/ca.pem");
  auto caKeyPem = readAll(caDir + "/ca-key.pem");
  if (!caPem.ok()) return caPem.status;
  if (!caKeyPem.ok()) return caKeyPem.status;
  BIO* bio = BIO_new_mem_buf(caPem.value.data(), static_cast<int>(caPem.value.size()));
  Cert ca(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  bio = BIO_new_mem_buf(caKeyPem.value.data(), static_cast<int>(caKeyPem.value.size()));
  Key caKey(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  if (!ca || !caKey)
    return Status::invalidArgument(fmt::format("{}: not a CA: {}", caDir, errors()));

  Key key = newKey();
  if (!key) return Status::ioError(errors());
  Cert cert = newCert(key.get(), "cairn", roleName(id.role), id.name, request.days);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
  std::string names = "URI:" + id.toUri();
  for (auto& h : request.hosts) {
    in6_addr a6;
    in_addr a4;
    bool ip = inet_pton(AF_INET, h.c_str(), &a4) == 1 || inet_pton(AF_INET6, h.c_str(), &a6) == 1;
    if (!ip && !validName(h)) return Status::invalidArgument(fmt::format("bad host '{}'", h));
    names += (ip ? ",IP:" : ",DNS:") + h;
  }
  Status s = addExtension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  if (s.ok()) s = addExtension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
  if (s.ok()) s = addExtension(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  if (s.ok()) s = addExtension(cert.get(), ca.get(), NID_subject_alt_name, names);
  if (s.ok()) s = addExtension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  if (!s.ok()) return s;
  if (X509_sign(cert.get(), caKey.get(), EVP_sha256()) == 0) return Status::ioError(errors());
  std::error_code ec;
  std::filesystem::create_directories(outDir, ec);
  if (ec) return Status::ioError(fmt::format("cannot create {}: {}", outDir, ec.message()));
  s = writeFile(outDir + "/key.pem", pemOf(key.get()), 0600);
  if (s.ok()) s = writeFile(outDir + "/cert.pem", pemOf(cert.get()), 0644);
  if (s.ok()) s = writeFile(outDir + "/ca.pem", caPem.value, 0644);
  return s;
}

}  // namespace cairn
