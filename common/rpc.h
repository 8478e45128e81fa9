#pragma once
// Cap'n Proto connections: serving a bootstrap capability on a listener, and a pool of
// outgoing connections keyed by "HOST:PORT". Every received message is bounded by
// RPC_READER_OPTIONS; a peer that sends more, or garbage, loses its connection and
// nothing else.

#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/orphan.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/schema.h>
#include <kj/async-io.h>
#include <kj/map.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "metrics.h"
#include "tls.h"

namespace cairn {

// 24 MiB per message: the largest legitimate message is a 4 MiB read or push.
constexpr capnp::ReaderOptions RPC_READER_OPTIONS = {24ull * 1024 * 1024 / 8, 64};

// How connections are secured. With `tls` (the default everywhere but --insecure), every
// connection is TLS 1.3 with a certificate from the cluster's CA on both sides; without,
// it is plaintext and peers are unauthenticated.
struct RpcSecurity {
  std::shared_ptr<TlsCredentials> tls;  // null: plaintext
  kj::Duration handshakeTimeout = 10 * kj::SECONDS;
  // Open connections one peer address may hold; more are closed at once.
  size_t maxConnectionsPerPeer = 512;
};

// The stream a connection's RPC system writes to, over `stream`. Cap'n Proto 0.9.2 ends
// every call with a Finish message of the caller's and every dropped capability with a
// Release: each a write and, on the other side, a wake-up, though nothing waits for them.
// They are held (up to RPC_HOLD) and go out in the same write as the next message to that
// peer, or alone when none comes. RpcServer and PeerPool put every connection on one.
constexpr kj::Duration RPC_HOLD = 2 * kj::MILLISECONDS;
kj::Own<kj::AsyncIoStream> rpcStream(kj::Own<kj::AsyncIoStream> stream, kj::Timer& timer);

// The capability a connection is served: made for the peer its handshake authenticated.
using BootstrapFactory = std::function<capnp::Capability::Client(const Identity& peer)>;

// Accepts connections on `listener` and serves each the capability `factory` makes for its
// peer, until `this` dies. A peer that does not finish its handshake within the timeout,
// or holds too many connections, is cut off.
class RpcServer final : private kj::TaskSet::ErrorHandler {
 public:
  RpcServer(BootstrapFactory factory, kj::Own<kj::ConnectionReceiver> listener, kj::Timer& timer,
            RpcSecurity security);
  // The same capability for every peer.
  RpcServer(capnp::Capability::Client bootstrap, kj::Own<kj::ConnectionReceiver> listener,
            kj::Timer& timer, RpcSecurity security);
  ~RpcServer();
  uint16_t port() { return listener->getPort(); }
  size_t openConnections() const;
  // Connections open and accepted, refused and failed, into `metrics` (which must not
  // outlive this server's loop).
  void exportMetrics(Metrics& metrics);

 private:
  struct Connection;
  kj::Promise<void> acceptLoop();
  kj::Promise<void> serve(kj::Own<kj::AsyncIoStream> stream, std::string peerHost);
  void taskFailed(kj::Exception&& exception) override;

  BootstrapFactory factory;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Timer& timer;
  RpcSecurity security;
  std::map<std::string, size_t> perPeer;  // open connections by peer address
  struct {
    uint64_t accepted = 0, refused = 0, handshakeFailures = 0;
  } counters;
  kj::TaskSet tasks;
};

// Counts and times the calls a Cap'n Proto interface answers, for /metrics:
// `PREFIX_requests_total{method, result}` (result: the Status code the call answered,
// "ok" when its results carry none, "exception" when it failed) and
// `PREFIX_request_duration_seconds{method}`. Servers call measure() from dispatchCall.
class CallMetrics {
 public:
  CallMetrics(Metrics& metrics, std::string prefix, capnp::InterfaceSchema schema,
              kj::Timer& timer);
  using DispatchCallResult = capnp::Capability::Server::DispatchCallResult;
  using Context = capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>;
  DispatchCallResult measure(uint16_t methodId, Context context,
                             kj::FunctionParam<DispatchCallResult()> call);

 private:
  void record(uint16_t methodId, kj::TimePoint start, const std::string& result);
  std::string resultOf(uint16_t methodId, Context& context);

  Metrics& metrics;
  std::string requests, duration;
  capnp::InterfaceSchema schema;
  kj::Timer& timer;
};

// Sets a Data field to `data` without copying it when it is word-aligned (a capnp
// requirement); `data` must then outlive the request's message, i.e. until its response
// arrives. Otherwise copies.
template <typename Builder, typename Adopt>
void setDataNoCopy(Builder builder, kj::ArrayPtr<const kj::byte> data, Adopt&& adopt) {
  if (reinterpret_cast<uintptr_t>(data.begin()) % sizeof(void*) == 0) {
    adopt(capnp::Orphanage::getForMessageContaining(builder).referenceExternalData(
        capnp::Data::Reader(data.begin(), data.size())));
  } else {
    adopt(capnp::Orphanage::getForMessageContaining(builder).newOrphanCopy(
        capnp::Data::Reader(data.begin(), data.size())));
  }
}

// Outgoing connections, one per address, made on first use and dropped when they fail.
class PeerPool final : private kj::TaskSet::ErrorHandler {
 public:
  // With `security.tls`, every connection is TLS and the server's certificate must be the
  // cluster's and valid for the address dialled.
  PeerPool(kj::Network& network, kj::Timer& timer, RpcSecurity security,
           kj::Duration connectTimeout = 3 * kj::SECONDS);
  ~PeerPool();

  // The peer's bootstrap capability. Calls on it fail with DISCONNECTED if the peer
  // cannot be reached within the connect timeout; the next call dials again.
  // With a `role`, the server's certificate must name it.
  template <typename T>
  typename T::Client get(kj::StringPtr address, Role role = Role::NONE) {
    return bootstrap(address, role).castAs<T>();
  }
  capnp::Capability::Client bootstrap(kj::StringPtr address, Role role = Role::NONE);

  // Forgets the connection to `address` (the next get() dials again).
  void drop(kj::StringPtr address);

 private:
  struct Connection;
  void taskFailed(kj::Exception&& exception) override;

  kj::Network& network;
  kj::Timer& timer;
  RpcSecurity security;
  kj::Duration connectTimeout;
  uint64_t nextGeneration = 1;
  kj::HashMap<kj::String, kj::Own<Connection>> connections;
  kj::TaskSet tasks;
};

// Whether a standby in sync answers this ClientService method (by ordinal): the calls
// that only read the namespace. The master and the client both go by it.
bool standbyAnswers(uint16_t clientServiceMethod);

}  // namespace cairn
