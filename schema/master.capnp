@0xfb9259e6c4f18705;
# The master's RPC surface: one bootstrap, one service per kind of peer.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::wire");

using Common = import "common.capnp";
using Status = Common.Status;
using Attr = Common.Attr;
using ChunkLocation = Common.ChunkLocation;
using ChunkServer = import "chunkserver.capnp".ChunkServer;

interface Master {
  client @0 () -> (service :ClientService);
  chunkserver @1 () -> (service :ChunkserverRegistry);
  replication @2 () -> (service :Replication);
  # Masters only: a standby follows the active's metadata log through it.
  state @3 () -> (state :MasterState);
  # Any authenticated peer: which role this master has now, for clients finding the active.
}

enum MasterRole {
  standby @0;     # applies the active's log; answers no mutation (notActive)
  active @1;      # won the election at `epoch`
  catchingUp @2;  # a standby still copying a snapshot or the log: not eligible to be active
}

struct MasterState {
  id @0 :Text;          # this master's address as the others reach it
  role @1 :MasterRole;
  epoch @2 :UInt64;     # the newest epoch this master knows of
  lsn @3 :UInt64;       # the last metadata log entry it applied
  active @4 :Text;      # the active master's address as ZooKeeper names it ("" if none)
  activeLsn @5 :UInt64; # a standby: the last entry the active has sent it
  inSync @6 :List(Text);  # the active: the standbys in sync (that could take over)
}

struct LogOp {
  key @0 :Data;
  value @1 :Data;
  delete @2 :Bool;
}

struct LogEntry {
  # One committed mutation of the metadata: applied atomically, in lsn order.
  epoch @0 :UInt64;
  lsn @1 :UInt64;
  ops @2 :List(LogOp);
  sync @3 :Bool;
  # Acknowledged only once synced on the standby's disk, with every entry before it (the
  # active's sync barrier, or every entry under --sync-every-mutation).
}

interface Replication {
  follow @0 (id :Text, lastEpoch :UInt64, lastLsn :UInt64, sink :LogSink)
      -> (status :Status, epoch :UInt64);
  # A standby asks the active for the log after (lastEpoch, lastLsn). The active sends it a
  # snapshot first when that entry is not in its log (or differs), then every entry as it
  # commits. Resolves when the active stops sending (status notActive: it is no longer
  # active; unavailable: the standby fell behind). epoch: the active's.
}

interface LogSink {
  # Served by a standby to the active it follows. Calls arrive in order.
  append @0 (entries :List(LogEntry)) -> (status :Status, lsn :UInt64);
  # Applies the entries (each must follow the last applied one) and answers once they are
  # in the standby's log (synced, for an entry marked sync): lsn is the last entry applied.
  snapshot @1 (epoch :UInt64, lsn :UInt64, first :Bool, last :Bool, ops :List(LogOp))
      -> (status :Status);
  # A consistent copy of the active's metadata as of (epoch, lsn), in pieces: the first
  # replaces everything the standby held; after the last, the log follows from lsn + 1.
}

struct RequestId {
  # Names one mutation of one client, so that a retry (after a failover, say) is applied
  # once: the master keeps each one's outcome for ten minutes, in the replicated metadata,
  # and answers a retry with it. client 0: no id.
  client @0 :UInt64;
  seq @1 :UInt64;
}

struct SetAttr {
  setMode @0 :Bool;
  mode @1 :UInt32;
  setUid @2 :Bool;
  uid @3 :UInt32;
  setGid @4 :Bool;
  gid @5 :UInt32;
  setSize @6 :Bool;
  size @7 :UInt64;
  setAtime @8 :Bool;
  atimeNs @9 :Int64;
  setMtime @10 :Bool;
  mtimeNs @11 :Int64;
}

struct DirEntry {
  name @0 :Text;
  attr @1 :Attr;
}

struct ServerInfo {
  address @0 :Text;
  rack @1 :Text;
  capacityBytes @2 :UInt64;
  usedBytes @3 :UInt64;
  chunkCount @4 :UInt64;
  live @5 :Bool;
  decommissioning @6 :Bool;
  availableBytes @7 :UInt64;   # free space above the chunkserver's reserve
  heartbeatAgeMs @8 :UInt64;   # since its last heartbeat
}

struct ChunkCheck {
  # One chunk of a file as the master sees it (fsck).
  index @0 :UInt32;
  handle @1 :UInt64;
  version @2 :UInt64;
  goal @3 :UInt8;
  verdict @4 :ChunkVerdict;
  replicas @5 :List(ReplicaCheck);
  files @6 :UInt32;  # files that hold this chunk: more than 1 when a snapshot or copy shares it
}

struct ReplicaCheck {
  address @0 :Text;
  state @1 :ReplicaState;
}

enum ReplicaState {
  good @0;
  corrupt @1;    # found bad, kept because it is the last copy
  draining @2;   # on a decommissioning chunkserver: readable, not counted toward the goal
  dead @3;       # its chunkserver stopped heartbeating
}

enum ChunkVerdict {
  healthy @0;           # at least `goal` good replicas
  underReplicated @1;   # some good replica, fewer than the goal (being repaired)
  corrupt @2;           # replicas left, none good
  missing @3;           # no replica on a live chunkserver
}

interface ClientService {
  # Namespace. Names are validated: no '/', no NUL, not empty, not '.' or '..', at
  # most 255 bytes. Inode 1 is the root directory.
  lookup @0 (parent :UInt64, name :Text) -> (status :Status, attr :Attr);
  getattr @1 (inode :UInt64) -> (status :Status, attr :Attr);
  mkdir @2 (parent :UInt64, name :Text, mode :UInt32, requestId :RequestId)
      -> (status :Status, attr :Attr, dirs :List(Attr));
  create @3 (parent :UInt64, name :Text, mode :UInt32, replication :UInt8, exclusive :Bool,
             open :Bool, requestId :RequestId) -> (status :Status, attr :Attr, dirs :List(Attr));
  # replication 0 means the default goal. Without `exclusive`, an existing regular
  # file is returned as it is. With `open`, the file is opened for writing as by open().
  # New entries belong to the caller (see asCaller). `dirs`, in the results of calls that
  # change directories (mkdir, create, unlink, rmdir, rename, symlink, link, mknod): those
  # directories as the call left them, so that a client need not ask for them again (a
  # kernel asks for a directory's attributes after every change in it). Absent when the
  # outcome was replayed from the retry cache.
  setattr @4 (inode :UInt64, set :SetAttr, requestId :RequestId) -> (status :Status, attr :Attr);
  readdir @5 (inode :UInt64, after :Text, limit :UInt32)
      -> (status :Status, entries :List(DirEntry), more :Bool);
  # Entries sorted by name, strictly after `after`; at most `limit` (capped at 4096).
  unlink @6 (parent :UInt64, name :Text, requestId :RequestId)
      -> (status :Status, dirs :List(Attr));
  rmdir @7 (parent :UInt64, name :Text, requestId :RequestId)
      -> (status :Status, dirs :List(Attr));
  rename @8 (srcParent :UInt64, srcName :Text, dstParent :UInt64, dstName :Text,
             noReplace :Bool, requestId :RequestId) -> (status :Status, dirs :List(Attr));
  # noReplace: fail with alreadyExists rather than replace (RENAME_NOREPLACE).
  resolve @9 (path :Text) -> (status :Status, attr :Attr);
  # An absolute path, for tools that speak in paths.
  setReplication @10 (inode :UInt64, replication :UInt8, requestId :RequestId) -> (status :Status, attr :Attr);

  # Chunks.
  getChunks @11 (inode :UInt64, firstIndex :UInt32, count :UInt32)
      -> (status :Status, chunkSize :UInt64, fileSize :UInt64, chunks :List(ChunkLocation));
  # Chunks that exist in [firstIndex, firstIndex+count); holes are absent. Only replicas
  # at the current version are listed.
  prepareWrite @12 (inode :UInt64, index :UInt32, failedReplica :Text,
                    failures :List(Common.ReplicaFailure), failedVersion :UInt64)
      -> (status :Status, chunk :ChunkLocation);
  # Allocates the chunk if needed and makes sure a primary holds a lease on it. A client
  # whose write at `failedVersion` failed reports what each replica said (`failedReplica`
  # is no longer read): the master drops the replicas at fault as long as another
  # current replica stays, and grants a new lease, under a new version, on the others;
  # when every replica failed it drops none and answers with the failure (noSpace when
  # every replica is out of space).
  commitSize @13 (inode :UInt64, size :UInt64, mtimeNs :Int64) -> (status :Status, attr :Attr);
  # After a write: the file's size becomes max(size, current).
  reportBadReplica @14 (handle :UInt64, version :UInt64, address :Text) -> ();
  clusterInfo @15 () -> (chunkSize :UInt64, servers :List(ServerInfo), defaultReplication :UInt8);

  # More namespace.
  symlink @16 (parent :UInt64, name :Text, target :Text, requestId :RequestId)
      -> (status :Status, attr :Attr, dirs :List(Attr));
  readlink @17 (inode :UInt64) -> (status :Status, target :Text);
  link @18 (inode :UInt64, newParent :UInt64, newName :Text, requestId :RequestId)
      -> (status :Status, attr :Attr, dirs :List(Attr));
  mknod @19 (parent :UInt64, name :Text, type :Common.FileType, mode :UInt32, rdev :UInt64,
             requestId :RequestId)
      -> (status :Status, attr :Attr, dirs :List(Attr));
  # Extended attributes: names under "user."; user.cairn.replication and user.cairn.chunks
  # are the replication goal and the chunk map (JSON), computed by the master.
  setxattr @20 (inode :UInt64, name :Text, value :Data, flags :UInt32, requestId :RequestId) -> (status :Status);
  # flags: 1 = create only (alreadyExists if set), 2 = replace only (notFound if unset).
  getxattr @21 (inode :UInt64, name :Text) -> (status :Status, value :Data);
  listxattr @22 (inode :UInt64) -> (status :Status, names :List(Text));
  removexattr @23 (inode :UInt64, name :Text, requestId :RequestId) -> (status :Status);
  statfs @24 () -> (capacityBytes :UInt64, freeBytes :UInt64, files :UInt64);

  # Trash: an unlinked file is kept, restorable, for the trash period.
  trashList @25 () -> (status :Status, entries :List(TrashEntry));
  trashRestore @26 (path :Text, requestId :RequestId) -> (status :Status, attr :Attr);
  # Administration.
  decommission @27 (address :Text) -> (status :Status, remaining :UInt64, done :Bool);
  # Starts draining the chunkserver (idempotent); `remaining` counts its chunks that do not
  # yet have their goal elsewhere; `done` means it is safe to remove.
  balance @28 (threshold :Float64) -> (status :Status, moves :UInt64, spread :Float64);
  # Starts moving replicas from fuller to emptier chunkservers until the spread of use
  # (largest minus smallest share of chunks) is within `threshold`; returns moves queued
  # and the spread now.
  clusterHealth @29 () -> (safeMode :Bool, chunks :UInt64, underReplicated :UInt64,
                           missing :UInt64, overReplicated :UInt64, copiesInFlight :UInt64,
                           corrupt :UInt64, unchecked :UInt64, onOneRack :UInt64);
  # `unchecked`: chunks the master has not looked at yet since it started (it looks at every
  # one once, in batches, after safe mode); the counts above leave them out until then.
  # `onOneRack`: chunks at their goal with every replica on one rack while another rack has
  # room (found by the master's audit; each gets a copy on another rack).

  # Open files. Each ClientService capability is one client session (one connection): a
  # regular file it has open outlives its last name until the session closes it or ends.
  open @30 (inode :UInt64, access :UInt8) -> (status :Status, attr :Attr);
  # The attributes of a file being opened for `access` (4 read, 2 write, or both); the
  # session holds it open once more.
  close @31 (inode :UInt64) -> (status :Status);
  # Ends one open of the session. When a session ends, its opens end a grace period
  # later (a reconnecting client holds them again first).
  session @32 () -> ();
  # A keepalive. A client on a new connection opens its files again.

  asCaller @33 (uid :UInt32, gids :List(UInt32)) -> (service :ClientService);
  # The same session, making calls for a process with these credentials (the first gid
  # is its group), as a mount does for each process. The master checks every call with
  # them. Who may state credentials: a mount or a MapReduce worker (root squashed to nobody
  # unless its certificate allows root) and an admin; a user only its own uid. Calls of a
  # service for credentials the peer may not state fail with notPermitted.

  fsck @35 (inode :UInt64, firstIndex :UInt32, count :UInt32)
      -> (status :Status, chunks :List(ChunkCheck), more :Bool, nextIndex :UInt32);
  # The chunks of a regular file in [firstIndex, firstIndex+count) (at most 4096 a call;
  # holes are absent), each with its replicas and a verdict; for those who may read it.
  # `more`: the file has a chunk at `nextIndex`, past those (also past its size, as
  # fallocate leaves them).

  safeMode @34 (action :SafeModeAction) -> (status :Status, safeMode :Bool, manual :Bool);
  # Safe mode now (after the action): `manual` when an admin entered it. In safe mode no
  # replica is copied or deleted and no chunk is written; in a manual one the namespace is
  # read only too (readOnly) until an admin leaves it. The master enters safe mode by itself
  # at start until chunkservers have reported the chunks, and leaves it by itself. Entering
  # and leaving are for admins; a manual safe mode does not outlive the master's process.

  failover @36 () -> (status :Status);
  # Admins: the active master hands over to a standby in sync (and becomes a standby).

  snapshot @37 (source :UInt64, parent :UInt64, name :Text, requestId :RequestId)
      -> (status :Status, attr :Attr);
  # A copy of the file or tree `source` as `name` in `parent`, sharing every chunk with it
  # (metadata only: time in proportion to the entries, at most 100,000). Every write
  # acknowledged before it is in the copy, none after; the next write to either side of a
  # shared chunk copies that chunk on its chunkservers first. The caller needs read access
  # to everything copied and write access to `parent`; root's copy keeps owners and modes,
  # another caller's belongs to it (setuid and setgid bits dropped). busy: the tree kept
  # changing while it was frozen (try again).

  shareChunks @38 (source :UInt64, sourceOffset :UInt64, destination :UInt64,
                   destinationOffset :UInt64, length :UInt64)
      -> (status :Status, attr :Attr, sharedOffset :UInt64, sharedLength :UInt64);
  # A copy by whole chunks (copy_file_range, cairn cp) where the two offsets lie alike in
  # their chunks: every chunk of the source wholly inside the range (clipped to its size)
  # becomes the destination's chunk at the same place (holes stay holes), and the
  # destination grows to cover the bytes. The chunk holding the source's end goes too when
  # it also holds the destination's end. Shared: [sharedOffset, +sharedLength) of the
  # source (empty: nothing); the caller copies the rest of the range. attr: the
  # destination's. Read access to the source and write access to the destination.

  syncMetadata @39 () -> (status :Status);
  # Answers once every change of the namespace answered so far (to any client) is on the
  # disk of the active master and of its standbys in sync: what fsync, fsyncdir and a
  # finished command wait for. Changes are otherwise on disk within --sync-delay-ms.

  closeAll @40 (inodes :List(UInt64)) -> (status :Status);
  # close() of each inode in turn (an inode twice: two opens end), in one call: a client
  # that ends many opens in a short time (a mount) sends them together. At most 4,096
  # inodes; a longer list is refused whole (invalidArgument) and ends no open.

  watch @41 (watcher :Watcher) -> (status :Status);
  # This session's client caches names and attributes (a mount, in its kernel): from now
  # until the session ends, the master calls `watcher` with the names and inodes other
  # sessions (or the master itself) change among those it answered this session about.
  # Standbys refuse it (notActive); a session watches once (alreadyExists after).
}

struct NameRef {
  parent @0 :UInt64;
  name @1 :Text;
}

interface Watcher {
  changed @0 (entries :List(NameRef), inodes :List(UInt64), all :Bool) -> ();
  # Names (a directory and a name in it) and inodes whose entries or attributes changed,
  # in the order the master recorded them. `all`: the master forgot what it answered this
  # session about (too much of it, or too many changes queued), so anything cached may be
  # stale; it watches on.
  ended @1 () -> ();
  # The master stopped being the active one: nothing more will be told on this session.
}

enum SafeModeAction {
  get @0;
  enter @1;
  leave @2;
}

struct TrashEntry {
  path @0 :Text;
  inode @1 :UInt64;
  size @2 :UInt64;
  deletedNs @3 :Int64;
  expiresNs @4 :Int64;
}

struct ChunkReport {
  handle @0 :UInt64;
  version @1 :UInt64;
  size @2 :UInt64;
}

interface ChunkserverRegistry {
  register @0 (address :Text, rack :Text, capacityBytes :UInt64, usedBytes :UInt64,
               chunks :List(ChunkReport), server :ChunkServer, availableBytes :UInt64,
               features :UInt64)
      -> (status :Status, id :UInt64, heartbeatMs :UInt32, chunkSize :UInt64,
          tokenKeys :List(Common.TokenKey), active :Bool, epoch :UInt64);
  # A full chunk report. The master answers what the chunkserver should delete in the
  # first heartbeat. features: ChunkServer's feature bits (0 from an older chunkserver).
  heartbeat @1 (id :UInt64, capacityBytes :UInt64, usedBytes :UInt64,
                corruptHandles :List(UInt64), availableBytes :UInt64,
                changes :List(ChunkReport))
      -> (status :Status, deleteHandles :List(UInt64), tokenKeys :List(Common.TokenKey),
          active :Bool, epoch :UInt64);
  # corruptHandles: replicas the scrubber found bad since the last heartbeat.
  # changes: replicas created, moved to a new version or deleted (version 0) since the
  # registration's report or the last heartbeat, in the order they happened (size unset).
  # A standby keeps its map of replicas current with them, so that it can serve
  # locations and take over without waiting for full reports.
  # availableBytes: free space above the reserve, which new chunks and copies may use.
  # status notFound means: register again.
  # tokenKeys: every key chunk tokens are signed with now; they replace those held.
  # active, epoch: whether this master is the active one, and its epoch. A chunkserver
  # registers with every master but takes orders (deletes, versions, leases, copies) only
  # from an active one whose epoch is the highest it has seen.
}
