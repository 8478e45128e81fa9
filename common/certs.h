#pragma once
// The cluster's certificate authority and the certificates it issues, made with OpenSSL.
// Keys are P-256 and written with mode 0600; certificates expire.

#include <cstdint>
#include <string>
#include <vector>

#include "status.h"
#include "tls.h"

namespace cairn {

// Makes a new CA in `dir` (ca.pem, ca-key.pem); alreadyExists if one is there.
Status initCa(const std::string& dir, int days);

struct CertRequest {
  Identity identity;               // role, name, and for users and mounts uid/gids/root
  std::vector<std::string> hosts;  // addresses and names a server answers at
  int days = 365;                  // 0: expires at once (for tests)
};

// Issues a certificate signed by the CA in `caDir` into `outDir` (cert.pem, key.pem and a
// copy of ca.pem), the layout TlsCredentials::load() reads.
Status issueCert(const std::string& caDir, const CertRequest& request, const std::string& outDir);

}  // namespace cairn
