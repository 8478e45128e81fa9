// TLS between two ends of a socket pair, with certificates of one test CA (and of another),
// the identities certificates carry, and chunk tokens.

#include "tls.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <sys/stat.h>

#include "certs.h"
#include "cluster.h"
#include "tokens.h"

namespace cairn {
namespace {

using testing::TestCa;

std::shared_ptr<TlsCredentials> load(const std::string& dir) {
  auto tls = TlsCredentials::load(dir);
  EXPECT_TRUE(tls.ok()) << tls.status.toString();
  return tls.ok() ? std::shared_ptr<TlsCredentials>(std::move(tls.value)) : nullptr;
}

class TlsTest : public ::testing::Test {
 protected:
  ~TlsTest() noexcept override {}
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Timer& timer() { return io.provider->getTimer(); }

  // Handshakes `client` with `server` over a socket pair. Either side's failure is
  // returned as its exception's description; on success, the identities each saw.
  struct Outcome {
    std::string serverError, clientError;
    Identity clientSeen, serverSeen;
    kj::Own<kj::AsyncIoStream> serverStream, clientStream;
  };
  Outcome handshake(TlsCredentials& server, TlsCredentials& client, const std::string& host,
                    Role role = Role::NONE) {
    auto pipe = io.provider->newTwoWayPipe();
    Outcome out;
    auto accepted =
        server.accept(kj::mv(pipe.ends[0]), timer(), 5 * kj::SECONDS)
            .then(
                [&](SecureStream s) {
                  out.clientSeen = s.peer;
                  out.serverStream = kj::mv(s.stream);
                },
                [&](kj::Exception&& e) { out.serverError = e.getDescription().cStr(); });
    auto connected = client.connect(kj::mv(pipe.ends[1]), host, role, timer(), 5 * kj::SECONDS)
                         .then(
                             [&](SecureStream s) {
                               out.serverSeen = s.peer;
                               out.clientStream = kj::mv(s.stream);
                             },
                             [&](kj::Exception&& e) {
                               out.clientError = e.getDescription().cStr();
                               // The server learns of it when the socket closes.
                             });
    connected.wait(io.waitScope);
    if (!out.clientError.empty()) out.clientStream = nullptr;
    accepted.wait(io.waitScope);
    return out;
  }
};

TEST_F(TlsTest, PeersLearnEachOthersIdentityAndBytesFlowBothWays) {
  TestCa ca;
  auto server = load(ca.issue(Role::MASTER, "master", {"127.0.0.1"}));
  auto client = load(ca.issue(Role::USER, "alice", {}, 1000, {1000, 27}));
  auto out = handshake(*server, *client, "127.0.0.1", Role::MASTER);
  ASSERT_EQ(out.serverError, "");
  ASSERT_EQ(out.clientError, "");
  EXPECT_EQ(out.clientSeen.role, Role::USER);
  EXPECT_EQ(out.clientSeen.name, "alice");
  EXPECT_EQ(out.clientSeen.uid, 1000u);
  EXPECT_EQ(out.clientSeen.gids, (std::vector<uint32_t>{1000, 27}));
  EXPECT_TRUE(out.clientSeen.authenticated);
  EXPECT_EQ(out.serverSeen.role, Role::MASTER);

  // Several MiB each way, in pieces of odd sizes.
  std::string data = testing::randomBytes(3 << 20, 7);
  auto sent = out.clientStream->write(data.data(), data.size());
  std::string got(data.size(), '\0');
  auto read = out.serverStream->read(got.data(), got.size());
  sent.wait(io.waitScope);
  read.wait(io.waitScope);
  EXPECT_TRUE(got == data);
  std::string reply = "pong";
  auto back = out.serverStream->write(reply.data(), reply.size());
  char buf[4];
  out.clientStream->read(buf, 4).wait(io.waitScope);
  back.wait(io.waitScope);
  EXPECT_EQ(std::string(buf, 4), "pong");
}

TEST_F(TlsTest, CertificatesOfAnotherCaAreRefused) {
  TestCa ca, other;
  auto server = load(ca.issue(Role::MASTER, "master", {"127.0.0.1"}));
  auto stranger = load(other.issue(Role::ADMIN, "admin", {}, 0, {0}));
  auto out = handshake(*server, *stranger, "127.0.0.1");
  EXPECT_NE(out.serverError, "");
  EXPECT_NE(out.clientError, "");
}

TEST_F(TlsTest, ExpiredCertificatesAreRefused) {
  TestCa ca;
  auto server = load(ca.issue(Role::MASTER, "master", {"127.0.0.1"}));
  auto expired = load(ca.issue(Role::USER, "old", {}, 1000, {1000}, false, /*days=*/0));
  auto out = handshake(*server, *expired, "127.0.0.1");
  EXPECT_NE(out.serverError, "");
  EXPECT_NE(out.serverError.find("expired"), std::string::npos) << out.serverError;
}

TEST_F(TlsTest, TheServerMustBeWhoTheClientDialled) {
  TestCa ca;
  auto server = load(ca.issue(Role::CHUNKSERVER, "cs", {"127.0.0.9"}));
  auto client = load(ca.issue(Role::MOUNT, "mount"));
  // Another address than the certificate names.
  EXPECT_NE(handshake(*server, *client, "127.0.0.1").clientError, "");
  // The right address, but not the role expected.
  EXPECT_NE(handshake(*server, *client, "127.0.0.9", Role::MASTER).clientError, "");
  EXPECT_EQ(handshake(*server, *client, "127.0.0.9", Role::CHUNKSERVER).clientError, "");
}

TEST_F(TlsTest, APeerThatSaysNothingIsCutOffAfterTheTimeout) {
  TestCa ca;
  auto server = load(ca.issue(Role::MASTER, "master", {"127.0.0.1"}));
  auto pipe = io.provider->newTwoWayPipe();
  auto start = timer().now();
  auto accepted = server->accept(kj::mv(pipe.ends[0]), timer(), 200 * kj::MILLISECONDS);
  EXPECT_ANY_THROW(accepted.wait(io.waitScope));
  EXPECT_LT(timer().now() - start, 3 * kj::SECONDS);
}

TEST_F(TlsTest, GarbageInsteadOfAHandshakeFailsIt) {
  TestCa ca;
  auto server = load(ca.issue(Role::MASTER, "master", {"127.0.0.1"}));
  auto pipe = io.provider->newTwoWayPipe();
  auto accepted = server->accept(kj::mv(pipe.ends[0]), timer(), 5 * kj::SECONDS);
  std::string junk = testing::randomBytes(4096, 3);
  pipe.ends[1]->write(junk.data(), junk.size()).wait(io.waitScope);
  EXPECT_ANY_THROW(accepted.wait(io.waitScope));
}

TEST_F(TlsTest, ReloadPicksUpANewCertificateAndKeepsTheOldOnFailure) {
  TestCa ca;
  std::string dir = ca.issue(Role::USER, "first", {}, 1000, {1000});
  auto creds = load(dir);
  EXPECT_EQ(creds->self().name, "first");
  std::string next = ca.issue(Role::USER, "second", {}, 1000, {1000});
  for (auto f : {"cert.pem", "key.pem"}) {
    testing::writeFile(dir + "/" + f, testing::readFile(next + "/" + f));
  }
  ASSERT_TRUE(creds->reload().ok());
  EXPECT_EQ(creds->self().name, "second");
  testing::writeFile(dir + "/key.pem", "not a key");
  EXPECT_FALSE(creds->reload().ok());
  EXPECT_EQ(creds->self().name, "second");
}

TEST(CertsTest, KeysAreOwnerOnly) {
  testing::TempDir temp;
  ASSERT_TRUE(initCa(temp.path() + "/ca", 10).ok());
  EXPECT_EQ(initCa(temp.path() + "/ca", 10).code(), ErrorCode::ALREADY_EXISTS);
  CertRequest r;
  r.identity.role = Role::USER;
  r.identity.name = "bob";
  ASSERT_TRUE(issueCert(temp.path() + "/ca", r, temp.path() + "/bob").ok());
  for (auto key : {"/ca/ca-key.pem", "/bob/key.pem"}) {
    struct stat st;
    ASSERT_EQ(stat((temp.path() + key).c_str(), &st), 0) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
}

TEST(IdentityTest, RoundTripsThroughItsUriAndRejectsMalformedOnes) {
  Identity id{Role::MOUNT, "host-7", 4, {4, 100}, true, false};
  auto back = Identity::fromUri(id.toUri());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back.value.role, Role::MOUNT);
  EXPECT_EQ(back.value.name, "host-7");
  EXPECT_EQ(back.value.uid, 4u);
  EXPECT_EQ(back.value.gids, (std::vector<uint32_t>{4, 100}));
  EXPECT_TRUE(back.value.allowRoot);
  for (auto bad : {"", "urn:other:role=user", "urn:cairn:name=x", "urn:cairn:role=king",
                   "urn:cairn:role=user&uid=99999999999", "urn:cairn:role=user&gids=1+x",
                   "urn:cairn:role=user&uid"}) {
    EXPECT_FALSE(Identity::fromUri(bad).ok()) << bad;
  }
}

TEST(TokenTest, OnlyAGenuineUnexpiredTokenForThatChunkAndModePasses) {
  TokenKeys keys;
  keys.rotate();
  ChunkToken read = keys.issue(7, 3, TokenMode::READ, 1000);
  ChunkToken write = keys.issue(7, 3, TokenMode::WRITE, 1000);
  EXPECT_TRUE(keys.verify(read, 7, 3, TokenMode::READ, 999).ok());
  EXPECT_TRUE(keys.verify(write, 7, 3, TokenMode::READ, 999).ok());  // writers read
  EXPECT_TRUE(keys.verify(write, 7, 3, TokenMode::WRITE, 999).ok());
  auto refused = [&](const ChunkToken& t, uint64_t h, uint64_t v, TokenMode m, int64_t now) {
    return keys.verify(t, h, v, m, now).code() == ErrorCode::TOKEN_INVALID;
  };
  EXPECT_TRUE(refused(read, 7, 3, TokenMode::WRITE, 999));  // wrong mode
  EXPECT_TRUE(refused(read, 8, 3, TokenMode::READ, 999));   // another chunk
  EXPECT_TRUE(refused(read, 7, 4, TokenMode::READ, 999));   // another version
  EXPECT_TRUE(refused(read, 7, 3, TokenMode::READ, 1000));  // expired
  ChunkToken forged = read;
  forged.mode = TokenMode::WRITE;  // upgraded by its holder
  EXPECT_TRUE(refused(forged, 7, 3, TokenMode::WRITE, 999));
  forged = read;
  forged.expiresMs = 1 << 30;  // extended
  EXPECT_TRUE(refused(forged, 7, 3, TokenMode::READ, 999));
  forged = read;
  forged.mac[5] ^= 1;
  EXPECT_TRUE(refused(forged, 7, 3, TokenMode::READ, 999));
  forged.mac.clear();
  EXPECT_TRUE(refused(forged, 7, 3, TokenMode::READ, 999));

  // Another cluster's keys sign nothing here.
  TokenKeys other;
  other.rotate();
  EXPECT_TRUE(refused(other.issue(7, 3, TokenMode::READ, 1000), 7, 3, TokenMode::READ, 999));
}

TEST(TokenTest, RetiredKeysNoLongerSign) {
  TokenKeys keys;
  uint32_t first = keys.rotate();
  ChunkToken old = keys.issue(1, 1, TokenMode::READ, 5000);
  keys.rotate();
  EXPECT_TRUE(keys.verify(old, 1, 1, TokenMode::READ, 0).ok());  // still held
  EXPECT_EQ(keys.issue(1, 1, TokenMode::READ, 5000, first).keyId, first);
  keys.rotate();
  keys.keepNewest(2);
  EXPECT_EQ(keys.verify(old, 1, 1, TokenMode::READ, 0).code(), ErrorCode::TOKEN_INVALID);
}

}  // namespace
}  // namespace cairn
