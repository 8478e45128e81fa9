#pragma once
// Cap'n Proto connections: serving a bootstrap capability on a listener, and a pool of
// outgoing connections keyed by "HOST:PORT". Every received message is bounded by
// RPC_READER_OPTIONS; a peer that sends more, or garbage, loses its connection and
// nothing else.

#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/orphan.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/map.h>
#include <kj/timer.h>

#include <string>

namespace cairn {

// 24 MiB per message: the largest legitimate message is a 4 MiB read or push.
constexpr capnp::ReaderOptions RPC_READER_OPTIONS = {24ull * 1024 * 1024 / 8, 64};

// Accepts connections on `listener` and serves `bootstrap` on each until `this` dies.
class RpcServer final : private kj::TaskSet::ErrorHandler {
 public:
  RpcServer(capnp::Capability::Client bootstrap, kj::Own<kj::ConnectionReceiver> listener);
  uint16_t port() { return listener->getPort(); }

 private:
  struct Connection;
  kj::Promise<void> acceptLoop();
  void taskFailed(kj::Exception&& exception) override;

  capnp::Capability::Client bootstrap;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::TaskSet tasks;
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
  PeerPool(kj::Network& network, kj::Timer& timer,
           kj::Duration connectTimeout = 3 * kj::SECONDS);
  ~PeerPool();

  // The peer's bootstrap capability. Calls on it fail with DISCONNECTED if the peer
  // cannot be reached within the connect timeout; the next call dials again.
  template <typename T>
  typename T::Client get(kj::StringPtr address) {
    return bootstrap(address).castAs<T>();
  }
  capnp::Capability::Client bootstrap(kj::StringPtr address);

  // Forgets the connection to `address` (the next get() dials again).
  void drop(kj::StringPtr address);

 private:
  struct Connection;
  void taskFailed(kj::Exception&& exception) override;

  kj::Network& network;
  kj::Timer& timer;
  kj::Duration connectTimeout;
  uint64_t nextGeneration = 1;
  kj::HashMap<kj::String, kj::Own<Connection>> connections;
  kj::TaskSet tasks;
};

}  // namespace cairn
