@0xc998d34e4bced6f4;
# Types shared by every Cairn service. Ordinals are append-only.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::wire");

enum ErrorCode {
  # Outcomes a correct caller branches on. Host errno values never go on the wire;
  # the FUSE edge maps these to errno in one place.
  ok @0;
  notFound @1;
  alreadyExists @2;
  notDirectory @3;
  isDirectory @4;
  notEmpty @5;
  permissionDenied @6;
  nameTooLong @7;
  invalidArgument @8;
  noSpace @9;
  staleVersion @10;
  notPrimary @11;
  leaseExpired @12;
  replicaCorrupt @13;
  unavailable @14;
  ioError @15;
  safeMode @16;
  busy @17;
  noAttribute @18;       # no such extended attribute
  notSupported @19;
  notPermitted @20;      # e.g. a hard link to a directory
  dataNotPushed @21;     # a write names pushed data that this replica does not hold in full
  endOfData @22;         # no data at or after an offset (SEEK_DATA past the last data)
  tokenInvalid @23;      # a chunk token that is forged, expired, for another chunk or mode,
                         # or signed by a key the chunkserver does not hold: ask the master
                         # for the chunk's location (and a new token) again
  readOnly @24;          # an admin put the cluster in safe mode: nothing changes until it
                         # leaves (not retried; EROFS)
  notActive @25;         # this master is a standby (or was deposed): ask the active one
  chunkFull @26;         # a record append that does not fit in the chunk: the chunk was
                         # padded to its end on every replica; append to the next chunk
}

struct Status {
  code @0 :ErrorCode;
  message @1 :Text;
}

struct ReplicaFailure {
  # One replica's part in a failed data operation: which replica, and what it said (or
  # unavailable when it could not be reached). The master decides from these what the
  # failure means for the chunk's replicas.
  address @0 :Text;
  status @1 :Status;
}

enum FileType {
  regular @0;
  directory @1;
  symlink @2;
  fifo @3;
  socket @4;
  charDevice @5;
  blockDevice @6;
}

struct Attr {
  inode @0 :UInt64;
  type @1 :FileType;
  mode @2 :UInt32;       # permission bits only (07777)
  uid @3 :UInt32;
  gid @4 :UInt32;
  nlink @5 :UInt32;
  size @6 :UInt64;
  atimeNs @7 :Int64;     # nanoseconds since the Unix epoch
  mtimeNs @8 :Int64;
  ctimeNs @9 :Int64;
  replication @10 :UInt8;
  chunkCount @11 :UInt32;
  rdev @12 :UInt64;      # device number of a device node
}

struct ChunkReplica {
  address @0 :Text;      # HOST:PORT of the chunkserver's RPC endpoint
  rack @1 :Text;
}

struct ChunkLocation {
  index @0 :UInt32;
  handle @1 :UInt64;
  version @2 :UInt64;
  replicas @3 :List(ChunkReplica);
  primary @4 :Text;              # empty unless a lease is held
  leaseRemainingMs @5 :UInt32;
  token @6 :ChunkToken;          # what the chunkservers ask for: read, or write from prepareWrite
  inlineWrites @7 :Bool;         # every replica takes a small write's bytes in the call
}

struct ChunkToken {
  # Issued by the master, checked by chunkservers (common/tokens.h): an HMAC-SHA256 under
  # key `keyId` of the other fields.
  handle @0 :UInt64;
  version @1 :UInt64;
  write @2 :Bool;                # else read only
  expiresMs @3 :Int64;           # wall clock, milliseconds since the epoch
  keyId @4 :UInt32;
  mac @5 :Data;
}

struct TokenKey {
  id @0 :UInt32;
  key @1 :Data;                  # 32 bytes
}
