#include "rpc.h"

#include <arpa/inet.h>
#include <capnp/dynamic.h>
#include <capnp/rpc.capnp.h>
#include <capnp/rpc.h>
#include <capnp/serialize.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <set>

#include "address.h"
#include "forwarding_stream.h"
#include "log.h"
#include "master.capnp.h"

namespace cairn {

namespace {

// The address of the peer at the other end of `stream`, for per-peer limits and logs.
std::string peerHost(kj::AsyncIoStream& stream) {
  sockaddr_storage addr;
  uint len = sizeof(addr);
  memset(&addr, 0, sizeof(addr));
  try {
    stream.getpeername(reinterpret_cast<sockaddr*>(&addr), &len);
  } catch (const kj::Exception&) {
    return "unknown";
  }
  char text[INET6_ADDRSTRLEN] = "unknown";
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, text, sizeof(text));
  }
  return text;
}

// Whether the message in `pieces` (as capnp::writeMessage hands them over: the segment
// table, then the segments) is one of the RPC protocol's bookkeeping messages, Finish or
// Release, that nobody waits for.
bool isBookkeeping(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (pieces.size() != 2) return false;  // one segment: these are a few words
  auto segment = pieces[1];
  if (segment.size() > 128 || segment.size() % sizeof(capnp::word) != 0 ||
      reinterpret_cast<uintptr_t>(segment.begin()) % alignof(capnp::word) != 0) {
    return false;
  }
  kj::ArrayPtr<const capnp::word> segments[1] = {kj::arrayPtr(
      reinterpret_cast<const capnp::word*>(segment.begin()), segment.size() / sizeof(capnp::word))};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1));
  auto which = reader.getRoot<capnp::rpc::Message>().which();
  return which == capnp::rpc::Message::FINISH || which == capnp::rpc::Message::RELEASE;
}

// rpcStream()'s stream. The RPC system writes one message at a time, each once the last is
// written; a flush of what was held may be under way when the next comes.
class RpcStream final : public ForwardingStream {
 public:
  RpcStream(kj::Own<kj::AsyncIoStream> inner, kj::Timer& timer)
      : ForwardingStream(kj::mv(inner)), timer(timer) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return inner->tryRead(buffer, minBytes, maxBytes);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    auto piece = kj::heapArray<kj::ArrayPtr<const kj::byte>>(1);
    piece[0] = kj::arrayPtr(static_cast<const kj::byte*>(buffer), size);
    auto& ref = piece;
    return write(ref.asPtr()).attach(kj::mv(piece));
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    if (isBookkeeping(pieces)) {
      for (auto piece : pieces) held.addAll(piece);
      if (!flushArmed) {
        flushArmed = true;
        heldFlush = timer.afterDelay(RPC_HOLD)
                        .then([this]() {
                          flushArmed = false;
                          flushHeld();
                        })
                        .eagerlyEvaluate(nullptr);
      }
      return kj::READY_NOW;
    }
    // After a flush of what was held, if one is under way.
    kj::Maybe<kj::Promise<void>> after;
    KJ_IF_MAYBE (flush, flushing) {
      after = flush->addBranch();
      flushing = nullptr;
    }
    kj::Own<kj::Array<kj::byte>> bytes;
    kj::Array<kj::ArrayPtr<const kj::byte>> all;
    if (!held.empty()) {
      // What was held goes first, in the same write.
      flushArmed = false;
      heldFlush = nullptr;
      bytes = kj::heap(held.releaseAsArray());
      all = kj::heapArray<kj::ArrayPtr<const kj::byte>>(pieces.size() + 1);
      all[0] = *bytes;
      for (size_t i = 0; i < pieces.size(); ++i) all[i + 1] = pieces[i];
      pieces = all;
    }
    auto send = [this, pieces, all = kj::mv(all), bytes = kj::mv(bytes)]() mutable {
      return inner->write(pieces).attach(kj::mv(all), kj::mv(bytes));
    };
    KJ_IF_MAYBE (previous, after) {
      return previous->then(kj::mv(send));
    }
    return send();
  }
  // What is held goes out first, and the end of the stream after it.
  void shutdownWrite() override {
    flushArmed = false;
    heldFlush = nullptr;
    flushHeld();
    KJ_IF_MAYBE (flush, flushing) {
      shutdown =
          flush->addBranch().then([this]() { inner->shutdownWrite(); }).eagerlyEvaluate(nullptr);
      return;
    }
    inner->shutdownWrite();
  }

 private:
  // No message came within RPC_HOLD: what was held goes alone. The RPC system's next write
  // waits for it. A failure fails the reads too, as a failed write of the RPC system's own
  // does, so that calls waiting for answers fail at once.
  void flushHeld() {
    if (held.empty()) return;
    auto bytes = kj::heap(held.releaseAsArray());
    kj::Promise<void> previous = kj::READY_NOW;
    KJ_IF_MAYBE (flush, flushing) {
      previous = flush->addBranch();
    }
    flushing = previous
                   .then([this, bytes = kj::mv(bytes)]() mutable {
                     auto& ref = *bytes;
                     return inner->write(ref.begin(), ref.size()).attach(kj::mv(bytes));
                   })
                   .catch_([this](kj::Exception&& e) {
                     inner->abortRead();
                     kj::throwFatalException(kj::mv(e));
                   })
                   .fork();
  }

  kj::Timer& timer;
  kj::Vector<kj::byte> held;
  kj::Maybe<kj::Promise<void>> heldFlush;  // once armed, the timer that flushes what is held
  bool flushArmed = false;
  kj::Maybe<kj::ForkedPromise<void>> flushing;
  kj::Maybe<kj::Promise<void>> shutdown;  // once asked for, after a flush under way
};

}  // namespace

kj::Own<kj::AsyncIoStream> rpcStream(kj::Own<kj::AsyncIoStream> stream, kj::Timer& timer) {
  return kj::heap<RpcStream>(kj::mv(stream), timer);
}

struct RpcServer::Connection {
  Connection(kj::Own<kj::AsyncIoStream>&& s, kj::Timer& timer, capnp::Capability::Client bootstrap)
      : stream(rpcStream(kj::mv(s), timer)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, RPC_READER_OPTIONS),
        rpcSystem(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpcSystem;
};

RpcServer::RpcServer(BootstrapFactory factory, kj::Own<kj::ConnectionReceiver> l, kj::Timer& timer,
                     RpcSecurity security)
    : factory(std::move(factory)),
      listener(kj::mv(l)),
      timer(timer),
      security(std::move(security)),
      tasks(*this) {
  tasks.add(acceptLoop());
}

RpcServer::RpcServer(capnp::Capability::Client bootstrap, kj::Own<kj::ConnectionReceiver> l,
                     kj::Timer& timer, RpcSecurity security)
    : RpcServer([cap = std::make_shared<capnp::Capability::Client>(kj::mv(bootstrap))](
                    const Identity&) { return *cap; },
                kj::mv(l), timer, std::move(security)) {}

RpcServer::~RpcServer() = default;

kj::Promise<void> RpcServer::acceptLoop() {
  return listener->accept().then(
      [this](kj::Own<kj::AsyncIoStream>&& stream) {
        std::string host = peerHost(*stream);
        size_t& open = perPeer[host];
        if (open >= security.maxConnectionsPerPeer) {
          logWarn("{} holds {} connections already: refused another", host, open);
          ++counters.refused;
          if (open == 0) perPeer.erase(host);
        } else {
          ++open;
          ++counters.accepted;
          tasks.add(serve(kj::mv(stream), host));
        }
        return acceptLoop();
      },
      [this](kj::Exception&& e) {
        // One failed accept (out of descriptors, an aborted connection) must not stop the
        // server from taking the next.
        logWarn("accept failed: {}", e.getDescription().cStr());
        return kj::evalLater([this]() { return acceptLoop(); });
      });
}

kj::Promise<void> RpcServer::serve(kj::Own<kj::AsyncIoStream> stream, std::string host) {
  auto release = kj::defer([this, host]() {
    auto it = perPeer.find(host);
    if (it != perPeer.end() && --it->second == 0) perPeer.erase(it);
  });
  kj::Promise<SecureStream> secured = nullptr;
  if (security.tls) {
    secured = security.tls->accept(kj::mv(stream), timer, security.handshakeTimeout)
                  .catch_([this, host](kj::Exception&& e) -> kj::Promise<SecureStream> {
                    ++counters.handshakeFailures;
                    auto type = e.getType() == kj::Exception::Type::OVERLOADED
                                    ? kj::Exception::Type::DISCONNECTED
                                    : e.getType();
                    return kj::Exception(type, __FILE__, __LINE__,
                                         kj::str("TLS handshake with ", host.c_str(),
                                                 " failed: ", e.getDescription()));
                  });
  } else {
    secured = SecureStream{kj::mv(stream), Identity{}};
  }
  return secured
      .then([this](SecureStream s) {
        auto connection = kj::heap<Connection>(kj::mv(s.stream), timer, factory(s.peer));
        auto done = connection->network.onDisconnect();
        return done.attach(kj::mv(connection));
      })
      .attach(kj::mv(release));
}

size_t RpcServer::openConnections() const {
  size_t n = 0;
  for (auto& [host, open] : perPeer) n += open;
  return n;
}

void RpcServer::exportMetrics(Metrics& metrics) {
  metrics.describe("cairn_rpc_connections", Metrics::Type::GAUGE, "RPC connections open now");
  metrics.describe("cairn_rpc_connections_total", Metrics::Type::COUNTER,
                   "RPC connections accepted, refused (too many from one peer) and failed "
                   "(TLS handshake)");
  metrics.collect([this](const Metrics::GaugeSink& set) {
    set("cairn_rpc_connections", {}, static_cast<double>(openConnections()));
    set("cairn_rpc_connections_total", {{"result", "accepted"}},
        static_cast<double>(counters.accepted));
    set("cairn_rpc_connections_total", {{"result", "refused"}},
        static_cast<double>(counters.refused));
    set("cairn_rpc_connections_total", {{"result", "handshake_failed"}},
        static_cast<double>(counters.handshakeFailures));
  });
}

void RpcServer::taskFailed(kj::Exception&& exception) {
  logWarn("connection ended: {}", exception.getDescription().cStr());
}

struct PeerPool::Connection {
  uint64_t generation = 0;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpcSystem;
  kj::Maybe<capnp::Capability::Client> cap;
};

PeerPool::PeerPool(kj::Network& network, kj::Timer& timer, RpcSecurity security,
                   kj::Duration connectTimeout)
    : network(network),
      timer(timer),
      security(std::move(security)),
      connectTimeout(connectTimeout),
      tasks(*this) {}

PeerPool::~PeerPool() = default;

capnp::Capability::Client PeerPool::bootstrap(kj::StringPtr address, Role role) {
  KJ_IF_MAYBE (existing, connections.find(address)) {
    KJ_IF_MAYBE (cap, (*existing)->cap) {
      return *cap;
    }
  }
  auto connection = kj::heap<Connection>();
  uint64_t generation = nextGeneration++;
  connection->generation = generation;
  Connection* entry = connection.get();
  kj::String key = kj::str(address);
  connections.upsert(
      kj::str(address), kj::mv(connection),
      [](kj::Own<Connection>& old, kj::Own<Connection>&& repl) { old = kj::mv(repl); });

  auto dial = network.parseAddress(address).then(
      [](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); });
  if (security.tls) {
    dial = dial.then([this, host = hostOf(address.cStr()), role](kj::Own<kj::AsyncIoStream> s) {
      return security.tls->connect(kj::mv(s), host, role, timer, connectTimeout)
          .then([](SecureStream secured) { return kj::mv(secured.stream); });
    });
  }
  auto connected =
      timer
          .timeoutAfter(connectTimeout,
                        kj::mv(dial).then([](kj::Own<kj::AsyncIoStream> s) { return s; }))
          .then(
              [this, address = kj::str(address),
               generation](kj::Own<kj::AsyncIoStream> stream) -> capnp::Capability::Client {
                // The entry may have been dropped while connecting: then so is this stream.
                Connection* raw = nullptr;
                KJ_IF_MAYBE (entry, connections.find(address)) {
                  if ((*entry)->generation == generation) raw = entry->get();
                }
                if (raw == nullptr) {
                  kj::throwFatalException(
                      KJ_EXCEPTION(DISCONNECTED, "connection dropped while connecting", address));
                }
                raw->stream = rpcStream(kj::mv(stream), timer);
                raw->network = kj::heap<capnp::TwoPartyVatNetwork>(
                    *raw->stream, capnp::rpc::twoparty::Side::CLIENT, RPC_READER_OPTIONS);
                raw->rpcSystem = kj::heap(capnp::makeRpcClient(*raw->network));
                capnp::word scratch[4];
                memset(scratch, 0, sizeof(scratch));
                capnp::MallocMessageBuilder message(scratch);
                auto vatId = message.getRoot<capnp::rpc::twoparty::VatId>();
                vatId.setSide(capnp::rpc::twoparty::Side::SERVER);
                auto cap = raw->rpcSystem->bootstrap(vatId);
                uint64_t gen = raw->generation;
                tasks.add(raw->network->onDisconnect().then([this, raw, gen]() {
                  // Find by generation: the entry may have been replaced since.
                  kj::Maybe<kj::String> victim;
                  for (auto& entry : connections) {
                    if (entry.value.get() == raw && entry.value->generation == gen) {
                      victim = kj::str(entry.key);
                    }
                  }
                  KJ_IF_MAYBE (v, victim) {
                    drop(*v);
                  }
                }));
                return cap;
              },
              [this, key = kj::mv(key),
               generation](kj::Exception&& e) -> capnp::Capability::Client {
                KJ_IF_MAYBE (existing, connections.find(key)) {
                  if ((*existing)->generation == generation) {
                    // Dropping later: this very lambda belongs to the entry's promise.
                    tasks.add(kj::evalLater([this, k = kj::str(key), generation]() {
                      KJ_IF_MAYBE (e2, connections.find(k)) {
                        if ((*e2)->generation == generation) connections.erase(k);
                      }
                    }));
                  }
                }
                if (e.getType() == kj::Exception::Type::OVERLOADED) {
                  kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "connect timed out", key));
                }
                kj::throwFatalException(kj::mv(e));
              });
  capnp::Capability::Client cap(kj::mv(connected));
  entry->cap = cap;  // still in the map: nothing has run since it went in
  return cap;
}

void PeerPool::drop(kj::StringPtr address) {
  KJ_IF_MAYBE (existing, connections.find(address)) {
    // The connection may be what is running now (an onDisconnect continuation); destroy
    // it on a later turn of the loop.
    auto victim = kj::mv(*existing);
    connections.erase(address);
    tasks.add(kj::evalLater([victim = kj::mv(victim)]() mutable { victim = nullptr; }));
  }
}

void PeerPool::taskFailed(kj::Exception&& exception) {
  logDebug("peer connection: {}", exception.getDescription().cStr());
}

CallMetrics::CallMetrics(Metrics& metrics, std::string prefix, capnp::InterfaceSchema schema,
                         kj::Timer& timer)
    : metrics(metrics),
      requests(prefix + "_requests_total"),
      duration(prefix + "_request_duration_seconds"),
      schema(schema),
      timer(timer) {
  std::string what = schema.getShortDisplayName().cStr();
  metrics.describe(requests, Metrics::Type::COUNTER,
                   fmt::format("{} calls answered, by method and result", what));
  metrics.describe(duration, Metrics::Type::HISTOGRAM,
                   fmt::format("time to answer a {} call", what), LATENCY_BUCKETS);
}

CallMetrics::DispatchCallResult CallMetrics::measure(uint16_t methodId, Context context,
                                                     kj::FunctionParam<DispatchCallResult()> call) {
  kj::TimePoint start = timer.now();
  DispatchCallResult r = call();
  r.promise =
      r.promise.then([this, methodId, start,
                      context]() mutable { record(methodId, start, resultOf(methodId, context)); },
                     [this, methodId, start](kj::Exception&& e) {
                       record(methodId, start, "exception");
                       kj::throwFatalException(kj::mv(e));
                     });
  return r;
}

void CallMetrics::record(uint16_t methodId, kj::TimePoint start, const std::string& result) {
  auto methods = schema.getMethods();
  std::string method =
      methodId < methods.size() ? methods[methodId].getProto().getName().cStr() : "unknown";
  metrics.add(requests, {{"method", method}, {"result", result}});
  metrics.observe(duration, {{"method", method}},
                  static_cast<double>((timer.now() - start) / kj::NANOSECONDS) / 1e9);
}

std::string CallMetrics::resultOf(uint16_t methodId, Context& context) {
  auto methods = schema.getMethods();
  if (methodId >= methods.size()) return "ok";
  auto type = methods[methodId].getResultType();
  KJ_IF_MAYBE (field, type.findFieldByName("status")) {
    auto results = context.getResults().getAs<capnp::DynamicStruct>(type);
    if (!results.has(*field)) return "ok";
    auto status = results.get(*field).as<capnp::DynamicStruct>();
    KJ_IF_MAYBE (e, status.get("code").as<capnp::DynamicEnum>().getEnumerant()) {
      return e->getProto().getName().cStr();
    }
  }
  return "ok";
}

bool standbyAnswers(uint16_t method) {
  static const std::set<uint16_t> reads = []() {
    std::set<uint16_t> out;
    for (const char* name : {"lookup", "getattr", "readdir", "resolve", "getChunks", "readlink",
                             "getxattr", "listxattr", "asCaller"}) {
      out.insert(capnp::Schema::from<wire::ClientService>().getMethodByName(name).getOrdinal());
    }
    return out;
  }();
  return reads.count(method) != 0;
}

}  // namespace cairn
