// Shared chunks in the chunk map: freezing files while their chunks are shared (no lease
// may survive the moment a chunk gains a second owner), and copy-on-write of a shared
// chunk before it is written or cut. See chunk_manager.h; the owner lists are the
// namespace's (namespace_share.cc).

#include <fmt/format.h>
#include <kj/debug.h>

#include "chunk_manager.h"
#include "log.h"

namespace cairn {

kj::Promise<void> ChunkManager::nextChange() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiters.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void ChunkManager::wakeWaiters() {
  auto woken = std::move(waiters);
  waiters.clear();
  for (auto& w : woken) w->fulfill();
}

void ChunkManager::leave(uint64_t inode) {
  auto it = writesUnderWay.find(inode);
  if (it == writesUnderWay.end()) return;
  if (--it->second == 0) {
    writesUnderWay.erase(it);
    if (frozenInodes.count(inode)) wakeWaiters();
  }
}

kj::Promise<void> ChunkManager::drained(std::vector<uint64_t> inodes) {
  for (uint64_t inode : inodes) {
    if (writesUnderWay.count(inode)) {
      return nextChange().then(
          [this, inodes = std::move(inodes)]() mutable { return drained(std::move(inodes)); });
    }
  }
  return kj::READY_NOW;
}

kj::Promise<Status> ChunkManager::freeze(std::vector<uint64_t> inodes) {
  for (uint64_t inode : inodes) frozenInodes[inode]++;
  return drained(inodes).then([this, inodes]() { return revokeLeases(inodes); });
}

void ChunkManager::thaw(const std::vector<uint64_t>& inodes) {
  for (uint64_t inode : inodes) {
    auto it = frozenInodes.find(inode);
    if (it != frozenInodes.end() && --it->second == 0) frozenInodes.erase(it);
  }
  wakeWaiters();
}

kj::Promise<Status> ChunkManager::revokeLeases(const std::vector<uint64_t>& inodes) {
  kj::Vector<kj::Promise<Status>> revocations;
  auto now = timer.now();
  for (uint64_t inode : inodes) {
    for (auto& record : ns.listChunks(inode, 0, UINT32_MAX)) {
      Activity* a = activityOf(record.handle);
      // A lease the master granted may be held until it expires, even by a primary it
      // believes dead (a partition): every one not yet over is revoked.
      if (!chunks.contains(record.handle) || !a || !a->primary || now >= a->leaseExpiry) continue;
      uint64_t handle = record.handle;
      revocations.add(serialized<Status>(handle, [this, handle]() -> kj::Promise<Status> {
        Activity* a = activityOf(handle);
        if (!chunks.contains(handle) || !a || !a->primary) return Status::OK();
        return bumpVersion(handle).then([this, handle](std::vector<uint64_t> current) {
          Chunk* c = chunks.find(handle);
          // Nobody moved: the primary may still write.
          if (current.empty() && c && !liveReplicas(*c).empty()) {
            return Status::unavailable(
                fmt::format("cannot revoke the lease on chunk {:x}", handle));
          }
          return Status::OK();
        });
      }));
    }
  }
  return kj::joinPromises(revocations.releaseAsArray()).then([](kj::Array<Status> results) {
    for (auto& s : results) {
      if (!s.ok()) return s;
    }
    return Status::OK();
  });
}

bool ChunkManager::quiet(uint64_t inode) {
  if (!frozenInodes.count(inode) || writesUnderWay.count(inode)) return false;
  auto now = timer.now();
  for (auto& record : ns.listChunks(inode, 0, UINT32_MAX)) {
    Activity* a = activityOf(record.handle);
    if (chunks.contains(record.handle) && a && a->primary && now < a->leaseExpiry) return false;
  }
  return true;
}

kj::Promise<Status> ChunkManager::copyOnWrite(uint64_t inode, ChunkRecord record, Hold hold) {
  uint64_t handle = record.handle;
  return serialized<Status>(
      handle,
      [this, inode, record, handle]() -> kj::Promise<Status> {
        auto now = ns.getChunk(inode, record.index);
        if (!now || now->handle != handle || !ns.isShared(handle)) return Status::OK();
        Chunk* found = chunks.find(handle);
        if (!found) return Status::unavailable("the shared chunk is not in the chunk map");
        auto sources = goodReplicas(*found);
        if (sources.empty()) {
          return Status::unavailable(
              fmt::format("no live replica of shared chunk {:x} to copy", handle));
        }
        uint64_t version = found->record.version;
        return ns.reserveHandle().then([this, inode, record, handle, version,
                                        sources](uint64_t fresh) {
          unrecorded.insert(fresh);
          auto recorded = kj::defer([this, fresh]() { unrecorded.erase(fresh); });
          kj::Vector<kj::Promise<Status>> calls;
          for (uint64_t s : sources) calls.add(control.copyChunk(s, handle, version, fresh, 1));
          return kj::joinPromises(calls.releaseAsArray())
              .then([this, inode, record, handle, fresh,
                     sources](kj::Array<Status> results) -> kj::Promise<Status> {
                std::vector<ServerFailure> answers;
                for (size_t i = 0; i < sources.size(); ++i) {
                  answers.push_back({sources[i], results[i]});
                  // One that failed may still finish the copy late: it goes.
                  if (!results[i].ok()) queueDelete(sources[i], fresh);
                }
                auto created = succeeded(answers);
                if (created.empty()) {
                  bool full = std::all_of(results.begin(), results.end(),
                                          [](auto& s) { return s.code() == ErrorCode::NO_SPACE; });
                  return full ? Status::noSpace("no replica has room to copy a shared chunk")
                              : Status::unavailable(
                                    fmt::format("no replica could copy shared chunk {:x}", handle));
                }
                // The copy is at version 1, and the writer's first lease moves it on: a late
                // copy (its answer lost) is then stale, never current.
                ChunkRecord copy{record.index, fresh, 1, 1, false, record.cutAt};
                return ns.replaceChunk(inode, record, copy)
                    .then([this, inode, handle, fresh, copy, created](bool replaced) {
                      if (!replaced) {
                        for (uint64_t s : created) queueDelete(s, fresh);
                        return Status::OK();
                      }
                      Chunk& c = chunks[fresh];
                      c.inode = inode;
                      assignRecord(c, copy);
                      activity[fresh].lastWrite = timer.now();
                      for (uint64_t s : created) {
                        addReplica(c, s);
                        unqueueDelete(s, fresh);  // reported before its record landed
                      }
                      if (copy.cutAt != 0) oweCut(fresh);
                      if (Chunk* old = chunks.find(handle)) {
                        old->goal = 0;  // one owner less
                        attention.insert(handle);
                      }
                      logInfo("chunk {:x}: copied to {:x} on {} replicas before a write", handle,
                              fresh, created.size());
                      return Status::OK();
                    });
              })
              .attach(kj::mv(recorded));
        });
      },
      kj::mv(hold));
}

}  // namespace cairn
