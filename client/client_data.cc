// The client's data path: reads, writes, appends, holes and copies, talking to the
// chunkservers (replica order, pushes and pulls, retries) with the chunk locations and
// leases the master hands out (client.cc).

#include <fmt/format.h>
#include <kj/debug.h>

#include <algorithm>
#include <cstring>

#include "address.h"
#include "client.h"
#include "log.h"
#include "parallel.h"

namespace cairn {
namespace {

constexpr uint32_t MAX_WRITE_PORTION = 8 << 20;  // one push-and-commit at most
constexpr uint32_t MAX_COPY_PORTION = 16 << 20;  // one server-side copy at most
// How long appends in a row trust the file's size from the last one's commit (a truncate
// by another client within it may leave a hole before the next record).
constexpr kj::Duration APPEND_HINT_TTL = 1 * kj::SECONDS;

bool retryable(ErrorCode code) {
  switch (code) {
    case ErrorCode::NOT_PRIMARY:
    case ErrorCode::LEASE_EXPIRED:
    case ErrorCode::STALE_VERSION:
    case ErrorCode::UNAVAILABLE:
    case ErrorCode::BUSY:
    case ErrorCode::REPLICA_CORRUPT:
    case ErrorCode::IO_ERROR:
    case ErrorCode::SAFE_MODE:
    case ErrorCode::DATA_NOT_PUSHED:
    case ErrorCode::TOKEN_INVALID:  // expired, or signed by a key the chunkserver lacks yet
      return true;
    default:
      return false;
  }
}

kj::Duration backoff(uint32_t attempt) {
  return std::min<int64_t>(100 << std::min<uint32_t>(attempt, 5), 2000) * kj::MILLISECONDS;
}

}  // namespace

std::vector<ReplicaInfo> Client::orderReplicas(const ChunkInfo& chunk) {
  std::vector<ReplicaInfo> local, remote;
  for (auto& r : chunk.replicas) {
    std::string host = hostOf(r.address);
    bool isLocal =
        std::find(opts.localHosts.begin(), opts.localHosts.end(), host) != opts.localHosts.end();
    (isLocal ? local : remote).push_back(r);
  }
  // Spread readers of different chunks over the remote replicas.
  if (!remote.empty()) {
    std::rotate(remote.begin(), remote.begin() + (chunk.handle % remote.size()), remote.end());
  }
  local.insert(local.end(), remote.begin(), remote.end());
  return local;
}

template <typename Req>
kj::Promise<Status> Client::callChunkserver(Req&& request, std::string address) {
  return timer.timeoutAfter(opts.rpcTimeout, request.send())
      .then([](auto&& response) { return fromWire(response.getStatus()); },
            [this, address](kj::Exception&& e) {
              peers.drop(address);
              return Status::unavailable(
                  fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
            });
}

kj::Promise<uint64_t> Client::ensureChunkSize(uint64_t inode) {
  if (chunkSize != 0) return chunkSize;
  return layout(inode, 0, 0).then([this](Result<FileLayout> r) -> uint64_t {
    return r.ok() ? r.value.chunkSize : 0;
  });
}

kj::Promise<Status> Client::syncChunks(uint64_t inode, std::vector<uint32_t> indices) {
  uint32_t first = 0, count = UINT32_MAX;
  if (!indices.empty()) {
    first = *std::min_element(indices.begin(), indices.end());
    count = *std::max_element(indices.begin(), indices.end()) - first + 1;
  }
  auto deadline = timer.now() + opts.retryFor;
  return layout(inode, first, std::min<uint32_t>(count, 4096))
      .then([this, inode, deadline,
             indices = std::move(indices)](Result<FileLayout> r) -> kj::Promise<Status> {
        if (!r.ok()) return r.status;
        auto chunks = kj::heap<std::vector<ChunkInfo>>();
        for (auto& c : r.value.chunks) {
          if (indices.empty() ||
              std::find(indices.begin(), indices.end(), c.index) != indices.end()) {
            chunks->push_back(c);
          }
        }
        auto& ref = *chunks;
        return runLimited(ref.size(), 8,
                          [this, inode, deadline, &ref](size_t i) {
                            return syncChunk(inode, ref[i], deadline, 0);
                          })
            .attach(kj::mv(chunks));
      });
}

kj::Promise<Status> Client::syncChunk(uint64_t inode, ChunkInfo chunk, kj::TimePoint deadline,
                                      uint32_t attempt) {
  auto failures = kj::heap<std::vector<ReplicaFailure>>();
  auto& failed = *failures;
  auto owned = kj::heap<ChunkInfo>(kj::mv(chunk));
  auto& c = *owned;
  return runLimited(
             c.replicas.size(), std::max<size_t>(c.replicas.size(), 1),
             [this, &c, &failed](size_t i) {
               std::string address = c.replicas[i].address;
               auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).syncRequest();
               req.setHandle(c.handle);
               toWire(c.token, req.initToken());
               return callChunkserver(kj::mv(req), address).then([&failed, address](Status s) {
                 if (!s.ok()) failed.push_back({address, s});
                 return Status::OK();
               });
             })
      .then([this, inode, &c, &failed, deadline, attempt](Status) -> kj::Promise<Status> {
        if (failed.empty()) return Status::OK();
        if (timer.now() >= deadline) return failed[0].status;
        // A replica that cannot say its bytes are on disk goes to the master as a failed
        // write would: it leaves the chunk if a replica that holds every byte stays (then
        // re-replication copies a synced one), and the replicas left sync again.
        logDebug("sync of chunk {} of inode {} failed on {} ({}); asking the master", c.index,
                 inode, failed[0].address, failed[0].status.toString());
        return timer.afterDelay(backoff(attempt))
            .then([this, inode, &c, &failed]() {
              return prepareChunk(inode, c.index, failed, c.version);
            })
            .then([this, inode, deadline, attempt](Result<ChunkInfo> next) -> kj::Promise<Status> {
              if (!next.ok()) return next.status;
              return syncChunk(inode, kj::mv(next.value), deadline, attempt + 1);
            });
      })
      .attach(kj::mv(failures), kj::mv(owned));
}

// --- reads ---

kj::Promise<Result<FileLayout>> Client::cachedLayout(uint64_t inode, uint32_t first,
                                                     uint32_t count) {
  auto it = layouts.find(inode);
  if (it != layouts.end() && timer.now() - it->second.fetched < opts.layoutTtl &&
      first >= it->second.first &&
      uint64_t{first} + count <= uint64_t{it->second.first} + it->second.count) {
    return Result<FileLayout>(it->second.layout);
  }
  // Fetch a wider window than asked: sequential readers need the next chunks soon.
  uint32_t fetchCount = std::max<uint32_t>(count, 256);
  return layout(inode, first, fetchCount)
      .then([this, inode, first, fetchCount](Result<FileLayout> r) {
        if (r.ok()) {
          if (layouts.size() > 4096) layouts.clear();
          layouts[inode] = CachedLayout{r.value, first, fetchCount, timer.now()};
        }
        return r;
      });
}

kj::Promise<Status> Client::read(uint64_t inode, uint64_t offset, uint64_t length, std::string& out,
                                 std::optional<uint64_t> needed) {
  out.clear();
  if (length == 0) return Status::OK();
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then(
      [this, inode, offset, length, &out, deadline, needed](uint64_t cs) -> kj::Promise<Status> {
        if (cs == 0) {
          return getattr(inode).then([](Result<FileAttr> r) {
            return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
          });
        }
        return readWith(inode, offset, length, out, std::min(length, needed.value_or(length)),
                        deadline, cs, false);
      });
}

kj::Promise<Status> Client::readWith(uint64_t inode, uint64_t offset, uint64_t length,
                                     std::string& out, uint64_t needed, kj::TimePoint deadline,
                                     uint64_t cs, bool fresh) {
  uint32_t first = static_cast<uint32_t>(offset / cs);
  uint32_t count = static_cast<uint32_t>((offset + length - 1) / cs - first + 1);
  if (fresh) forgetLayout(inode);
  return cachedLayout(inode, first, count)
      .then([this, inode, offset, length, &out, needed, deadline, cs,
             fresh](Result<FileLayout> r) -> kj::Promise<Status> {
        if (!r.ok()) return r.status;
        FileLayout& l = r.value;
        // A short read ends the caller's view of the file (the kernel cuts its size
        // to it): never on the word of a cached layout, which may predate growth.
        if (offset + needed > l.fileSize && !fresh) {
          return readWith(inode, offset, length, out, needed, deadline, cs, true);
        }
        if (offset >= l.fileSize) return Status::OK();
        uint64_t n = std::min(length, l.fileSize - offset);
        out.assign(n, '\0');  // holes and bytes past a replica's end read as zeros
        struct Piece {
          ChunkInfo chunk;
          uint64_t chunkOffset;
          uint32_t length;
          kj::byte* dst;
        };
        auto pieces = kj::heap<std::vector<Piece>>();
        std::map<uint32_t, const ChunkInfo*> byIndex;
        for (auto& c : l.chunks) byIndex[c.index] = &c;
        for (uint64_t pos = offset; pos < offset + n;) {
          uint32_t index = static_cast<uint32_t>(pos / l.chunkSize);
          uint64_t inChunk = pos % l.chunkSize;
          uint64_t chunkEnd = (uint64_t{index} + 1) * l.chunkSize;
          uint32_t len = static_cast<uint32_t>(
              std::min<uint64_t>({opts.pieceBytes, chunkEnd - pos, offset + n - pos}));
          auto it = byIndex.find(index);
          if (it != byIndex.end()) {
            pieces->push_back({*it->second, inChunk, len,
                               reinterpret_cast<kj::byte*>(out.data()) + (pos - offset)});
          }
          pos += len;
        }
        auto& ref = *pieces;
        return runLimited(ref.size(), opts.parallelPieces,
                          [this, inode, &ref, deadline](size_t i) {
                            auto& p = ref[i];
                            return readPiece(inode, p.chunk, p.chunkOffset, p.length, p.dst,
                                             deadline);
                          })
            .attach(kj::mv(pieces));
      });
}

kj::Promise<Status> Client::readPiece(uint64_t inode, ChunkInfo chunk, uint64_t chunkOffset,
                                      uint32_t length, kj::byte* out, kj::TimePoint deadline) {
  auto promise = readChunk(chunk, chunkOffset, length, out, 0);
  return promise.then([this, inode, chunk, chunkOffset, length, out,
                       deadline](Status s) mutable -> kj::Promise<Status> {
    if (s.ok() || !retryable(s.code()) || timer.now() >= deadline) return s;
    forgetLayout(inode);
    // Every replica failed (or none is known yet, as after a master restart): ask the
    // master again after a pause.
    return timer.afterDelay(500 * kj::MILLISECONDS)
        .then([this, inode, index = chunk.index]() { return layout(inode, index, 1); })
        .then([this, inode, chunkOffset, length, out, deadline,
               s](Result<FileLayout> r) mutable -> kj::Promise<Status> {
          if (!r.ok()) return r.status.code() == ErrorCode::UNAVAILABLE ? s : r.status;
          if (r.value.chunks.empty()) return Status::OK();  // truncated away: a hole now
          return readPiece(inode, r.value.chunks[0], chunkOffset, length, out, deadline);
        });
  });
}

kj::Promise<Status> Client::readChunk(ChunkInfo chunk, uint64_t chunkOffset, uint32_t length,
                                      kj::byte* out, size_t replicaIndex) {
  auto ordered = orderReplicas(chunk);
  if (replicaIndex >= ordered.size()) {
    return Status::unavailable(fmt::format("no replica of chunk {:x} could be read ({} known)",
                                           chunk.handle, ordered.size()));
  }
  std::string address = ordered[replicaIndex].address;
  auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).readRequest();
  req.setHandle(chunk.handle);
  req.setVersion(chunk.version);
  toWire(chunk.token, req.initToken());
  req.setOffset(static_cast<uint32_t>(chunkOffset));
  req.setLength(length);
  return timer.timeoutAfter(opts.rpcTimeout, req.send())
      .then(
          [out, length](auto&& response) {
            Status s = fromWire(response.getStatus());
            if (s.ok()) {
              auto data = response.getData();
              memcpy(out, data.begin(), std::min<size_t>(data.size(), length));
            }
            return s;
          },
          [this, address](kj::Exception&& e) {
            peers.drop(address);
            return Status::unavailable(
                fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
          })
      .then([this, chunk = kj::mv(chunk), chunkOffset, length, out, replicaIndex,
             address](Status s) mutable -> kj::Promise<Status> {
        if (s.ok()) return s;
        if (s.code() == ErrorCode::REPLICA_CORRUPT) {
          auto report = master().reportBadReplicaRequest();
          report.setHandle(chunk.handle);
          report.setVersion(chunk.version);
          report.setAddress(address);
          report.send().detach([](kj::Exception&&) {});
        }
        logDebug("read of chunk {:x} from {} failed: {}", chunk.handle, address, s.toString());
        return readChunk(kj::mv(chunk), chunkOffset, length, out, replicaIndex + 1);
      });
}

// --- holes ---

namespace {
constexpr uint64_t MAP_BLOCK = 64 << 10;  // blockMap's granularity
}  // namespace

kj::Promise<Result<uint64_t>> Client::seek(uint64_t inode, uint64_t offset, bool hole) {
  return getattr(inode).then(
      [this, inode, offset, hole](Result<FileAttr> a) -> kj::Promise<Result<uint64_t>> {
        if (!a.ok()) return Result<uint64_t>(a.status);
        if (a.value.type != FileType::REGULAR) {
          return Result<uint64_t>(Status::invalidArgument("not a regular file"));
        }
        uint64_t size = a.value.size;
        if (offset >= size) {
          return Result<uint64_t>(Status(ErrorCode::END_OF_DATA, "offset at or past the end"));
        }
        return ensureChunkSize(inode).then(
            [this, inode, offset, hole, size](uint64_t cs) -> kj::Promise<Result<uint64_t>> {
              if (cs == 0) return Result<uint64_t>(Status::unavailable("no chunk size"));
              return seekFrom(inode, offset, hole, size, cs, static_cast<uint32_t>(offset / cs));
            });
      });
}

kj::Promise<Result<uint64_t>> Client::seekFrom(uint64_t inode, uint64_t offset, bool hole,
                                               uint64_t size, uint64_t cs, uint32_t index) {
  uint64_t base = uint64_t{index} * cs;
  if (base >= size) {
    if (hole) return Result<uint64_t>(size);  // the end of the file is a hole
    return Result<uint64_t>(Status(ErrorCode::END_OF_DATA, "no data after the offset"));
  }
  uint64_t start = std::max(offset, base), end = std::min(base + cs, size);
  return cachedLayout(inode, index, 1)
      .then([this, inode, index](Result<FileLayout> l) -> kj::Promise<Result<std::string>> {
        if (!l.ok()) return Result<std::string>(l.status);
        for (auto& c : l.value.chunks) {
          if (c.index == index) return blockMapOf(c, 0);
        }
        return Result<std::string>(std::string());  // no chunk: all hole
      })
      .then([this, inode, offset, hole, size, cs, index, base, start,
             end](Result<std::string> map) -> kj::Promise<Result<uint64_t>> {
        if (!map.ok()) return Result<uint64_t>(map.status);
        // map: the chunk's length (8 bytes) and one bit per block, or empty for no chunk.
        uint64_t length = 0;
        if (map.value.size() >= 8) memcpy(&length, map.value.data(), 8);
        auto isData = [&](uint64_t pos) {
          uint64_t b = (pos - base) / MAP_BLOCK;
          size_t byte = 8 + b / 8;
          return pos - base < length && byte < map.value.size() &&
                 (static_cast<uint8_t>(map.value[byte]) >> (b % 8)) & 1;
        };
        for (uint64_t pos = start; pos < end;) {
          if (isData(pos) != hole) return Result<uint64_t>(pos);
          pos = base + ((pos - base) / MAP_BLOCK + 1) * MAP_BLOCK;
        }
        return seekFrom(inode, offset, hole, size, cs, index + 1);
      });
}

kj::Promise<Result<std::string>> Client::blockMapOf(ChunkInfo chunk, size_t replicaIndex) {
  auto ordered = orderReplicas(chunk);
  if (replicaIndex >= ordered.size()) {
    return Result<std::string>(Status::unavailable(
        fmt::format("no replica of chunk {:x} answered for its block map", chunk.handle)));
  }
  std::string address = ordered[replicaIndex].address;
  auto req = peers.get<wire::ChunkServer>(address, Role::CHUNKSERVER).blockMapRequest();
  req.setHandle(chunk.handle);
  req.setVersion(chunk.version);
  toWire(chunk.token, req.initToken());
  return timer.timeoutAfter(opts.rpcTimeout, req.send())
      .then(
          [](auto&& response) -> Result<std::string> {
            Status s = fromWire(response.getStatus());
            if (!s.ok()) return s;
            std::string out(8, '\0');
            uint64_t length = response.getLength();
            memcpy(out.data(), &length, 8);
            auto bits = response.getBitmap();
            out.append(reinterpret_cast<const char*>(bits.begin()), bits.size());
            return out;
          },
          [this, address](kj::Exception&& e) -> Result<std::string> {
            peers.drop(address);
            return Status::unavailable(
                fmt::format("chunkserver {}: {}", address, e.getDescription().cStr()));
          })
      .then([this, chunk = kj::mv(chunk),
             replicaIndex](Result<std::string> r) mutable -> kj::Promise<Result<std::string>> {
        if (r.ok()) return r;
        return blockMapOf(kj::mv(chunk), replicaIndex + 1);
      });
}

// --- writes ---

kj::Promise<Status> Client::write(uint64_t inode, uint64_t offset,
                                  kj::ArrayPtr<const kj::byte> data) {
  if (data.size() == 0) return Status::OK();
  return forEachPortion(
      inode, offset, data.size(), MAX_WRITE_PORTION,
      [data, offset](uint32_t, uint32_t chunkOffset, uint64_t at, uint64_t length) {
        ChunkMutation m;
        m.chunkOffset = chunkOffset;
        m.length = static_cast<uint32_t>(length);
        m.data = data.slice(at - offset, at - offset + length);
        return m;
      });
}

kj::Promise<Status> Client::punch(uint64_t inode, uint64_t offset, uint64_t length) {
  if (length == 0) return Status::OK();
  return ensureChunkSize(inode).then([this, inode, offset,
                                      length](uint64_t cs) -> kj::Promise<Status> {
    if (cs == 0) return Status::unavailable("master gave no chunk size");
    uint32_t first = static_cast<uint32_t>(offset / cs);
    uint32_t last = static_cast<uint32_t>((offset + length - 1) / cs);
    // Only chunks that exist are cut; the others read as zeros already.
    return presentChunks(inode, first, last, {})
        .then([this, inode, offset, length,
               cs](Result<std::set<uint32_t>> l) -> kj::Promise<Status> {
          if (!l.ok()) return l.status;
          auto present = kj::heap<std::set<uint32_t>>(std::move(l.value));
          auto& ref = *present;
          return forEachPortion(inode, offset, length, cs,
                                [&ref](uint32_t index, uint32_t chunkOffset, uint64_t, uint64_t n) {
                                  ChunkMutation m;
                                  m.kind = wire::Mutation::PUNCH;
                                  m.chunkOffset = chunkOffset;
                                  m.length = static_cast<uint32_t>(n);
                                  m.skip = !ref.count(index);
                                  return m;
                                })
              .attach(kj::mv(present));
        });
  });
}

kj::Promise<Result<std::set<uint32_t>>> Client::presentChunks(uint64_t inode, uint32_t first,
                                                              uint32_t last,
                                                              std::set<uint32_t> sofar) {
  uint32_t count = std::min<uint32_t>(last - first + 1, 4096);  // a page of the master's
  return layout(inode, first, count)
      .then([this, inode, first, last, count, sofar = std::move(sofar)](
                Result<FileLayout> l) mutable -> kj::Promise<Result<std::set<uint32_t>>> {
        if (!l.ok()) return Result<std::set<uint32_t>>(l.status);
        for (auto& c : l.value.chunks) sofar.insert(c.index);
        if (uint64_t{first} + count > last) return Result<std::set<uint32_t>>(std::move(sofar));
        return presentChunks(inode, first + count, last, std::move(sofar));
      });
}

kj::Promise<Status> Client::allocate(uint64_t inode, uint64_t offset, uint64_t length) {
  if (length == 0) return Status::OK();
  return ensureChunkSize(inode).then([this, inode, offset, length](uint64_t cs) {
    return forEachPortion(inode, offset, length, cs ? cs : 1,
                          [](uint32_t, uint32_t chunkOffset, uint64_t, uint64_t n) {
                            ChunkMutation m;
                            m.kind = wire::Mutation::ALLOCATE;
                            m.chunkOffset = chunkOffset;
                            m.length = static_cast<uint32_t>(n);
                            return m;
                          });
  });
}

kj::Promise<Status> Client::copyBytes(uint64_t srcInode, uint64_t srcOffset, uint64_t dstInode,
                                      uint64_t dstOffset, uint64_t length) {
  if (length == 0) return Status::OK();
  forgetLayout(srcInode);
  return ensureChunkSize(dstInode).then([this, srcInode, srcOffset, dstInode, dstOffset,
                                         length](uint64_t cs) -> kj::Promise<Status> {
    if (cs == 0) return Status::unavailable("master gave no chunk size");
    uint32_t first = static_cast<uint32_t>(srcOffset / cs);
    uint32_t last = static_cast<uint32_t>((srcOffset + length - 1) / cs);
    return presentChunks(srcInode, first, last, {})
        .then([this, srcInode, srcOffset, dstInode, dstOffset, length,
               cs](Result<std::set<uint32_t>> l) -> kj::Promise<Status> {
          if (!l.ok()) return l.status;
          auto present = kj::heap<std::set<uint32_t>>(std::move(l.value));
          auto& ref = *present;
          return forEachPortion(
                     dstInode, dstOffset, length, MAX_COPY_PORTION,
                     [&ref, srcInode, srcOffset, dstOffset, cs](uint32_t, uint32_t chunkOffset,
                                                                uint64_t at, uint64_t n) {
                       // A portion comes from one source chunk and lands in one destination
                       // chunk: it also ends at the source's chunk boundary.
                       uint64_t from = srcOffset + (at - dstOffset);
                       ChunkMutation m;
                       m.chunkOffset = chunkOffset;
                       m.length = static_cast<uint32_t>(std::min(n, cs - from % cs));
                       uint32_t index = static_cast<uint32_t>(from / cs);
                       if (ref.count(index)) {
                         m.source = CopySource{srcInode, index, static_cast<uint32_t>(from % cs)};
                       } else {
                         m.kind = wire::Mutation::PUNCH;  // a hole in the source
                       }
                       return m;
                     })
              .attach(kj::mv(present));
        });
  });
}

kj::Promise<Status> Client::forEachPortion(
    uint64_t inode, uint64_t offset, uint64_t length, uint64_t maxPortion,
    kj::Function<ChunkMutation(uint32_t index, uint32_t chunkOffset, uint64_t at, uint64_t n)>
        make) {
  forgetLayout(inode);  // new chunks and versions are coming
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then(
      [this, inode, offset, length, maxPortion, deadline,
       make = kj::mv(make)](uint64_t cs) mutable -> kj::Promise<Status> {
        if (cs == 0) {
          return getattr(inode).then([](Result<FileAttr> r) {
            return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
          });
        }
        struct Portion {
          uint32_t index;
          ChunkMutation mutation;
        };
        auto portions = kj::heap<std::vector<Portion>>();
        for (uint64_t at = offset; at < offset + length;) {
          uint32_t index = static_cast<uint32_t>(at / cs);
          uint64_t inChunk = at % cs;
          uint64_t n = std::min<uint64_t>({cs - inChunk, offset + length - at, maxPortion});
          ChunkMutation m = make(index, static_cast<uint32_t>(inChunk), at, n);
          KJ_ASSERT(m.length > 0 && m.length <= n, "a portion must make progress", m.length, n);
          at += m.length;
          if (!m.skip) portions->push_back({index, std::move(m)});
        }
        auto& ref = *portions;
        return runLimited(ref.size(), 4,
                          [this, inode, &ref, deadline](size_t i) {
                            return mutateChunk(inode, ref[i].index, ref[i].mutation, deadline, 0,
                                               {}, 0);
                          })
            .attach(kj::mv(portions))
            .then([this, inode](Status s) {
              forgetLayout(inode);  // a read may have cached locations while this was under way
              return s;
            });
      });
}

kj::Promise<Status> Client::mutateChunk(uint64_t inode, uint32_t index, const ChunkMutation& m,
                                        kj::TimePoint deadline, uint32_t attempt,
                                        std::vector<ReplicaFailure> failures,
                                        uint64_t failedVersion) {
  return prepareChunk(inode, index, failures, failedVersion)
      .then([this, &m](Result<ChunkInfo> r) -> kj::Promise<std::pair<DataOutcome, uint64_t>> {
        if (!r.ok()) return std::make_pair(DataOutcome(r.status), uint64_t{0});
        uint64_t version = r.value.version;
        return applyMutation(kj::mv(r.value), m).then([version](DataOutcome o) {
          return std::make_pair(kj::mv(o), version);
        });
      })
      .then([this, inode, index, &m, deadline,
             attempt](std::pair<DataOutcome, uint64_t> result) -> kj::Promise<Status> {
        DataOutcome& o = result.first;
        // Failures named by replica go back to the master, which decides what they mean
        // (drop the replica, or fail the write: e.g. noSpace when every replica is full).
        bool again = !o.failures.empty() || retryable(o.status.code());
        if (o.ok() || !again || timer.now() >= deadline) return o.status;
        logDebug("write of chunk {} of inode {} failed ({}); retrying", index, inode,
                 o.status.toString());
        auto failures = kj::mv(o.failures);
        uint64_t version = result.second;
        return timer.afterDelay(backoff(attempt))
            .then([this, inode, index, &m, deadline, attempt, failures = kj::mv(failures),
                   version]() mutable {
              return mutateChunk(inode, index, m, deadline, attempt + 1, kj::mv(failures), version);
            });
      });
}

struct Client::AppendTry {
  uint64_t inode = 0;
  uint64_t chunkSize = 0;
  uint32_t index = 0;      // the chunk appended to
  uint32_t minOffset = 0;  // the end of the file in it, as the master said
  kj::ArrayPtr<const kj::byte> record;
  kj::TimePoint deadline = kj::origin<kj::TimePoint>();
  uint32_t attempt = 0;
};

kj::Promise<Result<uint64_t>> Client::append(uint64_t inode, kj::ArrayPtr<const kj::byte> record) {
  forgetLayout(inode);  // the chunks' lengths change, and a chunk may be added
  auto deadline = timer.now() + opts.retryFor;
  return ensureChunkSize(inode).then([this, inode, record,
                                      deadline](uint64_t cs) -> kj::Promise<Result<uint64_t>> {
    if (cs == 0) {
      return getattr(inode).then([](Result<FileAttr> r) -> Result<uint64_t> {
        return r.ok() ? Status::unavailable("master gave no chunk size") : r.status;
      });
    }
    if (record.size() == 0 || record.size() > cs / 4) {
      return Result<uint64_t>(Status::invalidArgument(
          fmt::format("a record of {} bytes: records are 1 byte to a quarter of a chunk ({} bytes)",
                      record.size(), cs / 4)));
    }
    // The end of the file as the master knows it: the record goes there or after it (past
    // appends whose size is not recorded yet). Appends in a row take it from the last
    // size commit's answer.
    pruneAppendHints();
    auto hint = appendHints.find(inode);
    kj::Promise<Result<FileAttr>> known = nullptr;
    if (hint != appendHints.end() && timer.now() - hint->second.sizeAt < APPEND_HINT_TTL) {
      FileAttr a;
      a.type = FileType::REGULAR;
      a.size = hint->second.size;
      known = Result<FileAttr>(a);
    } else {
      known = getattr(inode);
    }
    return known.then(
        [this, inode, record, deadline, cs](Result<FileAttr> a) -> kj::Promise<Result<uint64_t>> {
          if (!a.ok()) return Result<uint64_t>(a.status);
          if (a.value.type != FileType::REGULAR) {
            return Result<uint64_t>(Status::invalidArgument("records go to regular files only"));
          }
          AppendTry t;
          t.inode = inode;
          t.chunkSize = cs;
          t.index = static_cast<uint32_t>(a.value.size / cs);
          t.minOffset = static_cast<uint32_t>(a.value.size % cs);
          t.record = record;
          t.deadline = deadline;
          return appendAt(t, {}, 0);
        });
  });
}

void Client::pruneAppendHints() {
  // Hints of files appended to a while ago are of no use: a client appending to many files
  // in turn keeps only the recent ones.
  if (appendHints.size() < 64) return;
  auto now = timer.now();
  for (auto it = appendHints.begin(); it != appendHints.end();) {
    bool stale = now - it->second.sizeAt >= APPEND_HINT_TTL && now >= it->second.leaseUntil;
    it = stale ? appendHints.erase(it) : std::next(it);
  }
}

kj::Promise<Result<uint64_t>> Client::appendAt(AppendTry t, std::vector<ReplicaFailure> failures,
                                               uint64_t failedVersion) {
  struct Outcome {
    DataOutcome data;
    uint64_t version = 0;
    uint32_t offset = 0;
  };
  // The lease the last append used, while it holds and nothing failed.
  kj::Promise<Result<ChunkInfo>> prepared = nullptr;
  auto hint = appendHints.find(t.inode);
  if (failures.empty() && failedVersion == 0 && hint != appendHints.end() && hint->second.lease &&
      hint->second.lease->index == t.index && timer.now() < hint->second.leaseUntil) {
    prepared = Result<ChunkInfo>(*hint->second.lease);
  } else {
    prepared = prepareChunk(t.inode, t.index, failures, failedVersion)
                   .then([this, t](Result<ChunkInfo> r) {
                     if (r.ok()) {
                       // Kept until well before the lease or the token could run out.
                       int64_t tokenMs = r.value.token.expiresMs -
                                         (kj::systemPreciseCalendarClock().now() - kj::UNIX_EPOCH) /
                                             kj::MILLISECONDS;
                       int64_t ms = std::min<int64_t>(r.value.leaseRemainingMs, tokenMs) / 2;
                       auto& h = appendHints[t.inode];
                       h.lease = r.value;
                       h.leaseUntil = timer.now() + std::max<int64_t>(ms, 0) * kj::MILLISECONDS;
                     }
                     return r;
                   });
  }
  return prepared
      .then([this, t](Result<ChunkInfo> r) -> kj::Promise<Outcome> {
        if (!r.ok()) return Outcome{DataOutcome(r.status)};
        if (r.value.primary.empty() || r.value.replicas.empty()) {
          return Outcome{DataOutcome(
              Status::unavailable(fmt::format("chunk {:x} has no primary", r.value.handle)))};
        }
        auto chunk = kj::heap<ChunkInfo>(kj::mv(r.value));
        uint64_t dataId = rng() | 1;
        auto& c = *chunk;
        return pushInto(c, dataId, t.record)
            .then([this, &c, dataId, t](DataOutcome o) -> kj::Promise<Outcome> {
              if (!o.ok()) return Outcome{kj::mv(o), c.version};
              auto req = peers.get<wire::ChunkServer>(c.primary, Role::CHUNKSERVER).appendRequest();
              req.setHandle(c.handle);
              req.setVersion(c.version);
              req.setDataId(dataId);
              req.setLength(static_cast<uint32_t>(t.record.size()));
              req.setMinOffset(t.minOffset);
              toWire(c.token, req.initToken());
              std::vector<std::string> secondaries;
              for (auto& rep : c.replicas) {
                if (rep.address != c.primary) secondaries.push_back(rep.address);
              }
              auto list = req.initSecondaries(static_cast<uint>(secondaries.size()));
              for (size_t i = 0; i < secondaries.size(); ++i) {
                list.set(static_cast<uint>(i), secondaries[i]);
              }
              uint64_t version = c.version;
              std::string primary = c.primary;
              return timer.timeoutAfter(opts.rpcTimeout, req.send())
                  .then(
                      [version](auto&& response) {
                        return Outcome{DataOutcome(fromWire(response.getStatus()),
                                                   fromWire(response.getFailures())),
                                       version, response.getOffset()};
                      },
                      [this, version, primary](kj::Exception&& e) {
                        peers.drop(primary);
                        return Outcome{DataOutcome::of(primary, Status::unavailable(fmt::format(
                                                                    "chunkserver {}: {}", primary,
                                                                    e.getDescription().cStr()))),
                                       version};
                      });
            })
            .attach(kj::mv(chunk));
      })
      .then([this, t](Outcome o) mutable -> kj::Promise<Result<uint64_t>> {
        if (o.data.ok()) {
          uint64_t at = uint64_t{t.index} * t.chunkSize + o.offset;
          return commitSize(t.inode, at + t.record.size())
              .then([this, t, at](Result<FileAttr> r) -> Result<uint64_t> {
                if (!r.ok()) {
                  appendHints.erase(t.inode);
                  return r.status;
                }
                auto& h = appendHints[t.inode];
                h.size = r.value.size;
                h.sizeAt = timer.now();
                return at;
              });
        }
        // Whatever failed, the next attempt asks the master afresh.
        appendHints.erase(t.inode);
        if (o.data.status.code() == ErrorCode::CHUNK_FULL) {
          // Padded on every replica: the next chunk, from its start.
          t.index++;
          t.minOffset = 0;
          return appendAt(t, {}, 0);
        }
        bool again = !o.data.failures.empty() || retryable(o.data.status.code());
        if (!again || timer.now() >= t.deadline) return Result<uint64_t>(o.data.status);
        logDebug("append to chunk {} of inode {} failed ({}); retrying", t.index, t.inode,
                 o.data.status.toString());
        auto failures = kj::mv(o.data.failures);
        uint64_t version = o.version;
        uint32_t attempt = t.attempt++;
        return timer.afterDelay(backoff(attempt))
            .then([this, t, failures = kj::mv(failures), version]() mutable {
              return appendAt(t, kj::mv(failures), version);
            });
      });
}

kj::Promise<DataOutcome> Client::applyMutation(ChunkInfo chunk, const ChunkMutation& m) {
  if (chunk.primary.empty() || chunk.replicas.empty()) {
    return DataOutcome(Status::unavailable(fmt::format("chunk {:x} has no primary", chunk.handle)));
  }
  // A small write carries its bytes to the primary, which hands them on with the order to
  // apply: one round trip instead of a push and then the write. Only where every replica
  // takes them (the master says so: older chunkservers do not).
  bool carried = chunk.inlineWrites && m.kind == wire::Mutation::DATA && !m.source &&
                 m.length <= wire::MAX_INLINE_WRITE;
  uint64_t dataId = carried ? 0 : rng() | 1;
  kj::Promise<DataOutcome> pushed = DataOutcome();
  if (m.kind == wire::Mutation::DATA && !carried) {
    pushed =
        m.source ? pullInto(chunk, dataId, *m.source, m.length) : pushInto(chunk, dataId, m.data);
  }
  // Control flow: the primary orders and applies, then has the secondaries apply.
  return pushed.then([this, chunk = kj::mv(chunk), &m, dataId,
                      carried](DataOutcome o) -> kj::Promise<DataOutcome> {
    if (!o.ok()) return o;
    auto req = peers.get<wire::ChunkServer>(chunk.primary, Role::CHUNKSERVER).writeRequest();
    req.setHandle(chunk.handle);
    req.setVersion(chunk.version);
    req.setOffset(m.chunkOffset);
    req.setDataId(dataId);
    req.setLength(m.length);
    if (carried) req.setData(capnp::Data::Reader(m.data.begin(), m.data.size()));
    req.setMutation(m.kind);
    toWire(chunk.token, req.initToken());
    size_t n = 0;
    for (auto& r : chunk.replicas) n += r.address != chunk.primary;
    auto secondaries = req.initSecondaries(static_cast<uint>(n));
    size_t k = 0;
    for (auto& r : chunk.replicas) {
      if (r.address != chunk.primary) secondaries.set(static_cast<uint>(k++), r.address);
    }
    return dataCall(kj::mv(req), chunk.primary);
  });
}

kj::Promise<DataOutcome> Client::pushInto(const ChunkInfo& chunk, uint64_t dataId,
                                          kj::ArrayPtr<const kj::byte> data) {
  auto chain = kj::heap<std::vector<ReplicaInfo>>(orderReplicas(chunk));
  auto outcome = kj::heap<DataOutcome>();
  auto& c = *chain;
  DataOutcome* out = outcome.get();
  size_t pieces = (data.size() + opts.pieceBytes - 1) / opts.pieceBytes;
  // Data flow: to the closest replica, which forwards down the chain while receiving.
  return runLimited(
             pieces, opts.parallelPieces,
             [this, &c, dataId, data, out, token = chunk.token](size_t i) {
               size_t start = i * opts.pieceBytes;
               size_t end = std::min<size_t>(start + opts.pieceBytes, data.size());
               auto req =
                   peers.get<wire::ChunkServer>(c[0].address, Role::CHUNKSERVER).pushDataRequest();
               req.setDataId(dataId);
               req.setTotalLength(static_cast<uint32_t>(data.size()));
               req.setOffset(static_cast<uint32_t>(start));
               toWire(token, req.initToken());
               // The caller's bytes outlive the push (write() resolves after every
               // piece answered).
               setDataNoCopy(wire::ChunkServer::PushDataParams::Builder(req),
                             data.slice(start, end),
                             [&](capnp::Orphan<capnp::Data>&& o) { req.adoptData(kj::mv(o)); });
               auto rest = req.initChain(static_cast<uint>(c.size() - 1));
               for (size_t k = 1; k < c.size(); ++k) {
                 rest.set(static_cast<uint>(k - 1), c[k].address);
               }
               return dataCall(kj::mv(req), c[0].address).then([out](DataOutcome o) {
                 if (!o.ok() && out->ok()) *out = o;
                 return o.status;
               });
             })
      .then([outcome = kj::mv(outcome)](Status) mutable { return kj::mv(*outcome); })
      .attach(kj::mv(chain));
}

kj::Promise<DataOutcome> Client::pullInto(const ChunkInfo& chunk, uint64_t dataId,
                                          CopySource source, uint32_t length) {
  // The source chunk's replicas, asked afresh: copies are rare and must see the latest
  // version.
  return layout(source.inode, source.index, 1)
      .then(
          [this, chunk, dataId, source, length](Result<FileLayout> l) -> kj::Promise<DataOutcome> {
            if (!l.ok()) return DataOutcome(l.status);
            if (l.value.chunks.empty()) {
              return DataOutcome(Status::notFound("the source chunk is gone"));
            }
            auto sources = kj::heap<std::vector<ReplicaInfo>>(orderReplicas(l.value.chunks[0]));
            ChunkInfo from = l.value.chunks[0];
            return pullFrom(chunk, dataId, from, kj::mv(sources), 0, source.chunkOffset, length);
          });
}

kj::Promise<DataOutcome> Client::pullFrom(ChunkInfo chunk, uint64_t dataId, ChunkInfo from,
                                          kj::Own<std::vector<ReplicaInfo>> sources, size_t next,
                                          uint32_t fromOffset, uint32_t length) {
  if (next >= sources->size()) {
    return DataOutcome(Status::unavailable(
        fmt::format("no replica of source chunk {:x} could be read", from.handle)));
  }
  std::string source = (*sources)[next].address;
  // The chain starts at a replica on the source's chunkserver when there is one, so that
  // the first copy is a local read.
  auto chain = orderReplicas(chunk);
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i].address == source)
      std::rotate(chain.begin(), chain.begin() + i, chain.begin() + i + 1);
  }
  auto req = peers.get<wire::ChunkServer>(chain[0].address, Role::CHUNKSERVER).pushFromRequest();
  req.setDataId(dataId);
  req.setSource(source);
  req.setSourceHandle(from.handle);
  req.setSourceVersion(from.version);
  req.setSourceOffset(fromOffset);
  req.setLength(length);
  toWire(chunk.token, req.initToken());
  toWire(from.token, req.initSourceToken());
  auto rest = req.initChain(static_cast<uint>(chain.size() - 1));
  for (size_t k = 1; k < chain.size(); ++k) rest.set(static_cast<uint>(k - 1), chain[k].address);
  return dataCall(kj::mv(req), chain[0].address)
      .then([this, chunk = kj::mv(chunk), dataId, from = kj::mv(from), sources = kj::mv(sources),
             next, fromOffset, length, source](DataOutcome o) mutable -> kj::Promise<DataOutcome> {
        if (o.ok() || !o.failures.empty()) return o;
        // The source failed (no replica of the destination is named): try another.
        if (o.status.code() == ErrorCode::REPLICA_CORRUPT) {
          auto report = master().reportBadReplicaRequest();
          report.setHandle(from.handle);
          report.setVersion(from.version);
          report.setAddress(source);
          report.send().detach([](kj::Exception&&) {});
        }
        return pullFrom(kj::mv(chunk), dataId, kj::mv(from), kj::mv(sources), next + 1, fromOffset,
                        length);
      });
}

template <typename Req>
kj::Promise<DataOutcome> Client::dataCall(Req&& request, std::string address) {
  return timer.timeoutAfter(opts.rpcTimeout, request.send())
      .then(
          [](auto&& response) {
            return DataOutcome(fromWire(response.getStatus()), fromWire(response.getFailures()));
          },
          [this, address](kj::Exception&& e) {
            peers.drop(address);
            return DataOutcome::of(address,
                                   Status::unavailable(fmt::format("chunkserver {}: {}", address,
                                                                   e.getDescription().cStr())));
          });
}

}  // namespace cairn
