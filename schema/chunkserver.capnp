@0xf15ee81a09fb580b;
# A chunkserver's RPC surface, used by clients, other chunkservers and the master.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::wire");

using Common = import "common.capnp";
using Status = Common.Status;
using ReplicaFailure = Common.ReplicaFailure;

const maxInlineWrite :UInt32 = 131072;
# The most bytes a write or applyWrite carries itself.

# What a chunkserver can do beyond the first release's protocol, as bits of the
# `features` it registers with: during a rolling upgrade the master and clients use
# only what every replica involved takes.
const featureInlineWrites :UInt64 = 1;
# write and applyWrite take their bytes in `data` (at most maxInlineWrite).
const featureLeaseWithCreate :UInt64 = 2;
# setVersion takes `leaseMs` (the first lease with the chunk's creation).
const featuresAll :UInt64 = 3;
# What a chunkserver of this release registers with.

enum Mutation {
  # What a write applies at its range, in the primary's order.
  data @0;       # the pushed buffer `dataId`, or the bytes the write carries
  punch @1;      # zeros; whole blocks become holes (fallocate PUNCH_HOLE)
  allocate @2;   # reserve disk without changing a byte (fallocate KEEP_SIZE)
  pad @3;        # grow the chunk to offset+length with a hole (record append's padding);
                 # a longer chunk stays; the buffer `dataId`, if any, is dropped
}

struct Extent {
  offset @0 :UInt32;
  data @1 :Data;
}

interface ChunkServer {
  # Who may call what (chunkserver/data_service.cc, ChunkServerGate): reads, pushes,
  # writes, syncs and copies need a chunk token from the master for that chunk (a write
  # token to change it), except from other chunkservers; applyWrite comes from
  # chunkservers only; setVersion, grantLease, truncate, replicate and copyChunk from the
  # master only
  # (over the connection the chunkserver made to it). A token refused is `tokenInvalid`.
  read @0 (handle :UInt64, version :UInt64, offset :UInt32, length :UInt32,
           token :Common.ChunkToken) -> (status :Status, data :Data);
  # Bytes past the chunk's stored length are returned as a shorter `data`; the caller
  # reads them as zeros. At most 4 MiB per call. Every 64 KiB block touched is verified.

  pushData @1 (dataId :UInt64, totalLength :UInt32, offset :UInt32, data :Data,
               chain :List(Text), token :Common.ChunkToken)
      -> (status :Status, failures :List(ReplicaFailure));
  # Stores one piece of a pending write in the buffer `dataId` and forwards it to
  # chain[0] with the rest of the chain; answers when this replica and all down the
  # chain hold the piece. `failures` names each replica on the chain that failed.

  write @2 (handle :UInt64, version :UInt64, offset :UInt32, dataId :UInt64,
            length :UInt32, secondaries :List(Text), mutation :Mutation,
            token :Common.ChunkToken, data :Data)
      -> (status :Status, failures :List(ReplicaFailure));
  # To the primary: apply the mutation (by default the pushed buffer) at `offset`, then
  # have every secondary apply it in the same order. Answers once all applied; on
  # failure, `failures` names every replica that failed (this one included) and why.
  # A small write (at most maxInlineWrite bytes) may carry its bytes in `data`, with
  # `dataId` 0, instead of pushing them first: one round trip instead of two. They count
  # against the push buffers' limit (`busy` past it) until applied.

  applyWrite @3 (handle :UInt64, version :UInt64, offset :UInt32, dataId :UInt64,
                 length :UInt32, mutation :Mutation, data :Data) -> (status :Status);
  # From the primary to a secondary (`data`: a write's own bytes, as in write).

  setVersion @4 (handle :UInt64, version :UInt64, create :Bool, leaseMs :UInt32)
      -> (status :Status);
  # From the master before a new lease: this replica is current at `version`. With
  # `leaseMs`, this replica is also the primary, for that long from when the version is
  # set (a new chunk's first lease, without a call of its own).
  grantLease @5 (handle :UInt64, version :UInt64, durationMs :UInt32) -> (status :Status);
  truncate @6 (handle :UInt64, version :UInt64, length :UInt32) -> (status :Status);
  # From the master: cut the replica to `length` and move it to `version`.
  sync @7 (handle :UInt64, token :Common.ChunkToken) -> (status :Status);

  replicate @8 (handle :UInt64, version :UInt64, source :Text) -> (status :Status, size :UInt64);
  # From the master: copy the replica at `version` from the chunkserver `source` and keep
  # it here at that version, holes kept. Answers once the copy is complete and verified.

  readExtents @9 (handle :UInt64, version :UInt64, offset :UInt32, length :UInt32,
                  token :Common.ChunkToken)
      -> (status :Status, chunkLength :UInt64, extents :List(Extent));
  # The written parts of the range (at most 4 MiB), verified; holes are left out.

  blockMap @10 (handle :UInt64, version :UInt64, token :Common.ChunkToken)
      -> (status :Status, length :UInt64, bitmap :Data);
  # One bit per 64 KiB block (least significant bit first), set where the block holds data.

  pushFrom @11 (dataId :UInt64, source :Text, sourceHandle :UInt64, sourceVersion :UInt64,
                sourceOffset :UInt32, length :UInt32, chain :List(Text),
                token :Common.ChunkToken, sourceToken :Common.ChunkToken)
      -> (status :Status, failures :List(ReplicaFailure));
  # Server-side copy: fills the buffer `dataId` with `length` bytes of the replica at
  # `source` (read locally when `source` is this chunkserver) and pushes them down
  # `chain` as pushData does, so that a write can then apply them.

  append @12 (handle :UInt64, version :UInt64, dataId :UInt64, length :UInt32,
              minOffset :UInt32, secondaries :List(Text), token :Common.ChunkToken)
      -> (status :Status, failures :List(ReplicaFailure), offset :UInt32);
  # Record append, to the primary: the pushed buffer `dataId` (at most a quarter of a
  # chunk) lands whole at the end of the chunk (at least `minOffset`: the end of the file
  # as the writer knows it), at an offset the primary picks in its order of mutations,
  # and every secondary applies it there. A record that does not fit pads the chunk to
  # its end on every replica and answers `chunkFull`: the writer goes on to the next
  # chunk, so that no record spans two. Failures are named as for write.

  copyChunk @13 (handle :UInt64, version :UInt64, newHandle :UInt64, newVersion :UInt64)
      -> (status :Status);
  # From the master: copy this server's replica of `handle` at `version` (a chunk files
  # share) into a new chunk `newHandle` at `newVersion`, on this server's disks, holes kept
  # and every block verified. Answers once the copy is complete; a failed one leaves no
  # chunk `newHandle` behind.
}
