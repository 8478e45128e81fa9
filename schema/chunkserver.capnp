@0xf15ee81a09fb580b;
# A chunkserver's RPC surface, used by clients, other chunkservers and the master.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::wire");

using Common = import "common.capnp";
using Status = Common.Status;

interface ChunkServer {
  read @0 (handle :UInt64, version :UInt64, offset :UInt32, length :UInt32)
      -> (status :Status, data :Data);
  # Bytes past the chunk's stored length are returned as a shorter `data`; the caller
  # reads them as zeros. At most 4 MiB per call. Every 64 KiB block touched is verified.

  pushData @1 (dataId :UInt64, totalLength :UInt32, offset :UInt32, data :Data,
               chain :List(Text)) -> (status :Status);
  # Stores one piece of a pending write in the buffer `dataId` and forwards it to
  # chain[0] with the rest of the chain; answers when this replica and all down the
  # chain hold the piece.

  write @2 (handle :UInt64, version :UInt64, offset :UInt32, dataId :UInt64,
            length :UInt32, secondaries :List(Text)) -> (status :Status);
  # To the primary: apply the pushed buffer at `offset`, then have every secondary apply
  # it in the same order. Answers once all applied.

  applyWrite @3 (handle :UInt64, version :UInt64, offset :UInt32, dataId :UInt64,
                 length :UInt32) -> (status :Status);
  # From the primary to a secondary.

  setVersion @4 (handle :UInt64, version :UInt64, create :Bool) -> (status :Status);
  # From the master before a new lease: this replica is current at `version`.
  grantLease @5 (handle :UInt64, version :UInt64, durationMs :UInt32) -> (status :Status);
  truncate @6 (handle :UInt64, version :UInt64, length :UInt32) -> (status :Status);
  # From the master: cut the replica to `length` and move it to `version`.
  sync @7 (handle :UInt64) -> (status :Status);

  replicate @8 (handle :UInt64, version :UInt64, source :Text) -> (status :Status, size :UInt64);
  # From the master: copy the replica at `version` from the chunkserver `source` and keep
  # it here at that version. Answers once the copy is complete and verified.
}
