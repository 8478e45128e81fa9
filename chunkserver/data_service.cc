// The chunkserver's RPC service: reads, the pushed-data buffers, the GFS write path
// (primary orders, applies, forwards to secondaries), server-side copies, and the
// master's version, lease, truncate and copy calls. Disk work runs on the DiskPool; state
// lives on the event loop. A failed data operation names each replica that failed and
// why (DataOutcome), so that nobody has to read it out of a message.

#include <fmt/format.h>
#include <kj/debug.h>

#include <map>

#include "chunkserver.h"
#include "log.h"
#include "parallel.h"

namespace cairn {

constexpr uint32_t MAX_READ = 4 << 20;
// Reads up to this size are tried on the event loop first (ChunkStore::readNow); larger
// ones, whose checksums and copies take longer than the hand-off, go to the pool, where
// they run beside the loop.
constexpr uint32_t READ_NOW_MAX = 128 << 10;
constexpr uint32_t MAX_PUSH = 4 << 20;
constexpr uint32_t MAX_PUSH_FROM = 64 << 20;
constexpr uint32_t FORWARD_PIECE = 1 << 20;
constexpr size_t MAX_CHAIN = 16;
constexpr uint32_t MAX_LEASE_MS = 600'000;
// Those bytes, shared by the local write and the forwards to the secondaries; null when
// the mutation takes a pushed buffer or none.
using InlineBytes = std::shared_ptr<const std::string>;

class ChunkServerImpl final : public wire::ChunkServer::Server, private kj::TaskSet::ErrorHandler {
 public:
  explicit ChunkServerImpl(Chunkserver& cs)
      : cs(cs), store(cs.store()), pool(cs.pool()), self(cs.options().address), tasks(*this) {
    tasks.add(expireBuffers());
  }

  kj::Promise<void> read(ReadContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), offset = p.getOffset();
    uint32_t length = p.getLength();
    if (length > MAX_READ || offset + length > store.maxChunkSize()) {
      return fail(context, Status::invalidArgument(fmt::format(
                               "read of {} bytes at {} is out of bounds", length, offset)));
    }
    // A small read whose bytes are in memory is answered at once: a trip to a pool
    // thread and back would cost more than the read.
    if (length <= READ_NOW_MAX) {
      Result<std::string> r;
      if (auto now = store.readNow(handle, version, offset, length, r.value)) {
        r.status = *now;
        if (r.ok()) cs.metrics().add("cairn_chunkserver_reads_from_memory_total", {}, 1);
        answerRead(context, handle, r);
        return kj::READY_NOW;
      }
    }
    return pool
        .run([this, handle, version, offset, length]() {
          Result<std::string> r;
          r.status = store.read(handle, version, offset, length, r.value);
          return r;
        })
        .then([this, context, handle](Result<std::string> r) mutable {
          answerRead(context, handle, r);
        });
  }

  kj::Promise<void> readExtents(ReadExtentsContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), offset = p.getOffset();
    uint32_t length = p.getLength();
    if (length > MAX_READ || offset + length > store.maxChunkSize()) {
      return fail(context, Status::invalidArgument("extent read out of bounds"));
    }
    return extentsOf(self, handle, version, offset, length)
        .then([context](Result<ExtentList> r) mutable {
          auto results = context.getResults();
          toWire(r.status, results.initStatus());
          if (!r.ok()) return;
          results.setChunkLength(r.value.chunkLength);
          auto list = results.initExtents(static_cast<uint>(r.value.extents.size()));
          for (size_t i = 0; i < r.value.extents.size(); ++i) {
            auto& x = r.value.extents[i];
            list[i].setOffset(static_cast<uint32_t>(x.offset));
            list[i].setData(capnp::Data::Reader(
                reinterpret_cast<const capnp::byte*>(x.bytes.data()), x.bytes.size()));
          }
        });
  }

  kj::Promise<void> blockMap(BlockMapContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    return pool
        .run([this, handle, version]() {
          std::pair<Result<std::string>, uint64_t> r;
          r.first.status = store.blockMap(handle, version, r.first.value, r.second);
          return r;
        })
        .then([context](std::pair<Result<std::string>, uint64_t> r) mutable {
          auto results = context.getResults();
          toWire(r.first.status, results.initStatus());
          if (!r.first.ok()) return;
          results.setLength(r.second);
          results.setBitmap(capnp::Data::Reader(
              reinterpret_cast<const capnp::byte*>(r.first.value.data()), r.first.value.size()));
        });
  }

  kj::Promise<void> pushData(PushDataContext context) override {
    auto p = context.getParams();
    auto data = p.getData();
    uint64_t dataId = p.getDataId();
    uint32_t total = p.getTotalLength(), offset = p.getOffset();
    auto chain = p.getChain();
    if (chain.size() > MAX_CHAIN || data.size() > MAX_PUSH) {
      return failData(context, Status::invalidArgument("push out of bounds"));
    }
    Status stored = storePiece(dataId, total, offset, data);
    if (!stored.ok()) return failData(context, stored);
    cs.metrics().add("cairn_chunkserver_received_bytes_total", {},
                     static_cast<double>(data.size()));
    if (chain.size() == 0) {
      toWire(DataOutcome(), context.getResults());
      return kj::READY_NOW;
    }
    // Forward down the chain; the sender hears back once every replica holds the piece.
    std::vector<std::string> rest;
    for (uint i = 1; i < chain.size(); ++i) rest.emplace_back(chain[i]);
    // The piece stays in this call's parameters until the forward is answered.
    return forwardPiece(chain[0], std::move(rest), dataId, total, offset, data)
        .then([context](DataOutcome r) mutable { toWire(r, context.getResults()); });
  }

  kj::Promise<void> pushFrom(PushFromContext context) override {
    auto p = context.getParams();
    uint64_t dataId = p.getDataId(), handle = p.getSourceHandle(), version = p.getSourceVersion();
    uint32_t offset = p.getSourceOffset(), length = p.getLength();
    std::string source = p.getSource();
    auto chain = p.getChain();
    if (chain.size() > MAX_CHAIN || length == 0 || length > MAX_PUSH_FROM ||
        uint64_t{offset} + length > store.maxChunkSize()) {
      return failData(context, Status::invalidArgument("copy out of bounds"));
    }
    Status s = storePiece(dataId, length, 0, nullptr);  // makes the buffer, or refuses
    if (!s.ok()) return failData(context, s);
    std::vector<std::string> next;
    for (auto c : chain) next.emplace_back(c);
    return fillFromSource(dataId, source, handle, version, offset, length)
        .then([this, dataId, length,
               next = std::move(next)](Status s) mutable -> kj::Promise<DataOutcome> {
          if (!s.ok()) {
            // The source failed, not a replica of the chunk being written: no failures
            // named, so that the writer tries another source.
            dropBuffer(dataId);
            return DataOutcome(s);
          }
          if (next.empty()) return DataOutcome();
          return forwardBuffer(dataId, length, std::move(next));
        })
        .then([context](DataOutcome r) mutable { toWire(r, context.getResults()); });
  }

  kj::Promise<void> write(WriteContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), dataId = p.getDataId();
    uint32_t offset = p.getOffset(), length = p.getLength();
    auto mutation = p.getMutation();
    if (p.getSecondaries().size() > MAX_CHAIN) {
      return failData(context, Status::invalidArgument("too many secondaries"));
    }
    kj::Own<void> carried;
    auto bytes = inlineBytes(p.hasData(), p.getData(), dataId, length, mutation, carried);
    if (!bytes.ok()) return failData(context, bytes.status);
    Status held = leaseHeld(handle, version);
    if (!held.ok()) return failData(context, held);
    if (bytes.value) {
      cs.metrics().add("cairn_chunkserver_received_bytes_total", {}, static_cast<double>(length));
    }
    std::vector<std::string> secondaries;
    for (auto s : p.getSecondaries()) secondaries.emplace_back(s);
    return serialized<DataOutcome>(
               handle,
               [this, handle, version, offset, dataId, length, mutation,
                secondaries = std::move(secondaries), bytes = kj::mv(bytes.value)]() mutable {
                 return applyEverywhere(std::move(secondaries), handle, version, offset, dataId,
                                        length, mutation, kj::mv(bytes));
               })
        .then([context](DataOutcome r) mutable { toWire(r, context.getResults()); })
        .attach(kj::mv(carried));
  }

  kj::Promise<void> append(AppendContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), dataId = p.getDataId();
    uint32_t length = p.getLength(), minOffset = p.getMinOffset();
    if (p.getSecondaries().size() > MAX_CHAIN) {
      return failData(context, Status::invalidArgument("too many secondaries"));
    }
    if (length == 0 || length > store.maxChunkSize() / 4 || minOffset > store.maxChunkSize()) {
      return failData(context, Status::invalidArgument(fmt::format(
                                   "a record of {} bytes (at most a quarter of a chunk) at or "
                                   "after {} is out of bounds",
                                   length, minOffset)));
    }
    Status held = leaseHeld(handle, version);
    if (!held.ok()) return failData(context, held);
    std::vector<std::string> secondaries;
    for (auto s : p.getSecondaries()) secondaries.emplace_back(s);
    // The end of the chunk is read in the primary's order of mutations, after every
    // earlier one has been applied everywhere: that order makes appends atomic. (The step
    // runs to its end even if this call is cancelled: it owns everything it touches.)
    using Landed = std::pair<DataOutcome, uint32_t>;
    return serialized<Landed>(
               handle,
               [this, handle, version, dataId, length, minOffset,
                secondaries = std::move(secondaries)]() mutable {
                 return pool
                     .run([this, handle, version]() { return store.lengthOf(handle, version); })
                     .then([this, handle, version, dataId, length, minOffset,
                            secondaries = std::move(secondaries)](
                               Result<uint64_t> end) mutable -> kj::Promise<Landed> {
                       if (!end.ok()) return Landed{DataOutcome::of(self, end.status), 0};
                       uint64_t chunk = store.maxChunkSize();
                       uint32_t offset =
                           static_cast<uint32_t>(std::max<uint64_t>(end.value, minOffset));
                       if (uint64_t{offset} + length <= chunk) {
                         return applyEverywhere(std::move(secondaries), handle, version, offset,
                                                dataId, length, wire::Mutation::DATA, nullptr)
                             .then([offset](DataOutcome o) {
                               return Landed{kj::mv(o), offset};
                             });
                       }
                       // It does not fit: pad the chunk to its end everywhere, so that the
                       // next record goes to the next chunk.
                       return applyEverywhere(std::move(secondaries), handle, version, offset,
                                              dataId, static_cast<uint32_t>(chunk - offset),
                                              wire::Mutation::PAD, nullptr)
                           .then([](DataOutcome o) {
                             if (!o.ok()) return Landed{kj::mv(o), 0};
                             return Landed{DataOutcome(Status(ErrorCode::CHUNK_FULL,
                                                              "the record does not fit in the "
                                                              "chunk")),
                                           0};
                           });
                     });
               })
        .then([context](Landed r) mutable {
          auto results = context.getResults();
          toWire(r.first, results);
          if (r.first.ok()) results.setOffset(r.second);
        });
  }

  kj::Promise<void> applyWrite(ApplyWriteContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), dataId = p.getDataId();
    uint32_t offset = p.getOffset(), length = p.getLength();
    auto mutation = p.getMutation();
    kj::Own<void> carried;
    auto bytes = inlineBytes(p.hasData(), p.getData(), dataId, length, mutation, carried);
    if (!bytes.ok()) return fail(context, bytes.status);
    if (bytes.value) {
      cs.metrics().add("cairn_chunkserver_received_bytes_total", {}, static_cast<double>(length));
    }
    return serialized<Status>(handle,
                              [this, handle, version, offset, dataId, length, mutation,
                               bytes = kj::mv(bytes.value)]() mutable {
                                return apply(handle, version, offset, dataId, length, mutation,
                                             kj::mv(bytes));
                              })
        .then([context](Status s) mutable { toWire(s, context.getResults().initStatus()); })
        .attach(kj::mv(carried));
  }

  kj::Promise<void> setVersion(SetVersionContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    bool create = p.getCreate();
    uint32_t leaseMs = std::min<uint32_t>(p.getLeaseMs(), MAX_LEASE_MS);
    leases.erase(handle);  // a new version means a new lease is coming
    return serialized<Status>(handle,
                              [this, handle, version, create]() {
                                return pool.run([this, handle, version, create]() {
                                  return create ? store.create(handle, version)
                                                : store.setVersion(handle, version);
                                });
                              })
        .then([this, context, handle, version, leaseMs](Status s) mutable {
          cs.replicasChanged();
          // (A late or repeated create finds the chunk at a newer version: no lease then.)
          if (s.ok() && leaseMs > 0 && store.versionOf(handle) == version) {
            leases[handle] = Lease{version, cs.timer().now() + leaseMs * kj::MILLISECONDS};
          }
          toWire(s, context.getResults().initStatus());
        });
  }

  kj::Promise<void> grantLease(GrantLeaseContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    uint64_t current = store.versionOf(handle);
    if (current != version) {
      return fail(context,
                  Status::staleVersion(fmt::format("chunk {:x} is at version {}, lease is for {}",
                                                   handle, current, version)));
    }
    uint32_t ms = std::min<uint32_t>(p.getDurationMs(), MAX_LEASE_MS);
    leases[handle] = Lease{version, cs.timer().now() + ms * kj::MILLISECONDS};
    toWire(Status::OK(), context.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> truncate(TruncateContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion(), length = p.getLength();
    leases.erase(handle);
    return serialized<Status>(handle,
                              [this, handle, version, length]() {
                                return pool.run([this, handle, version, length]() {
                                  return store.truncate(handle, version, length);
                                });
                              })
        .then([this, context](Status s) mutable {
          cs.replicasChanged();
          toWire(s, context.getResults().initStatus());
        });
  }

  kj::Promise<void> sync(SyncContext context) override {
    uint64_t handle = context.getParams().getHandle();
    return serialized<Status>(handle,
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
    return serialized<Status>(
               handle,
               [this, handle, version, source]() {
                 return pool
                     .run([this, handle, version]() {
                       // The master copies only to a server that holds no current replica:
                       // one here is stale by definition and goes.
                       if (store.has(handle)) store.remove(handle);
                       return store.create(handle, version);
                     })
                     .then([this, handle, version, source](Status s) -> kj::Promise<Status> {
                       if (!s.ok()) return s;
                       return copyFrom(source, handle, version, handle, version);
                     })
                     .then([this, handle](Status s) -> kj::Promise<Status> {
                       if (s.ok()) return s;
                       return pool.run([this, handle, s]() {
                         store.remove(handle);  // never keep a partial copy
                         return s;
                       });
                     });
               })
        .then([this, context, handle](Status s) mutable {
          cs.replicasChanged();
          if (s.ok()) logInfo("chunk {:x}: copied in", handle);
          toWire(s, context.getResults().initStatus());
        });
  }

  kj::Promise<void> copyChunk(CopyChunkContext context) override {
    auto p = context.getParams();
    uint64_t handle = p.getHandle(), version = p.getVersion();
    uint64_t fresh = p.getNewHandle(), freshVersion = p.getNewVersion();
    if (fresh == handle || freshVersion == 0) {
      return fail(context, Status::invalidArgument("a copy needs a new handle and a version"));
    }
    // In the source's order of mutations: a version change or a delete waits for the copy.
    return serialized<Status>(
               handle,
               [this, handle, version, fresh, freshVersion]() {
                 return pool
                     .run([this, handle, version, fresh, freshVersion]() {
                       uint64_t current = store.versionOf(handle);
                       if (current != version) {
                         return Status::staleVersion(fmt::format(
                             "chunk {:x} is at version {}, not {}", handle, current, version));
                       }
                       if (store.has(fresh)) store.remove(fresh);  // a copy begun before
                       return store.create(fresh, freshVersion);
                     })
                     .then([this, handle, version, fresh,
                            freshVersion](Status s) -> kj::Promise<Status> {
                       if (!s.ok()) return s;
                       return copyFrom(self, handle, version, fresh, freshVersion);
                     })
                     .then([this, fresh](Status s) -> kj::Promise<Status> {
                       if (s.ok() || s.code() == ErrorCode::STALE_VERSION) return s;
                       return pool.run([this, fresh, s]() {
                         store.remove(fresh);  // never keep a partial copy
                         return s;
                       });
                     });
               })
        .then([this, context, handle, fresh](Status s) mutable {
          cs.replicasChanged();
          if (s.ok()) logInfo("chunk {:x}: copied to {:x} here", handle, fresh);
          toWire(s, context.getResults().initStatus());
        });
  }

 private:
  void answerRead(ReadContext& context, uint64_t handle, const Result<std::string>& r) {
    auto results = context.getResults();
    if (r.status.code() == ErrorCode::REPLICA_CORRUPT) {
      logError("chunk {:x}: {}", handle, r.status.message());
    }
    toWire(r.status, results.initStatus());
    if (r.ok()) {
      results.setData(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(r.value.data()),
                                          r.value.size()));
      cs.metrics().add("cairn_chunkserver_read_bytes_total", {},
                       static_cast<double>(r.value.size()));
    }
  }

  struct ExtentList {
    uint64_t chunkLength = 0;
    std::vector<Extent> extents;
  };

  // The written parts of a range of the replica at `source`: this server's own store, or
  // another chunkserver over RPC.
  kj::Promise<Result<ExtentList>> extentsOf(const std::string& source, uint64_t handle,
                                            uint64_t version, uint64_t offset, uint32_t length) {
    if (source == self) {
      return pool.run([this, handle, version, offset, length]() {
        Result<ExtentList> r;
        r.status = store.readExtents(handle, version, offset, length, r.value.extents,
                                     r.value.chunkLength);
        return r;
      });
    }
    auto req = cs.peers().get<wire::ChunkServer>(source, Role::CHUNKSERVER).readExtentsRequest();
    req.setHandle(handle);
    req.setVersion(version);
    req.setOffset(static_cast<uint32_t>(offset));
    req.setLength(length);
    return cs.timer()
        .timeoutAfter(cs.options().rpcTimeout, req.send())
        .then(
            [source](auto response) -> Result<ExtentList> {
              Status s = fromWire(response.getStatus());
              if (!s.ok())
                return Status(s.code(), fmt::format("source {}: {}", source, s.message()));
              ExtentList out;
              out.chunkLength = response.getChunkLength();
              for (auto x : response.getExtents()) {
                auto d = x.getData();
                out.extents.push_back(
                    {x.getOffset(),
                     std::string(reinterpret_cast<const char*>(d.begin()), d.size())});
              }
              return out;
            },
            [this, source](kj::Exception&& e) -> Result<ExtentList> {
              cs.peers().drop(source);
              return Status::unavailable(
                  fmt::format("source {}: {}", source, e.getDescription().cStr()));
            });
  }

  // Copies the replica of `handle` at `version` on `source` (this server or another) into
  // the store's chunk `to` at `toVersion`, holes left as holes, MAX_READ at a time with a
  // few reads in flight; the copy then takes the source's length.
  kj::Promise<Status> copyFrom(std::string source, uint64_t handle, uint64_t version, uint64_t to,
                               uint64_t toVersion) {
    size_t pieces = (store.maxChunkSize() + MAX_READ - 1) / MAX_READ;
    auto length = kj::heap<uint64_t>(0);
    uint64_t* lengthPtr = length.get();
    return runLimited(pieces, 4,
                      [this, source, handle, version, to, toVersion, lengthPtr](size_t i) {
                        uint64_t offset = uint64_t{i} * MAX_READ;
                        uint32_t n = static_cast<uint32_t>(
                            std::min<uint64_t>(MAX_READ, store.maxChunkSize() - offset));
                        return extentsOf(source, handle, version, offset, n)
                            .then([this, to, toVersion,
                                   lengthPtr](Result<ExtentList> r) -> kj::Promise<Status> {
                              if (!r.ok()) return r.status;
                              *lengthPtr = r.value.chunkLength;
                              if (r.value.extents.empty()) return Status::OK();
                              auto list = kj::heap<ExtentList>(std::move(r.value));
                              auto& ref = *list;
                              return pool
                                  .run([this, to, toVersion, &ref]() {
                                    for (auto& x : ref.extents) {
                                      Status s = store.write(to, toVersion, x.offset, x.bytes);
                                      if (!s.ok()) return s;
                                    }
                                    return Status::OK();
                                  })
                                  .attach(kj::mv(list));
                            });
                      })
        .then([this, to, toVersion, length = kj::mv(length)](Status s) -> kj::Promise<Status> {
          if (!s.ok()) return s;
          uint64_t n = *length;
          return pool.run([this, to, toVersion, n]() { return store.truncate(to, toVersion, n); });
        });
  }

  // Fills buffer `dataId` (made by storePiece) with [offset, offset+length) of the source
  // replica, MAX_READ at a time.
  kj::Promise<Status> fillFromSource(uint64_t dataId, std::string source, uint64_t handle,
                                     uint64_t version, uint32_t offset, uint32_t length) {
    size_t pieces = (length + MAX_READ - 1) / MAX_READ;
    return runLimited(pieces, 2, [this, dataId, source, handle, version, offset, length](size_t i) {
      uint32_t at = static_cast<uint32_t>(i * MAX_READ);
      uint32_t n = std::min<uint32_t>(MAX_READ, length - at);
      return extentsOf(source, handle, version, uint64_t{offset} + at, n)
          .then([this, dataId, offset, at, n](Result<ExtentList> r) {
            if (!r.ok()) return r.status;
            auto it = buffers.find(dataId);
            if (it == buffers.end()) {
              return Status(ErrorCode::DATA_NOT_PUSHED, "copy buffer expired while filling");
            }
            Buffer& b = it->second;
            // The buffer is zeros where the source has holes. What the source sent must lie
            // in the piece asked for.
            uint64_t pieceStart = uint64_t{offset} + at, pieceEnd = pieceStart + n;
            for (auto& x : r.value.extents) {
              if (x.offset < pieceStart || x.offset + x.bytes.size() > pieceEnd) {
                return Status::invalidArgument("the source sent bytes outside the range asked for");
              }
            }
            for (auto& x : r.value.extents) {
              memcpy(b.bytes.data() + (x.offset - offset), x.bytes.data(), x.bytes.size());
            }
            b.pieces[at] = n;
            b.touched = cs.timer().now();
            return Status::OK();
          });
    });
  }

  // Pushes the whole of buffer `dataId` down `chain`, a piece at a time.
  kj::Promise<DataOutcome> forwardBuffer(uint64_t dataId, uint32_t length,
                                         std::vector<std::string> chain) {
    size_t pieces = (length + FORWARD_PIECE - 1) / FORWARD_PIECE;
    auto outcome = kj::heap<DataOutcome>();
    DataOutcome* out = outcome.get();
    std::string next = chain[0];
    std::vector<std::string> rest(chain.begin() + 1, chain.end());
    // Pinned while its pieces are on their way (they are sent from it without a copy).
    auto pinned = buffers.find(dataId);
    if (pinned != buffers.end()) pinned->second.pins++;
    return runLimited(pieces, 4,
                      [this, dataId, length, next, rest, out](size_t i) -> kj::Promise<Status> {
                        auto it = buffers.find(dataId);
                        if (it == buffers.end()) {
                          return Status(ErrorCode::DATA_NOT_PUSHED, "copy buffer expired");
                        }
                        uint32_t at = static_cast<uint32_t>(i * FORWARD_PIECE);
                        uint32_t n = std::min<uint32_t>(FORWARD_PIECE, length - at);
                        auto piece = capnp::Data::Reader(
                            reinterpret_cast<const capnp::byte*>(it->second.bytes.data()) + at, n);
                        return forwardPiece(next, rest, dataId, length, at, piece)
                            .then([out](DataOutcome r) {
                              if (!r.ok() && out->ok()) *out = r;
                              return r.status;
                            });
                      })
        .then([this, dataId, outcome = kj::mv(outcome)](Status s) mutable {
          auto it = buffers.find(dataId);
          if (it != buffers.end() && it->second.pins > 0) it->second.pins--;
          if (!s.ok() && outcome->ok()) return DataOutcome(s);
          return kj::mv(*outcome);
        });
  }

  // Sends one piece of buffer `dataId` to `next`, which forwards it along `rest`. `data`
  // must stay valid until the returned promise resolves.
  kj::Promise<DataOutcome> forwardPiece(const std::string& next, std::vector<std::string> rest,
                                        uint64_t dataId, uint32_t total, uint32_t offset,
                                        capnp::Data::Reader data) {
    auto req = cs.peers().get<wire::ChunkServer>(next, Role::CHUNKSERVER).pushDataRequest();
    req.setDataId(dataId);
    req.setTotalLength(total);
    req.setOffset(offset);
    setDataNoCopy(wire::ChunkServer::PushDataParams::Builder(req),
                  kj::arrayPtr(data.begin(), data.size()),
                  [&](capnp::Orphan<capnp::Data>&& o) { req.adoptData(kj::mv(o)); });
    auto chain = req.initChain(static_cast<uint>(rest.size()));
    for (size_t i = 0; i < rest.size(); ++i) chain.set(static_cast<uint>(i), rest[i]);
    return cs.timer()
        .timeoutAfter(cs.options().rpcTimeout, req.send())
        .then(
            [](auto response) {
              return DataOutcome(fromWire(response.getStatus()), fromWire(response.getFailures()));
            },
            [this, next](kj::Exception&& e) {
              cs.peers().drop(next);
              return DataOutcome::of(
                  next, Status::unavailable(
                            fmt::format("chunkserver {}: {}", next, e.getDescription().cStr())));
            });
  }

  struct Buffer {
    std::string bytes;
    std::map<uint32_t, uint32_t> pieces;  // offset -> length received
    kj::TimePoint touched = kj::origin<kj::TimePoint>();
    uint32_t pins = 0;  // forwards reading from it: it does not expire while any runs
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

  // Stores one piece of buffer `dataId` (or, with no data, only makes the buffer).
  Status storePiece(uint64_t dataId, uint32_t total, uint32_t offset, capnp::Data::Reader data) {
    if (total == 0 || total > store.maxChunkSize() || uint64_t{offset} + data.size() > total) {
      return Status::invalidArgument("push out of bounds");
    }
    auto it = buffers.find(dataId);
    if (it == buffers.end()) {
      if (buffered + total > cs.options().bufferLimitBytes) {
        return Status(ErrorCode::BUSY, "push buffers full; retry later");
      }
      it = buffers.emplace(dataId, Buffer{}).first;
      it->second.bytes.resize(total);
      buffered += total;
    } else if (it->second.bytes.size() != total) {
      return Status::invalidArgument("push length differs from earlier pieces");
    }
    Buffer& b = it->second;
    if (data.size() > 0) {
      memcpy(b.bytes.data() + offset, data.begin(), data.size());
      b.pieces[offset] = static_cast<uint32_t>(data.size());
    }
    b.touched = cs.timer().now();
    return Status::OK();
  }

  void dropBuffer(uint64_t dataId) {
    auto it = buffers.find(dataId);
    if (it == buffers.end()) return;
    buffered -= it->second.bytes.size();
    buffers.erase(it);
  }

  template <typename Context>
  kj::Promise<void> fail(Context& context, const Status& s) {
    toWire(s, context.getResults().initStatus());
    return kj::READY_NOW;
  }

  // A data call that failed here, before any other replica was involved.
  template <typename Context>
  kj::Promise<void> failData(Context& context, const Status& s) {
    toWire(DataOutcome::of(self, s), context.getResults());
    return kj::READY_NOW;
  }

  // Runs `step` after every earlier step for `handle`, so that all replicas apply
  // mutations of a chunk in the order the primary chose.
  template <typename T>
  kj::Promise<T> serialized(uint64_t handle, kj::Function<kj::Promise<T>()> step) {
    kj::Promise<void> before = kj::READY_NOW;
    auto it = tails.find(handle);
    if (it != tails.end()) before = it->second.addBranch();
    auto run = before.then([step = kj::mv(step)]() mutable { return step(); }).fork();
    uint64_t gen = ++tailGeneration;
    tails.insert_or_assign(handle,
                           run.addBranch().ignoreResult().catch_([](kj::Exception&&) {}).fork());
    tailGen[handle] = gen;
    return run.addBranch().then([this, handle, gen](T r) {
      if (tailGen[handle] == gen) {
        tails.erase(handle);
        tailGen.erase(handle);
      }
      return r;
    });
  }

  // The bytes a write or applyWrite carries, checked against the rest of the call: only
  // for a data mutation of that length without a pushed buffer, at most
  // wire::MAX_INLINE_WRITE. They count as buffered (the pushes' limit) until `held` goes.
  Result<InlineBytes> inlineBytes(bool has, capnp::Data::Reader data, uint64_t dataId,
                                  uint32_t length, wire::Mutation mutation, kj::Own<void>& held) {
    if (!has) return Result<InlineBytes>(InlineBytes());
    if (mutation != wire::Mutation::DATA || dataId != 0 || data.size() != length ||
        length > wire::MAX_INLINE_WRITE) {
      return Result<InlineBytes>(Status::invalidArgument(fmt::format(
          "a write's own bytes are for a data write of that length (at most {}) without a "
          "pushed buffer",
          wire::MAX_INLINE_WRITE)));
    }
    if (buffered + length > cs.options().bufferLimitBytes) {
      return Result<InlineBytes>(Status(ErrorCode::BUSY, "push buffers full; retry later"));
    }
    buffered += length;
    held = kj::heap(kj::defer([this, length]() { buffered -= length; }));
    return Result<InlineBytes>(std::make_shared<const std::string>(
        reinterpret_cast<const char*>(data.begin()), data.size()));
  }

  // Whether this server is the primary of `handle` at `version`, with an unexpired lease.
  Status leaseHeld(uint64_t handle, uint64_t version) {
    auto lease = leases.find(handle);
    if (lease == leases.end() || lease->second.version != version) {
      return Status(ErrorCode::NOT_PRIMARY,
                    fmt::format("no lease on chunk {:x} at version {}", handle, version));
    }
    if (cs.timer().now() >= lease->second.expiry) {
      return Status(ErrorCode::LEASE_EXPIRED, fmt::format("lease on chunk {:x} expired", handle));
    }
    return Status::OK();
  }

  // The primary's part of a mutation (inside serialized()): applies it here and has every
  // secondary apply it at once; the order is fixed by serialized(), which sends each
  // applyWrite before any later mutation of this chunk can start, and the secondaries
  // apply in the order the primary forwards, over one connection each. Names every
  // replica that failed, this one first.
  kj::Promise<DataOutcome> applyEverywhere(std::vector<std::string> secondaries, uint64_t handle,
                                           uint64_t version, uint32_t offset, uint64_t dataId,
                                           uint32_t length, wire::Mutation mutation,
                                           InlineBytes bytes) {
    auto local = apply(handle, version, offset, dataId, length, mutation, bytes);
    auto remote = forwardApply(std::move(secondaries), handle, version, offset, dataId, length,
                               mutation, bytes);
    return local.then([this, remote = kj::mv(remote)](Status s) mutable {
      return remote.then([this, s](std::vector<ReplicaFailure> failed) {
        if (!s.ok()) failed.insert(failed.begin(), ReplicaFailure{self, s});
        if (failed.empty()) return DataOutcome();
        Status first(failed[0].status.code(),
                     fmt::format("{}: {}", failed[0].address, failed[0].status.message()));
        return DataOutcome(std::move(first), std::move(failed));
      });
    });
  }

  kj::Promise<Status> apply(uint64_t handle, uint64_t version, uint32_t offset, uint64_t dataId,
                            uint32_t length, wire::Mutation mutation, InlineBytes bytes) {
    if (uint64_t{offset} + length > store.maxChunkSize()) {
      return Status::invalidArgument("mutation past the end of the chunk");
    }
    switch (mutation) {
      case wire::Mutation::DATA:
        if (bytes) {
          return pool.run([this, handle, version, offset, bytes = kj::mv(bytes)]() {
            return store.write(handle, version, offset, *bytes);
          });
        }
        return applyBuffer(handle, version, offset, dataId, length);
      case wire::Mutation::PUNCH:
        return pool.run([this, handle, version, offset, length]() {
          return store.punch(handle, version, offset, length);
        });
      case wire::Mutation::ALLOCATE:
        return pool.run([this, handle, version, offset, length]() {
          return store.allocate(handle, version, offset, length);
        });
      case wire::Mutation::PAD:
        if (dataId != 0) dropBuffer(dataId);  // the record pushed for it goes elsewhere
        return pool.run([this, handle, version, offset, length]() {
          return store.extend(handle, version, uint64_t{offset} + length);
        });
    }
    return Status::invalidArgument("unknown mutation");
  }

  kj::Promise<Status> applyBuffer(uint64_t handle, uint64_t version, uint32_t offset,
                                  uint64_t dataId, uint32_t length) {
    auto it = buffers.find(dataId);
    if (it == buffers.end() || !it->second.complete() || it->second.bytes.size() != length ||
        it->second.pins > 0) {
      return Status(
          ErrorCode::DATA_NOT_PUSHED,
          fmt::format("data {:x} for chunk {:x} was not pushed here in full", dataId, handle));
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

  // Has every secondary apply the mutation; resolves to those that failed.
  kj::Promise<std::vector<ReplicaFailure>> forwardApply(std::vector<std::string> secondaries,
                                                        uint64_t handle, uint64_t version,
                                                        uint32_t offset, uint64_t dataId,
                                                        uint32_t length, wire::Mutation mutation,
                                                        const InlineBytes& bytes) {
    kj::Vector<kj::Promise<Status>> calls;
    for (auto& address : secondaries) {
      auto req = cs.peers().get<wire::ChunkServer>(address, Role::CHUNKSERVER).applyWriteRequest();
      req.setHandle(handle);
      req.setVersion(version);
      req.setOffset(offset);
      req.setDataId(dataId);
      req.setLength(length);
      req.setMutation(mutation);
      if (bytes) {
        req.setData(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(bytes->data()),
                                        bytes->size()));
      }
      calls.add(forward(kj::mv(req), address));
    }
    return kj::joinPromises(calls.releaseAsArray())
        .then([secondaries = std::move(secondaries)](kj::Array<Status> results) {
          std::vector<ReplicaFailure> failed;
          for (size_t i = 0; i < results.size(); ++i) {
            if (!results[i].ok()) failed.push_back({secondaries[i], results[i]});
          }
          return failed;
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
        if (it->second.pins == 0 && now - it->second.touched > cs.options().bufferIdleLimit) {
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
  std::string self;  // this chunkserver's address, as failures name it
  std::map<uint64_t, Buffer> buffers;
  uint64_t buffered = 0;
  std::map<uint64_t, Lease> leases;
  std::map<uint64_t, kj::ForkedPromise<void>> tails;
  std::map<uint64_t, uint64_t> tailGen;
  uint64_t tailGeneration = 0;
  kj::TaskSet tasks;
};

// What one peer may call (see schema/chunkserver.capnp): checks, then hands the call to
// the one ChunkServerImpl. Peers are known by their certificates; without TLS
// (--insecure) every peer is trusted.
class ChunkServerGate final : public wire::ChunkServer::Server {
 public:
  // `masterLink`: the link to the master this capability was given to, if any.
  ChunkServerGate(Chunkserver& cs, ChunkServerImpl& impl, wire::ChunkServer::Client keep,
                  Identity peer, std::optional<size_t> masterLink = std::nullopt)
      : cs(cs), impl(impl), keep(kj::mv(keep)), peer(std::move(peer)), masterLink(masterLink) {}

  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    return cs.calls().measure(methodId, context, [&]() {
      return wire::ChunkServer::Server::dispatchCall(interfaceId, methodId, context);
    });
  }

  kj::Promise<void> read(ReadContext context) override {
    auto p = context.getParams();
    if (refused(context, reading(p.getToken(), p.getHandle(), p.getVersion())))
      return kj::READY_NOW;
    return impl.read(context);
  }
  kj::Promise<void> readExtents(ReadExtentsContext context) override {
    auto p = context.getParams();
    if (refused(context, reading(p.getToken(), p.getHandle(), p.getVersion())))
      return kj::READY_NOW;
    return impl.readExtents(context);
  }
  kj::Promise<void> blockMap(BlockMapContext context) override {
    auto p = context.getParams();
    if (refused(context, reading(p.getToken(), p.getHandle(), p.getVersion())))
      return kj::READY_NOW;
    return impl.blockMap(context);
  }
  kj::Promise<void> pushData(PushDataContext context) override {
    // Pushed bytes wait in memory for a write: only a writer of some chunk may push.
    auto t = context.getParams().getToken();
    if (refused(context, writing(t, t.getHandle(), t.getVersion()))) return kj::READY_NOW;
    return impl.pushData(context);
  }
  kj::Promise<void> pushFrom(PushFromContext context) override {
    auto p = context.getParams();
    auto t = p.getToken();
    Status s = writing(t, t.getHandle(), t.getVersion());
    if (s.ok()) s = reading(p.getSourceToken(), p.getSourceHandle(), p.getSourceVersion());
    if (refused(context, s)) return kj::READY_NOW;
    return impl.pushFrom(context);
  }
  kj::Promise<void> write(WriteContext context) override {
    auto p = context.getParams();
    if (refused(context, writing(p.getToken(), p.getHandle(), p.getVersion())))
      return kj::READY_NOW;
    return impl.write(context);
  }
  kj::Promise<void> append(AppendContext context) override {
    auto p = context.getParams();
    if (refused(context, writing(p.getToken(), p.getHandle(), p.getVersion())))
      return kj::READY_NOW;
    return impl.append(context);
  }
  kj::Promise<void> sync(SyncContext context) override {
    auto p = context.getParams();
    auto t = p.getToken();
    Status s = t.getHandle() == p.getHandle()
                   ? reading(t, t.getHandle(), t.getVersion())
                   : Status::tokenInvalid("chunk token for another chunk");
    if (refused(context, trusted() ? Status::OK() : s)) return kj::READY_NOW;
    return impl.sync(context);
  }
  kj::Promise<void> applyWrite(ApplyWriteContext context) override {
    if (refused(context, fromChunkserver("applyWrite"))) return kj::READY_NOW;
    return impl.applyWrite(context);
  }
  kj::Promise<void> setVersion(SetVersionContext context) override {
    if (refused(context, fromMaster("setVersion"))) return kj::READY_NOW;
    return impl.setVersion(context);
  }
  kj::Promise<void> grantLease(GrantLeaseContext context) override {
    if (refused(context, fromMaster("grantLease"))) return kj::READY_NOW;
    return impl.grantLease(context);
  }
  kj::Promise<void> truncate(TruncateContext context) override {
    if (refused(context, fromMaster("truncate"))) return kj::READY_NOW;
    return impl.truncate(context);
  }
  kj::Promise<void> replicate(ReplicateContext context) override {
    if (refused(context, fromMaster("replicate"))) return kj::READY_NOW;
    return impl.replicate(context);
  }
  kj::Promise<void> copyChunk(CopyChunkContext context) override {
    if (refused(context, fromMaster("copyChunk"))) return kj::READY_NOW;
    return impl.copyChunk(context);
  }

 private:
  // The master (on the link this chunkserver made to it), or anyone without TLS.
  bool trusted() const { return !peer.authenticated || peer.role == Role::MASTER; }
  // Chunkservers copy and forward among themselves without tokens.
  bool infrastructure() const { return trusted() || peer.role == Role::CHUNKSERVER; }

  Status reading(wire::ChunkToken::Reader t, uint64_t handle, uint64_t version) {
    if (infrastructure()) return Status::OK();
    return cs.checkToken(t, handle, version, TokenMode::READ);
  }
  Status writing(wire::ChunkToken::Reader t, uint64_t handle, uint64_t version) {
    if (infrastructure()) return Status::OK();
    return cs.checkToken(t, handle, version, TokenMode::WRITE);
  }
  Status fromChunkserver(const char* call) {
    if (infrastructure()) return Status::OK();
    return Status::notPermitted(
        fmt::format("{} is for chunkservers, not a {} certificate", call, roleName(peer.role)));
  }
  Status fromMaster(const char* call) {
    // Fencing: of the masters, only the active one with the highest epoch gives orders.
    if (masterLink) {
      Status s = cs.ordersFrom(*masterLink);
      if (!s.ok()) cs.ordersRefused(*masterLink);
      return s;
    }
    if (trusted()) return Status::OK();
    return Status::notPermitted(
        fmt::format("{} is for the master, not a {} certificate", call, roleName(peer.role)));
  }
  template <typename Context>
  bool refused(Context& context, const Status& s) {
    if (s.ok()) return false;
    logDebug("refused a call from {} {}: {}", roleName(peer.role), peer.name, s.toString());
    toWire(s, context.getResults().initStatus());
    return true;
  }

  Chunkserver& cs;
  ChunkServerImpl& impl;
  wire::ChunkServer::Client keep;  // keeps `impl` alive
  Identity peer;
  std::optional<size_t> masterLink;
};

wire::ChunkServer::Client newChunkServerImpl(Chunkserver& cs, ChunkServerImpl*& raw) {
  auto impl = kj::heap<ChunkServerImpl>(cs);
  raw = impl.get();
  return kj::mv(impl);
}

wire::ChunkServer::Client Chunkserver::capabilityFor(const Identity& peer) {
  return kj::heap<ChunkServerGate>(*this, *impl, cap, peer);
}

wire::ChunkServer::Client Chunkserver::capabilityForMaster(size_t link) {
  // Given over the connection this chunkserver made, which reached a master's certificate.
  Identity master{Role::MASTER, "master", NOBODY, {}, false, true};
  return kj::heap<ChunkServerGate>(*this, *impl, cap, master, link);
}

Status Chunkserver::checkToken(wire::ChunkToken::Reader token, uint64_t handle, uint64_t version,
                               TokenMode mode) {
  if (!token.hasMac()) return Status::tokenInvalid("no chunk token: ask the master for one");
  const kj::Clock& clock = opts.clock != nullptr ? *opts.clock : kj::systemPreciseCalendarClock();
  int64_t nowMs = (clock.now() - kj::UNIX_EPOCH) / kj::MILLISECONDS;
  // Each master signs with keys of its own; the token is good if one of them made it.
  ChunkToken t = fromWire(token);
  Status s = Status::tokenInvalid("no master has sent this chunkserver its keys yet");
  for (auto& link : links) {
    s = link->tokenKeys.verify(t, handle, version, mode, nowMs);
    if (s.ok()) return s;
  }
  return s;
}

}  // namespace cairn
