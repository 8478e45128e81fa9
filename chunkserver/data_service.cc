// The chunkserver's RPC service: reads, the pushed-data buffers, the GFS write path
// (primary orders, applies, forwards to secondaries) and the master's version, lease and
// truncate calls. Disk work runs on the DiskPool; state lives on the event loop.

#include <fmt/format.h>
#include <kj/debug.h>

#include <map>

#include "chunkserver.h"
#include "log.h"
#include "parallel.h"

namespace cairn {

constexpr uint32_t MAX_READ = 4 << 20;
constexpr uint32_t MAX_PUSH = 4 << 20;
constexpr size_t MAX_CHAIN = 16;

class ChunkServerImpl final : public wire::ChunkServer::Server, private kj::TaskSet::ErrorHandler {
 public:
  explicit ChunkServerImpl(Chunkserver& cs)
      : cs(cs), store(cs.store()), pool(cs.pool()), tasks(*this) {
    tasks.add(expireBuffers());
  }

  kj::Promise<void> read(ReadContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), offset = p.getOffset();
    uint32_t length = p.getLength();
    if (length > MAX_READ || offset + length > store.maxChunkSize()) {
      return fail(context, Status::invalidArgument(
                               fmt::format("read of {} bytes at {} is out of bounds", length,
                                           offset)));
    }
    return pool
        .run([this, handle, version, offset, length]() {
          Result<std::string> r;
          r.status = store.read(handle, version, offset, length, r.value);
          return r;
        })
        .then([context, handle](Result<std::string> r) mutable {
          auto results = context.getResults();
          if (r.status.code() == ErrorCode::REPLICA_CORRUPT) {
            logError("chunk {:x}: {}", handle, r.status.message());
          }
          toWire(r.status, results.initStatus());
          if (r.ok()) {
            results.setData(capnp::Data::Reader(
                reinterpret_cast<const capnp::byte*>(r.value.data()), r.value.size()));
          }
        });
  }

  kj::Promise<void> pushData(PushDataContext context) override {
    auto p = context.getParams();
    auto data = p.getData();
    uint64_t dataId = p.getDataId();
    uint32_t total = p.getTotalLength(), offset = p.getOffset();
    auto chain = p.getChain();
    if (total == 0 || total > store.maxChunkSize() || data.size() > MAX_PUSH ||
        uint64_t{offset} + data.size() > total || chain.size() > MAX_CHAIN) {
      return fail(context, Status::invalidArgument("push out of bounds"));
    }
    auto it = buffers.find(dataId);
    if (it == buffers.end()) {
      if (buffered + total > cs.options().bufferLimitBytes) {
        return fail(context, Status(ErrorCode::BUSY, "push buffers full; retry later"));
      }
      it = buffers.emplace(dataId, Buffer{}).first;
      it->second.bytes.resize(total);
      buffered += total;
    } else if (it->second.bytes.size() != total) {
      return fail(context, Status::invalidArgument("push length differs from earlier pieces"));
    }
    Buffer& b = it->second;
    memcpy(b.bytes.data() + offset, data.begin(), data.size());
    b.pieces[offset] = static_cast<uint32_t>(data.size());
    b.touched = cs.timer().now();
    if (chain.size() == 0) {
      toWire(Status::OK(), context.getResults().initStatus());
      return kj::READY_NOW;
    }
    // Forward down the chain; the sender hears back once every replica holds the piece.
    std::string next = chain[0];
    auto req = cs.peers().get<wire::ChunkServer>(next).pushDataRequest();
    req.setDataId(dataId);
    req.setTotalLength(total);
    req.setOffset(offset);
    // The piece stays in this call's parameters until the forward is answered.
    setDataNoCopy(wire::ChunkServer::PushDataParams::Builder(req), data,
                  [&](capnp::Orphan<capnp::Data>&& o) { req.adoptData(kj::mv(o)); });
    auto rest = req.initChain(chain.size() - 1);
    for (uint i = 1; i < chain.size(); ++i) rest.set(i - 1, chain[i]);
    return forward(kj::mv(req), next).then([context](Status s) mutable {
      toWire(s, context.getResults().initStatus());
    });
  }

  kj::Promise<void> write(WriteContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), dataId = p.getDataId();
    uint32_t offset = p.getOffset(), length = p.getLength();
    if (p.getSecondaries().size() > MAX_CHAIN) {
      return fail(context, Status::invalidArgument("too many secondaries"));
    }
    auto lease = leases.find(handle);
    if (lease == leases.end() || lease->second.version != version) {
      return fail(context, Status(ErrorCode::NOT_PRIMARY,
                                  fmt::format("no lease on chunk {:x} at version {}", handle,
                                              version)));
    }
    if (cs.timer().now() >= lease->second.expiry) {
      return fail(context, Status(ErrorCode::LEASE_EXPIRED,
                                  fmt::format("lease on chunk {:x} expired", handle)));
    }
    std::vector<std::string> secondaries;
    for (auto s : p.getSecondaries()) secondaries.emplace_back(s);
    // The primary's order is the order of this chain: secondaries apply in the order the
    // primary forwards, over one connection each.
    // The primary applies and forwards at once: the order is fixed by serialized(), which
    // sends each applyWrite before any later mutation of this chunk can start.
    return serialized(handle, [this, handle, version, offset, dataId, length,
                               secondaries = std::move(secondaries)]() mutable {
             auto local = applyBuffer(handle, version, offset, dataId, length);
             auto remote = forwardApply(std::move(secondaries), handle, version, offset, dataId,
                                        length);
             return local.then([this, remote = kj::mv(remote)](Status s) mutable {
               if (!s.ok()) {
                 // Name this replica, so that the client can have the master drop it.
                 s = Status(s.code(),
                            fmt::format("chunkserver {}: {}", cs.options().address, s.message()));
               }
               return remote.then([s](Status r) { return s.ok() ? r : s; });
             });
           })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> applyWrite(ApplyWriteContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), dataId = p.getDataId();
    uint32_t offset = p.getOffset(), length = p.getLength();
    return serialized(handle,
                      [this, handle, version, offset, dataId, length]() {
                        return applyBuffer(handle, version, offset, dataId, length);
                      })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> setVersion(SetVersionContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    bool create = p.getCreate();
    leases.erase(handle);  // a new version means a new lease is coming
    return serialized(handle,
                      [this, handle, version, create]() {
                        return pool.run([this, handle, version, create]() {
                          return create ? store.create(handle, version)
                                        : store.setVersion(handle, version);
                        });
                      })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> grantLease(GrantLeaseContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    uint64_t current = store.versionOf(handle);
    if (current != version) {
      return fail(context, Status::staleVersion(fmt::format(
                               "chunk {:x} is at version {}, lease is for {}", handle, current,
                               version)));
    }
    uint32_t ms = std::min<uint32_t>(p.getDurationMs(), 600'000);
    leases[handle] = Lease{version, cs.timer().now() + ms * kj::MILLISECONDS};
    toWire(Status::OK(), context.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> truncate(TruncateContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), length = p.getLength();
    leases.erase(handle);
    return serialized(handle,
                      [this, handle, version, length]() {
                        return pool.run([this, handle, version, length]() {
                          return store.truncate(handle, version, length);
                        });
                      })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> sync(SyncContext context) override {
    uint64_t handle = context.getParams().getHandle();
    return serialized(handle,
                      [this, handle]() {
                        return pool.run([this, handle]() { return store.sync(handle); });
                      })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); });
  }

  kj::Promise<void> replicate(ReplicateContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    std::string source = p.getSource();
    leases.erase(handle);
    return serialized(handle,
                      [this, handle, version, source]() {
                        return pool
                            .run([this, handle, version]() {
                              // An old replica here is stale by definition: replace it.
                              if (store.has(handle)) store.remove(handle);
                              return store.create(handle, version);
                            })
                            .then([this, handle, version, source](Status s) -> kj::Promise<Status> {
                              if (!s.ok()) return s;
                              return copyFrom(source, handle, version);
                            })
                            .then([this, handle](Status s) -> kj::Promise<Status> {
                              if (s.ok()) return s;
                              return pool.run([this, handle, s]() {
                                store.remove(handle);  // never keep a partial copy
                                return s;
                              });
                            });
                      })
        .then([context, handle](Status s) mutable {
          if (s.ok()) logInfo("chunk {:x}: copied in", handle);
          toWire(s, context.getResults().initStatus());
        });
  }

 private:
  // Reads the replica at `source` into the store, MAX_READ at a time with a few reads in
  // flight; pieces past the source's end come back empty.
  kj::Promise<Status> copyFrom(std::string source, uint64_t handle, uint64_t version) {
    size_t pieces = (store.maxChunkSize() + MAX_READ - 1) / MAX_READ;
    return runLimited(pieces, 4, [this, source, handle, version](size_t i) {
      return copyPiece(source, handle, version, uint64_t{i} * MAX_READ);
    });
  }

  kj::Promise<Status> copyPiece(std::string source, uint64_t handle, uint64_t version,
                                uint64_t offset) {
    auto req = cs.peers().get<wire::ChunkServer>(source).readRequest();
    req.setHandle(handle);
    req.setVersion(version);
    req.setOffset(static_cast<uint32_t>(offset));
    req.setLength(static_cast<uint32_t>(std::min<uint64_t>(MAX_READ, store.maxChunkSize() - offset)));
    return cs.timer()
        .timeoutAfter(cs.options().rpcTimeout, req.send())
        .then(
            [this, source, handle, version, offset](auto response) -> kj::Promise<Status> {
              Status s = fromWire(response.getStatus());
              if (!s.ok()) {
                return Status(s.code(), fmt::format("source {}: {}", source, s.message()));
              }
              auto data = response.getData();
              if (data.size() == 0) return Status::OK();
              auto bytes = kj::heap<std::string>(reinterpret_cast<const char*>(data.begin()),
                                                 data.size());
              auto& ref = *bytes;
              return pool
                  .run([this, handle, version, offset, &ref]() {
                    return store.write(handle, version, offset, ref);
                  })
                  .attach(kj::mv(bytes));
            },
            [this, source](kj::Exception&& e) -> kj::Promise<Status> {
              cs.peers().drop(source);
              return Status::unavailable(
                  fmt::format("source {}: {}", source, e.getDescription().cStr()));
            });
  }

  struct Buffer {
    std::string bytes;
    std::map<uint32_t, uint32_t> pieces;  // offset -> length received
    kj::TimePoint touched = kj::origin<kj::TimePoint>();
    bool complete() const {
      uint64_t covered = 0;
      for (auto& [off, len] : pieces) {
        if (off > covered) return false;
        covered = std::max<uint64_t>(covered, uint64_t{off} + len);
      }
      return covered >= bytes.size();
    }
  };
  struct Lease {
    uint64_t version = 0;
    kj::TimePoint expiry = kj::origin<kj::TimePoint>();
  };

  template <typename Context>
  kj::Promise<void> fail(Context& context, const Status& s) {
    toWire(s, context.getResults().initStatus());
    return kj::READY_NOW;
  }

  // Runs `step` after every earlier step for `handle`, so that all replicas apply
  // mutations of a chunk in the order the primary chose.
  kj::Promise<Status> serialized(uint64_t handle, kj::Function<kj::Promise<Status>()> step) {
    kj::Promise<void> before = kj::READY_NOW;
    auto it = tails.find(handle);
    if (it != tails.end()) before = it->second.addBranch();
    auto run = before.then([step = kj::mv(step)]() mutable { return step(); }).fork();
    uint64_t gen = ++tailGeneration;
    tails.insert_or_assign(
        handle, run.addBranch().ignoreResult().catch_([](kj::Exception&&) {}).fork());
    tailGen[handle] = gen;
    return run.addBranch().then([this, handle, gen](Status s) {
      if (tailGen[handle] == gen) {
        tails.erase(handle);
        tailGen.erase(handle);
      }
      return s;
    });
  }

  kj::Promise<Status> applyBuffer(uint64_t handle, uint64_t version, uint32_t offset,
                                  uint64_t dataId, uint32_t length) {
    auto it = buffers.find(dataId);
    if (it == buffers.end() || !it->second.complete() || it->second.bytes.size() != length) {
      return Status::invalidArgument(
          fmt::format("data {:x} for chunk {:x} was not pushed here in full", dataId, handle));
    }
    if (uint64_t{offset} + length > store.maxChunkSize()) {
      return Status::invalidArgument("write past the end of the chunk");
    }
    auto bytes = kj::heap<std::string>(std::move(it->second.bytes));
    buffered -= length;
    buffers.erase(it);
    auto& ref = *bytes;
    return pool
        .run([this, handle, version, offset, &ref]() {
          return store.write(handle, version, offset, ref);
        })
        .attach(kj::mv(bytes));
  }

  kj::Promise<Status> forwardApply(std::vector<std::string> secondaries, uint64_t handle,
                                   uint64_t version, uint32_t offset, uint64_t dataId,
                                   uint32_t length) {
    kj::Vector<kj::Promise<Status>> calls;
    for (auto& address : secondaries) {
      auto req = cs.peers().get<wire::ChunkServer>(address).applyWriteRequest();
      req.setHandle(handle);
      req.setVersion(version);
      req.setOffset(offset);
      req.setDataId(dataId);
      req.setLength(length);
      calls.add(forward(kj::mv(req), address));
    }
    return kj::joinPromises(calls.releaseAsArray())
        .then([secondaries = std::move(secondaries)](kj::Array<Status> results) {
          for (size_t i = 0; i < results.size(); ++i) {
            if (!results[i].ok()) {
              return Status(results[i].code(), fmt::format("secondary {}: {}", secondaries[i],
                                                           results[i].message()));
            }
          }
          return Status::OK();
        });
  }

  // Sends a request to a peer chunkserver with a timeout; a lost peer becomes a Status.
  template <typename Request>
  kj::Promise<Status> forward(Request&& req, std::string address) {
    return cs.timer()
        .timeoutAfter(cs.options().rpcTimeout, req.send())
        .then([](auto response) { return fromWire(response.getStatus()); },
              [this, address](kj::Exception&& e) {
                cs.peers().drop(address);
                return Status::unavailable(
                    fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
              });
  }

  kj::Promise<void> expireBuffers() {
    return cs.timer().afterDelay(5 * kj::SECONDS).then([this]() {
      auto now = cs.timer().now();
      for (auto it = buffers.begin(); it != buffers.end();) {
        if (now - it->second.touched > cs.options().bufferIdleLimit) {
          buffered -= it->second.bytes.size();
          it = buffers.erase(it);
        } else {
          ++it;
        }
      }
      return expireBuffers();
    });
  }

  void taskFailed(kj::Exception&& e) override {
    logError("chunkserver task failed: {}", e.getDescription().cStr());
  }

  Chunkserver& cs;
  ChunkStore& store;
  DiskPool& pool;
  std::map<uint64_t, Buffer> buffers;
  uint64_t buffered = 0;
  std::map<uint64_t, Lease> leases;
  std::map<uint64_t, kj::ForkedPromise<void>> tails;
  std::map<uint64_t, uint64_t> tailGen;
  uint64_t tailGeneration = 0;
  kj::TaskSet tasks;
};

kj::Own<wire::ChunkServer::Server> newChunkServerImpl(Chunkserver& cs) {
  return kj::heap<ChunkServerImpl>(cs);
}

}  // namespace cairn
