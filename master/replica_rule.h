#pragma once
// When a replica may leave a chunk: the one rule, used wherever the master changes a
// replica set or deletes a replica, as pure functions so that tests reach them directly.
//
// Every acknowledged byte of a chunk is on each of its current replicas: a write is
// acknowledged only once every current replica applied it, and a replica that misses a
// write leaves the set (under a new version, so that it is recognisably stale) before the
// next write is acknowledged. Hence:
//   - a current replica may leave the set only while another live current replica stays;
//   - a replica that is not current (stale, surplus, corrupt, dropped) may be deleted
//     from its disk only while a live current replica exists elsewhere, or when the chunk
//     itself is gone (its file deleted);
//   - a write that fails on every replica drops none of them: the bytes acknowledged
//     before it are still on all of them, and the writer gets the error;
//   - a full disk is an ordinary condition, not a bad replica: unless other chunkservers
//     have room to take over every copy that ran out of space, those replicas stay and the
//     write fails with noSpace, rather than the chunk losing copies.

#include <cstdint>
#include <vector>

#include "status.h"

namespace cairn {

// Whether a chunkserver's failure says its replica is at fault (it missed the mutation:
// no space, I/O error, unreachable, stale, corrupt, gone), or only that the attempt must
// be made again (busy, push not received, lease lost, a bad request).
bool replicaAtFault(ErrorCode code);

struct ServerFailure {
  uint64_t server = 0;
  Status status;
};

struct FailedWriteDecision {
  std::vector<uint64_t> drop;  // replicas that leave the set (their copies are now stale)
  bool newLease = false;       // the lease must be granted again (under a new version)
  Status error;                // not OK: the write fails with this, and nothing is dropped
};

// A write at the current version failed with `failures` (by chunkserver; those not in
// `current` are ignored). `current`: the live current replicas not known to be corrupt.
// `roomElsewhere`: live chunkservers holding no replica that could take a new copy.
FailedWriteDecision afterFailedWrite(const std::vector<uint64_t>& current,
                                     const std::vector<ServerFailure>& failures,
                                     size_t roomElsewhere);

// May `server` leave the set of live current replicas `current`?
bool mayLeave(uint64_t server, const std::vector<uint64_t>& current);

// May the copy of a chunk on `server` be deleted from its disk? `chunkExists`: the chunk
// still belongs to a file; `current`: its live current replicas.
bool mayDelete(uint64_t server, bool chunkExists, const std::vector<uint64_t>& current);

}  // namespace cairn
