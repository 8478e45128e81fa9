// Truncates within a chunk, and the cuts they owe: a new version ends every lease, the
// new size is recorded, then the replicas cut the chunk; a cut no replica made stays owed
// (ChunkRecord.cutAt) and is made before the chunk takes a write or its file grows, and by
// the ticks. See chunk_manager.h.

#include <fmt/format.h>
#include <kj/debug.h>

#include "chunk_manager.h"
#include "log.h"

namespace cairn {

kj::Promise<Status> ChunkManager::truncateChunk(uint64_t inode, uint64_t size,
                                                kj::Function<kj::Promise<Status>()> commitSize) {
  if (frozenInodes.count(inode)) {
    return nextChange().then([this, inode, size, commitSize = kj::mv(commitSize)]() mutable {
      return truncateChunk(inode, size, kj::mv(commitSize));
    });
  }
  // A chunk that no live server holds cannot be cut: refused before anything changes.
  auto record = ns.getChunk(inode, static_cast<uint32_t>(size / ns.chunkSize()));
  if (record && size % ns.chunkSize() != 0) {
    Chunk* c = chunks.find(record->handle);
    if (!c || liveReplicas(*c).empty()) {
      return Status::unavailable(
          fmt::format("no live replica of chunk {:x} to truncate", record->handle));
    }
  }
  Hold hold = underWay(inode);
  auto commit = std::make_shared<kj::Function<kj::Promise<Status>()>>(kj::mv(commitSize));
  return truncateChunkNow(inode, size, kj::mv(commit), hold).attach(kj::mv(hold));
}

kj::Promise<Status> ChunkManager::truncateChunkNow(
    uint64_t inode, uint64_t size, std::shared_ptr<kj::Function<kj::Promise<Status>()>> commit,
    Hold hold) {
  uint64_t chunkSize = ns.chunkSize();
  uint32_t offset = static_cast<uint32_t>(size % chunkSize);
  auto record = ns.getChunk(inode, static_cast<uint32_t>(size / chunkSize));
  if (offset == 0 || !record) return (*commit)().attach(kj::mv(commit));  // nothing to cut
  if (!record->pending && ns.isShared(record->handle)) {
    // The other owners keep the chunk as it is: the cut goes to a copy (nothing changed if
    // the copy fails).
    return copyOnWrite(inode, *record, hold)
        .then([this, inode, size, commit, hold](Status s) mutable -> kj::Promise<Status> {
          if (!s.ok()) return s;
          return truncateChunkNow(inode, size, kj::mv(commit), kj::mv(hold));
        });
  }
  uint64_t handle = record->handle;
  Chunk& c = chunks[handle];
  c.inode = inode;
  assignRecord(c, *record);
  // One step for the chunk, so that no lease is granted on it in between.
  return serialized<Status>(
      handle,
      [this, handle, offset, commit = kj::mv(commit)]() {
        // The step's function goes once it has started: the cut keeps `commit`.
        return cutReplicas(handle, offset, commit.get()).attach(kj::cp(commit));
      },
      kj::mv(hold));
}

kj::Promise<Status> ChunkManager::cutReplicas(uint64_t handle, uint32_t offset,
                                              kj::Function<kj::Promise<Status>()>* commit) {
  Chunk* found = chunks.find(handle);
  if (!found) return chunkGone();
  if (liveReplicas(*found).empty()) {
    return Status::unavailable(fmt::format("no live replica of chunk {:x} to cut", handle));
  }
  // Every lease ends first, on the replicas themselves (a new version, as for a new lease):
  // no write under an old lease can land after the new size is recorded, so a cut made
  // later (an owed one) never erases an acknowledged write. Then the new size when a
  // truncate asks (synced, with the cut owed: see Namespace::setattr); then the cut, under
  // one more version, so that a replica that misses it is stale.
  return bumpVersion(handle)
      .then([this, handle, commit](std::vector<uint64_t> current) -> kj::Promise<Status> {
        if (current.empty()) {
          return Status::unavailable(
              fmt::format("no replica of chunk {:x} took a new version", handle));
        }
        return commit ? (*commit)() : kj::Promise<Status>(Status::OK());
      })
      .then([this, handle, offset](Status committed) -> kj::Promise<Status> {
        if (!committed.ok()) return committed;
        Chunk* found = chunks.find(handle);
        if (!found) return chunkGone();
        Chunk& c = *found;
        c.record.cutAt = offset;  // as the namespace has it now
        auto live = liveReplicas(c);
        uint64_t oldVersion = c.record.version;
        c.record.version = nextVersion(c);
        uint64_t version = c.record.version;
        return recordVersion(c)
            .then([this, live, handle, version, offset]() {
              kj::Vector<kj::Promise<Status>> calls;
              for (uint64_t s : live) calls.add(control.truncate(s, handle, version, offset));
              return kj::joinPromises(calls.releaseAsArray());
            })
            .then([this, live, handle,
                   oldVersion](kj::Array<Status> results) -> kj::Promise<Status> {
              Chunk* found = chunks.find(handle);
              if (!found) return chunkGone();
              Chunk& c = *found;
              size_t ok = 0;
              for (auto& r : results) ok += r.ok();
              if (ok == 0) {
                // Nobody moved: the replicas stay current at the version before (one that
                // takes the cut late is stale: see `issued`), and the cut stays owed.
                Status why = results.size() > 0 ? results[0] : Status::unavailable("no replica");
                c.record.version = oldVersion;
                return recordVersion(c).then([why]() { return why; });
              }
              for (size_t i = 0; i < live.size(); ++i) {
                if (!results[i].ok()) {
                  removeReplica(c, live[i]);
                  queueDelete(live[i], handle);
                }
              }
              c.record.cutAt = 0;
              owedCuts.erase(handle);
              return recordVersion(c).then([]() { return Status::OK(); });
            });
      })
      .then([](Status s) { return s; },
            [](kj::Exception&& e) {
              return Status::unavailable(fmt::format("cut: {}", e.getDescription().cStr()));
            })
      .then([this, handle](Status s) {
        // Whatever happened, a cut still owed is tried again by the ticks.
        Chunk* c = chunks.find(handle);
        if (c && c->record.cutAt != 0) oweCut(handle);
        return s;
      });
}

void ChunkManager::oweCut(uint64_t handle) {
  auto& retry = owedCuts[handle];
  // Tried again at once the first time, then after 1, 2, 4 ... 64 s.
  retry.delay =
      retry.delay == 0 * kj::SECONDS ? kj::SECONDS : std::min(retry.delay * 2, 64 * kj::SECONDS);
  retry.at = timer.now() + retry.delay;
}

kj::Promise<Status> ChunkManager::settleCut(uint64_t inode, uint64_t size) {
  auto record = ns.getChunk(inode, static_cast<uint32_t>(size / ns.chunkSize()));
  if (!record || record->cutAt == 0) return Status::OK();
  uint64_t handle = record->handle;
  return serialized<Status>(handle, [this, handle]() -> kj::Promise<Status> {
    Chunk* c = chunks.find(handle);
    if (!c || c->record.cutAt == 0) return Status::OK();
    return cutReplicas(handle, c->record.cutAt, nullptr);
  });
}

void ChunkManager::settleOwedCuts() {
  std::vector<uint64_t> due;
  for (auto& [handle, retry] : owedCuts) {
    if (timer.now() >= retry.at) due.push_back(handle);
  }
  for (uint64_t handle : due) {
    owedCuts[handle].at = kj::maxValue;  // not again while this try runs
    copies.add(serialized<Status>(handle, [this, handle]() -> kj::Promise<Status> {
                 Chunk* c = chunks.find(handle);
                 if (!c || c->record.cutAt == 0) {
                   owedCuts.erase(handle);
                   return Status::OK();
                 }
                 return cutReplicas(handle, c->record.cutAt, nullptr);
               }).ignoreResult());
  }
}

}  // namespace cairn
