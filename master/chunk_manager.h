#pragma once
// The master's view of chunks and chunkservers: where each replica is (as the
// chunkservers report it: they have the last word), leases, versions, and what each
// chunkserver should delete. Runs on the master's event loop.

#include <kj/async.h>
#include <kj/function.h>
#include <kj/timer.h>
#include <kj/vector.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "chunk_table.h"
#include "master.capnp.h"
#include "namespace.h"
#include "placement.h"
#include "replica_rule.h"
#include "status.h"

namespace cairn {

// The master's calls to chunkservers, behind a seam so that tests can answer them.
class ReplicaControl {
 public:
  virtual ~ReplicaControl() = default;
  // With `leaseMs` > 0 the server also takes the lease, for that long from when its
  // version is set (a new chunk's first lease, in the call that creates it).
  virtual kj::Promise<Status> setVersion(uint64_t server, uint64_t handle, uint64_t version,
                                         bool create, uint32_t leaseMs) = 0;
  virtual kj::Promise<Status> grantLease(uint64_t server, uint64_t handle, uint64_t version,
                                         uint32_t durationMs) = 0;
  virtual kj::Promise<Status> truncate(uint64_t server, uint64_t handle, uint64_t version,
                                       uint32_t length) = 0;
  // Has `server` copy the replica at `version` from the chunkserver at `source`.
  virtual kj::Promise<Status> replicate(uint64_t server, uint64_t handle, uint64_t version,
                                        const std::string& source) = 0;
  // Has `server` copy its replica of `handle` at `version` into a new chunk `newHandle` at
  // `newVersion`, on its own disks (copy-on-write of a shared chunk).
  virtual kj::Promise<Status> copyChunk(uint64_t server, uint64_t handle, uint64_t version,
                                        uint64_t newHandle, uint64_t newVersion) = 0;
};

struct ClusterHealth {
  bool safeMode = false;
  bool manualSafeMode = false;  // entered by an admin: the namespace is read only
  uint64_t chunks = 0;
  uint64_t underReplicated = 0;  // fewer live replicas than the goal
  uint64_t missing = 0;          // no live replica at all
  uint64_t overReplicated = 0;
  uint64_t copiesInFlight = 0;
  uint64_t corrupt = 0;    // kept although found bad: the last copy of its chunk
  uint64_t unchecked = 0;  // not looked at yet since the start: left out of the counts above
  uint64_t onOneRack = 0;  // at their goal but on one rack while another has room
};

struct ChunkReportEntry {
  uint64_t handle = 0;
  uint64_t version = 0;
  uint64_t size = 0;
};

struct ReplicaAddress {
  std::string address;
  std::string rack;
};

struct ChunkView {
  ChunkRecord record;
  std::vector<ReplicaAddress> replicas;  // current version, live servers only
  std::string primary;                   // empty without a lease
  uint32_t leaseRemainingMs = 0;
  bool inlineWrites = false;  // every replica listed takes a write's bytes in the call
};

struct ServerView {
  uint64_t id = 0;
  std::string address;
  std::string rack;
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;
  uint64_t chunkCount = 0;
  bool live = false;
  bool decommissioning = false;
  uint64_t availableBytes = 0;  // free space above its reserve
  kj::Duration sinceHeartbeat = 0 * kj::SECONDS;
};

// What fsck says of one chunk of a file.
struct ChunkCheck {
  struct Replica {
    std::string address;
    wire::ReplicaState state;
  };
  uint32_t index = 0;
  uint64_t handle = 0;
  uint64_t version = 0;
  uint8_t goal = 0;
  wire::ChunkVerdict verdict = wire::ChunkVerdict::HEALTHY;
  std::vector<Replica> replicas;
  uint32_t files = 1;  // files holding the chunk (snapshots and copies share it)
};

// Something an operator wants to know happened (a chunkserver died, a repair, a
// decommission), for the status page. Never a file name.
struct ClusterEvent {
  kj::TimePoint at;
  std::string text;
};

// Work done since the start, for /metrics.
struct RepairCounters {
  uint64_t copiesDone = 0;  // re-replication and balancing copies that landed
  uint64_t copiesFailed = 0;
  uint64_t replicasDropped = 0;  // found bad, or failed a write
  uint64_t balancerLooks = 0;    // chunks the balancer looked at for a move
};

struct ChunkManagerOptions {
  kj::Duration leaseDuration = 60 * kj::SECONDS;
  kj::Duration deadAfter = 30 * kj::SECONDS;
  kj::Duration rpcTimeout = 10 * kj::SECONDS;
  uint64_t minFreeBytes = 0;  // chunkservers with less free space get no new chunks
  uint64_t seed = 0;
  // Re-replication: copies a chunkserver takes part in at once (as source or target), so
  // that repair does not starve clients.
  uint32_t copiesPerServer = 2;
  // Safe mode ends once this share of chunks has a live replica, or after the timeout.
  double safeModeThreshold = 0.999;
  kj::Duration safeModeTimeout = 60 * kj::SECONDS;
  // A safety net under the repair queue, as HDFS's periodic block reports are: each tick
  // checks this many chunks, in turn, for one off its goal that no change put in line
  // (100 million chunks in under 3 hours).
  size_t auditPerTick = 10000;
  // After a start every chunk is looked at once, this many a tick (HDFS checks its blocks
  // after safe mode in batches too), so that no tick holds the loop for long.
  size_t startupCheckPerTick = 250000;
  // The balancer looks at this many chunks a tick at most, going on where it stopped.
  size_t balanceLooksPerTick = 20000;
};

class ChunkManager final : private kj::TaskSet::ErrorHandler {
 public:
  ChunkManager(Namespace& ns, ReplicaControl& control, kj::Timer& timer,
               ChunkManagerOptions options);
  ~ChunkManager() noexcept(false);

  // Loads the chunk records from the namespace (no replicas known until reports come).
  void loadFromNamespace();
  // A standby mirrors what chunkservers report (their full reports at registration and
  // the changes in each heartbeat) and acts on none of it: it orders nothing, deletes
  // nothing, and its locations are the mirror's.
  void setMirroring(bool on) { mirroring = on; }
  bool isMirroring() const { return mirroring; }
  // The standby became active: the chunk records are loaded again (the log changed them)
  // and the mirror is judged as registrations would be, so that the new active knows
  // where the chunks are from its first second. Safe mode only if the mirror covers too
  // few chunks.
  void becomeActive();
  // A chunkserver's replica changes since its last report (version 0: removed).
  void applyChanges(uint64_t server, const std::vector<ChunkReportEntry>& changes);

  // A chunkserver (re)registers with a full chunk report. Stale and unknown replicas are
  // queued for deletion at its next heartbeat. Returns the server id. `availableBytes`
  // (free space above its reserve) defaults to capacity - used. `features`: what the
  // chunkserver can do beyond the first release (wire::FEATURE_*; older ones send 0).
  uint64_t registerServer(const std::string& address, const std::string& rack,
                          uint64_t capacityBytes, uint64_t usedBytes,
                          const std::vector<ChunkReportEntry>& chunks,
                          std::optional<uint64_t> availableBytes = std::nullopt,
                          uint64_t features = wire::FEATURES_ALL);
  // Returns false if `id` is unknown (the chunkserver must register again). The deletes
  // handed out are those the replica rule allows now (mayDelete); others wait.
  bool heartbeat(uint64_t id, uint64_t capacityBytes, uint64_t usedBytes,
                 std::vector<uint64_t>& deleteHandles,
                 std::optional<uint64_t> availableBytes = std::nullopt);
  // Marks servers silent for longer than deadAfter as dead; returns how many.
  size_t sweepDeadServers();

  // Chunk locations of a file, holes left out. A standby's come from its mirror: no
  // primary, replicas as the chunkservers last reported.
  std::vector<ChunkView> locate(uint64_t inode, uint32_t first, uint32_t count);

  // Makes sure chunk `index` of `inode` exists and that a live primary holds a lease on
  // it, bumping the version first when a new lease is granted. Calls for one chunk are
  // serialized. `failures` are what each replica said when the caller's write at
  // `failedVersion` failed: afterFailedWrite() decides which replicas leave, or that the
  // write fails (its error is returned, and no replica leaves).
  kj::Promise<Result<ChunkView>> prepareWrite(uint64_t inode, uint32_t index,
                                              std::vector<ReplicaFailure> failures = {},
                                              uint64_t failedVersion = 0);

  // A shrinking truncate to `size` that ends within a chunk. In one step for the chunk
  // holding byte `size` (no lease is granted meanwhile): a new version is recorded (it ends
  // every lease), `commitSize` records the new size (synced: the bytes past it are then no
  // part of the file, whatever a crash leaves on the replicas), and the replicas cut the
  // chunk there. Replicas that fail the cut leave the chunk, unless all fail: then none
  // does, the version stays and the error is returned (the size stays committed).
  // `commitSize` is not called when nothing changed (no live replica, a failed copy).
  kj::Promise<Status> truncateChunk(uint64_t inode, uint64_t size,
                                    kj::Function<kj::Promise<Status>()> commitSize);

  // Before a file that ends at `size` grows: a cut owed in its last chunk (a truncate
  // recorded whose replicas were not all cut) is made first.
  kj::Promise<Status> settleCut(uint64_t inode, uint64_t size);

  // Chunks no longer referenced: their replicas are deleted at the next heartbeats.
  void release(const std::vector<uint64_t>& handles);

  // Sharing chunks (snapshots, copies; master/chunk_share.cc). freeze() stops new leases
  // and cuts on the chunks of `inodes`, waits for those under way, and revokes the leases
  // held (under a new version, as GFS does before a snapshot), so that no write lands in a
  // chunk once it is shared; thaw() lets them go on. Freezes of one file nest.
  kj::Promise<Status> freeze(std::vector<uint64_t> inodes);
  void thaw(const std::vector<uint64_t>& inodes);
  // Whether the chunks of `inode` may be shared now: it is frozen, and no lease or step
  // that could grant one is left on them.
  bool quiet(uint64_t inode);

  // A reader found the replica on `address` corrupt. It leaves the chunk unless it is the
  // last current replica (its other blocks are still the best copy there is).
  void reportBadReplica(uint64_t handle, uint64_t version, const std::string& address);

  // Runs once a second on the master's loop: dead servers, safe mode, re-replication,
  // surplus replicas, balancing.
  void tick();
  bool inSafeMode() const { return safeMode; }
  // Safe mode by an admin's order: it lasts until leaveSafeMode, and the namespace is read
  // only meanwhile. Leaving ends the automatic one too (HDFS's `-safemode leave`).
  void enterSafeMode();
  void leaveSafeMode();
  bool inManualSafeMode() const { return manualSafeMode; }
  // Why a change is refused now: readOnly in a manual safe mode (not retried), safeMode in
  // the automatic one (retried until chunkservers have reported); OK outside safe mode.
  Status safeModeRefusal() const;
  // A file's goal changed: its chunks gain or lose replicas at the next ticks.
  void goalChanged(uint64_t inode, uint8_t goal);
  // Chunks `first`..`first + count` of a file gained or lost another file as owner: their
  // goal is the highest of their files' again.
  void ownersChanged(uint64_t inode, uint32_t first, uint32_t count);
  // The scrubber on `server` found its replica of `handle` bad.
  void reportCorrupt(uint64_t server, uint64_t handle);
  // Starts draining `address`; see the schema for `remaining` and `done`.
  Status decommission(const std::string& address, uint64_t& remaining, bool& done);
  // Starts balancing to within `threshold`; returns the spread of use now.
  double balance(double threshold);
  bool balancing() const { return balanceThreshold >= 0; }
  ClusterHealth health();
  // The chunks of `inode` in [first, first+count) with their replicas and a verdict (fsck).
  std::vector<ChunkCheck> check(uint64_t inode, uint32_t first, uint32_t count);

  std::vector<ServerView> servers() const;
  // The last events, oldest first.
  const std::deque<ClusterEvent>& events() const { return recent; }
  void noteEvent(std::string text) { note(std::move(text)); }
  const RepairCounters& repairs() const { return repairCounters; }
  // Chunks whose lease is valid now.
  size_t leasesHeld();
  size_t knownChunks() const { return chunks.size(); }
  // Chunks off their goal that are not in line for repair: 0 unless a change forgot to ask
  // (tests check this; it walks every chunk).
  size_t offGoalUnattended();
  // Chunks in line to be looked at by the next tick.
  size_t awaitingAttention() const;
  // Chunks with a lease or a step kept in memory (tests: they go once both are over).
  size_t activeChunks() const { return activity.size(); }
  // Chunks not yet looked at since the start.
  size_t uncheckedSinceStart() const { return startupLeft; }

 private:
  struct Server {
    uint64_t id;
    std::string address;
    std::string rack;
    uint64_t capacityBytes = 0;
    uint64_t usedBytes = 0;
    uint64_t availableBytes = 0;
    kj::TimePoint lastHeartbeat = kj::origin<kj::TimePoint>();
    bool live = true;
    uint32_t recentCreations = 0;
    bool decommissioning = false;
    uint64_t features = 0;  // wire::FEATURE_* bits it registered with
    uint32_t copiesInFlight = 0;
    HandleSet chunks;
    std::vector<uint64_t> pendingDeletes;
  };
  // One per chunk, so kept small (80 bytes): what only some chunks have at a time (a lease,
  // a step under way, corrupt replicas) lives in `activity` and `corruptReplicas`.
  struct Chunk {
    ChunkRecord record;  // record.handle is the key in `chunks`
    uint64_t inode = 0;
    uint64_t issued = 0;      // the highest version ever sent to a replica
    ReplicaSet replicas;      // servers holding the current version
    uint8_t goal = 0;         // the file's replication goal; 0 = unknown
    bool copying = false;     // a re-replication copy is in flight
    bool hasCorrupt = false;  // some replica is in `corruptReplicas`
    bool unchecked = false;   // not looked at yet since the start (see audit())
  };
  static_assert(sizeof(Chunk) <= 80, "a hundred million of these: every byte counts");
  struct ChunkKey {
    uint64_t& operator()(Chunk& c) const { return c.record.handle; }
  };
  // A chunk's lease and steps, while it has either.
  struct Activity {
    std::optional<uint64_t> primary;
    kj::TimePoint leaseExpiry = kj::origin<kj::TimePoint>();
    kj::TimePoint lastWrite = kj::origin<kj::TimePoint>();  // last prepareWrite
    kj::Maybe<kj::ForkedPromise<void>> busy;  // the last step (lease, cut, copy) in line
    uint32_t steps = 0;                       // steps in line or running
  };
  struct Counts {
    size_t live = 0;       // live replicas
    size_t effective = 0;  // live replicas not on a decommissioning server
  };

  Server* serverOf(uint64_t id) { return id < serverIndex.size() ? serverIndex[id] : nullptr; }
  Activity* activityOf(uint64_t handle);
  // Ends activities with no lease left and no step in line (from tick()).
  void pruneActivity();
  // Whether `server`'s replica of `c` was found bad and kept.
  bool isCorrupt(const Chunk& c, uint64_t server) const;
  size_t corruptCount(const Chunk& c) const;
  ChunkView view(const Chunk& c);
  // Whether server `id` registered with `feature` (wire::FEATURE_*); whether every one of
  // `ids` did (none: false).
  bool has(uint64_t id, uint64_t feature);
  bool allHave(const std::vector<uint64_t>& ids, uint64_t feature);
  bool leaseValid(const Chunk& c);
  std::vector<uint64_t> liveReplicas(const Chunk& c);
  // Live replicas not known to be corrupt: those that hold every acknowledged byte.
  std::vector<uint64_t> goodReplicas(const Chunk& c);
  // The highest version ever sent for the chunk (in memory or recorded).
  static uint64_t issuedOf(const Chunk& c);
  // A version number for a bump, never one handed out before.
  uint64_t nextVersion(Chunk& c);
  // Records the chunk's version, with the highest number handed out.
  kj::Promise<void> recordVersion(Chunk& c);
  // Runs `step` for chunk `handle` once no other step for it is in progress. A step runs
  // to its end even if its caller stops waiting (the next one waits for it): it may own
  // what it uses, never borrow it from the caller.
  kj::Promise<void> serialize(uint64_t handle, kj::Function<kj::Promise<void>()> step);
  // A write under way on a file (prepareWrite, truncateChunk): held by the caller's promise
  // and by every step it starts, so that a step whose caller stopped waiting still counts
  // (see writesUnderWay) until it ends.
  using Hold = std::shared_ptr<void>;
  Hold underWay(uint64_t inode);
  // The same as serialize(), resolving to the step's result, which lives with the step
  // until the caller takes it; `hold` is kept until the step ends.
  template <typename T>
  kj::Promise<T> serialized(uint64_t handle, kj::Function<kj::Promise<T>()> step,
                            Hold hold = nullptr) {
    auto out = std::make_shared<kj::Maybe<T>>();
    return serialize(
               handle,
               [out, step = kj::mv(step), hold = kj::mv(hold)]() mutable {
                 return step().then([out](T value) { *out = kj::mv(value); }).attach(kj::mv(hold));
               })
        .then([out]() { return kj::mv(KJ_ASSERT_NONNULL(*out)); });
  }
  kj::Promise<Result<ChunkView>> allocate(uint64_t inode, uint32_t index, uint8_t goal, Hold hold);
  kj::Promise<Result<ChunkView>> prepareWriteNow(uint64_t inode, uint32_t index,
                                                 std::vector<ReplicaFailure> failures,
                                                 uint64_t failedVersion, Hold hold);
  // A chunk a step was for left the map meanwhile: its creation failed on every server (the
  // record was forgotten), or its file was cut or removed. The caller asks again, and then
  // learns which.
  static Status chunkGone();
  // `commit` is shared with the chunk's step, which may outlive the caller.
  kj::Promise<Status> truncateChunkNow(uint64_t inode, uint64_t size,
                                       std::shared_ptr<kj::Function<kj::Promise<Status>()>> commit,
                                       Hold hold);
  // Within the chunk's step: a new version, then `commit` (if any: the truncate's new size),
  // then the live replicas cut the chunk at `offset`. The cut stays owed (record.cutAt,
  // `owedCuts`) if no replica made it.
  kj::Promise<Status> cutReplicas(uint64_t handle, uint32_t offset,
                                  kj::Function<kj::Promise<Status>()>* commit);
  // Tries each owed cut again (from tick()).
  void settleOwedCuts();
  // A write step (prepareWrite, truncateChunk) on a frozen file waits for the next
  // change (then looks again); one that starts counts as under way (underWay()) until
  // leave().
  kj::Promise<void> nextChange();
  void leave(uint64_t inode);
  // Wakes every waiter of nextChange(): each looks again.
  void wakeWaiters();
  // Resolves once no write step on `inodes` is under way.
  kj::Promise<void> drained(std::vector<uint64_t> inodes);
  kj::Promise<Status> revokeLeases(const std::vector<uint64_t>& inodes);
  // The chunk `record` of `inode` is shared: its replicas copy it to a new chunk (locally),
  // which takes its place in `inode`. OK also when the slot changed meanwhile (the caller
  // looks again).
  kj::Promise<Status> copyOnWrite(uint64_t inode, ChunkRecord record, Hold hold);
  // Never confirmed created and no replica known: it holds no byte (allocated, but its
  // master died before any chunkserver created it).
  static bool neverWritten(const Chunk& c);
  // Creates such a chunk on new servers, under a new version.
  kj::Promise<Result<ChunkView>> recreate(uint64_t handle);
  // `created` of `asked` servers hold the new chunk, the first with the lease if it was sent
  // one (setVersionOn's `leaseFirst`): recorded as created, then the lease handed out
  // (granted first if it was not sent; after one more version if a server failed).
  kj::Promise<Result<ChunkView>> confirmCreated(uint64_t handle, std::vector<uint64_t> created,
                                                size_t asked, bool leaseSent);
  kj::Promise<Result<ChunkView>> grantNewLease(uint64_t handle);
  // `members`: the replicas at the chunk's version when it was set (see leaseTaken).
  kj::Promise<Result<ChunkView>> grantLeaseTo(uint64_t handle, uint64_t primary,
                                              std::vector<uint64_t> members);
  // `primary` holds the chunk's lease (it answered): recorded, and the chunk as a writer
  // sees it; unless one of `members` left meanwhile, which takes a new version first.
  kj::Promise<Result<ChunkView>> leaseTaken(uint64_t handle, uint64_t primary,
                                            const std::vector<uint64_t>& members);
  // The servers that answered OK and are still live.
  std::vector<uint64_t> succeeded(const std::vector<ServerFailure>& results);
  // Calls setVersion on `servers`; resolves to what each answered, in order. The first
  // also takes the lease when `leaseFirst`.
  kj::Promise<std::vector<ServerFailure>> setVersionOn(std::vector<uint64_t> servers,
                                                       uint64_t handle, uint64_t version,
                                                       bool create, bool leaseFirst = false);
  // Moves the chunk to a new version on its live replicas (recorded first, GFS's order).
  // Replicas that do not follow leave, and the others move once more (up to
  // MAX_FENCE_ROUNDS) so that a late arrival of the order cannot make a leaver current; if
  // none follows, the old version stays and nothing leaves. Resolves to the replicas now
  // current.
  static constexpr int MAX_FENCE_ROUNDS = 4;
  kj::Promise<std::vector<uint64_t>> bumpVersion(uint64_t handle, int round = 0);
  // Every change of a chunk's replicas goes through these two: they keep each server's
  // chunk set, `attention` and `reportedCount` with it.
  void addReplica(Chunk& c, uint64_t server);
  void removeReplica(Chunk& c, uint64_t server);
  // addReplica without the server's chunk set (a takeover rebuilds the sets at its end).
  void countReplica(Chunk& c, uint64_t server);
  // Puts the chunk in `attention` (unless the check after the start will look at it).
  void mark(Chunk& c);
  // What safe mode counts: a chunk with a replica, or one never created (nothing to wait
  // for). Changes of `record` and `record.pending` go through these to keep the count.
  static bool reported(const Chunk& c);
  void assignRecord(Chunk& c, const ChunkRecord& record);
  void setPending(Chunk& c, bool pending);
  // Drops the chunk from the map and everything kept of it.
  void forget(Chunk& c);
  // A replica found bad leaves the chunk, unless it is the last current one (then it is
  // kept and counted as corrupt).
  void dropCorrupt(Chunk& c, uint64_t server, const char* finder);
  // Drops the replicas that afterFailedWrite() names; the error it gives, if any.
  Status applyWriteFailures(Chunk& c, const std::vector<ReplicaFailure>& failures);
  // Live chunkservers without a replica of `c` that have room for a copy.
  size_t roomElsewhere(const Chunk& c);
  PlacementCandidate candidate(const Server& s) const;
  // Room for one more chunk: options.minFreeBytes free, one byte at least.
  uint64_t minRoom() const { return std::max<uint64_t>(options.minFreeBytes, 1); }
  bool hasRoom(const PlacementCandidate& p) const { return freeBytes(p) >= minRoom(); }
  uint8_t goalOf(Chunk& c);
  uint8_t highestGoal(const std::vector<ChunkOwner>& owners);
  Counts counts(const Chunk& c);
  // A replica that counts toward the goal: on a live server that is not draining, not
  // found corrupt.
  bool effective(const Chunk& c, uint64_t server);
  bool canCopy(uint64_t server);
  static bool deletePending(const Server& s, uint64_t handle);
  void updateSafeMode();
  // The chunks of `attention` still off their goal that are not short of copies (those go
  // to the repair line); those at their goal leave the set.
  std::vector<uint64_t> needingWork();
  // At its goal: as many effective and live replicas as the goal, no copy under way, and
  // not onOneRack().
  bool atGoal(Chunk& c);
  bool replicasAtGoal(Chunk& c);
  // Two effective replicas or more, all on one rack, while a server of another rack that
  // does not hold the chunk has room for it (HDFS's rule: two racks at least). Judged
  // against the room counted at the last tick.
  bool onOneRack(const Chunk& c);
  void surveyServers();  // fills copyTargets and roomByRack
  // Copies each chunk of `handles` that is onOneRack() to another rack; the surplus then
  // leaves from the shared rack (see removeSurplus).
  void spreadRacks(const std::vector<uint64_t>& handles);
  // Checks the next `n` chunks (in slot order, round and round) for one off its goal that
  // nothing put in `attention` (options.auditPerTick each tick; after a start, every chunk
  // once, options.startupCheckPerTick a tick).
  void audit(size_t n);
  // Starts the copies the free slots allow, from the front of the repair line.
  void scheduleRepairs();
  void leaveRepairLine(uint64_t handle);
  // The chunk's place in the repair line if it is short of copies and has a live replica.
  std::optional<std::tuple<uint32_t, uint32_t, uint64_t>> shortOf(Chunk& c);
  // In `attention`, in the repair line at the place its state gives it, or at its goal.
  bool attended(Chunk& c);
  void removeSurplus(const std::vector<uint64_t>& handles);
  void balanceStep();
  void stopBalancing();
  // The difference between the most and the fewest chunks a live server holds, over the
  // average.
  double spread() const;
  // Whether moving `c`'s replica from server `from` to `to` leaves it on fewer racks.
  bool losesARack(const Chunk& c, uint64_t from, uint64_t to);
  // Copies `handle` from `source` to `target`; with `moveFrom`, that replica goes once the
  // copy is in place (a balancing move).
  void startCopy(uint64_t handle, uint64_t source, uint64_t target,
                 std::optional<uint64_t> moveFrom);
  // True if the chunk may be copied or trimmed now. A lease that no write has used for a
  // while is revoked first (under a new version, so that no write of the old lease can
  // slip past a copy); a busy one makes the chunk wait.
  bool readyForRepair(uint64_t handle, Chunk& c);
  void taskFailed(kj::Exception&& exception) override;
  // Takes a chunkserver's report into the map as a registration does: stale and unknown
  // replicas are queued for deletion, current ones become replicas.
  void acceptReport(Server& s, const std::vector<ChunkReportEntry>& report, size_t& stale,
                    size_t& orphans);
  // One reported replica of `c` (null: a chunk the namespace lacks): true if it is a
  // replica to add. A stale or orphaned one is queued for deletion on `s`; a version newer
  // than recorded (and never issued) is adopted, the chunk's older replicas queued.
  bool judgeReplica(Server& s, Chunk* c, uint64_t handle, uint64_t version, size_t& stale,
                    size_t& orphans);
  std::vector<ChunkView> mirrorLocate(uint64_t inode, uint32_t first, uint32_t count);
  void queueDelete(uint64_t server, uint64_t handle);
  // A replica queued for deletion turned out current (reported before its record landed).
  void unqueueDelete(uint64_t server, uint64_t handle);

  Namespace& ns;
  ReplicaControl& control;
  kj::Timer& timer;
  ChunkManagerOptions options;
  std::mt19937_64 rng;
  uint64_t nextServerId = 1;
  std::map<uint64_t, Server> serversById;
  std::vector<Server*> serverIndex;  // by id (servers are never removed)
  std::map<std::string, uint64_t> serverByAddress;
  ChunkTable<Chunk, ChunkKey> chunks;  // by handle
  // Handles whose replicas are made before their record is (a copy-on-write's copies):
  // reported by a chunkserver meanwhile, they are not orphans. (Before `activity`, whose
  // steps take them out as they end.)
  std::unordered_set<uint64_t> unrecorded;
  std::unordered_map<uint64_t, Activity> activity;         // by handle
  std::map<uint64_t, std::set<uint64_t>> corruptReplicas;  // handle -> servers
  // Chunks that may be off their goal: a replica came or went (a server died, a copy
  // landed, a write failed), the goal changed, a replica was found corrupt, a server
  // started draining, a copy ended. Chunks not in it are at their goal.
  std::unordered_set<uint64_t> attention;
  // Chunks short of copies with a live replica, most urgent first: the fewest copies left
  // (one before two), then the largest shortfall. A tick moves a chunk here from
  // `attention` when it finds it short, and takes it out when something changes it again;
  // repairs start from the front.
  using Urgency = std::tuple<uint32_t, uint32_t, uint64_t>;  // effective, 255 - shortfall, handle
  std::set<Urgency> repairLine;
  std::unordered_map<uint64_t, Urgency> inRepairLine;
  size_t auditCursor = 0;  // the next slot of `chunks` audit() looks at
  // Live servers not draining, as placement sees them (copies change only their slots
  // within a tick), and those with room for a chunk by rack: surveyed at each tick's start.
  std::vector<PlacementCandidate> copyTargets;
  std::map<std::string, size_t> roomByRack;
  size_t roomTotal = 0;
  // When spreadRacks last copied a chunk to another rack, by handle, and in that order.
  std::unordered_map<uint64_t, kj::TimePoint> spreadTried;
  std::deque<std::pair<kj::TimePoint, uint64_t>> spreadOrder;
  size_t startupLeft = 0;  // chunks `unchecked`
  // Chunks whose record owes a cut, and when the ticks try it next.
  struct OwedCut {
    kj::TimePoint at = kj::origin<kj::TimePoint>();
    kj::Duration delay = 0 * kj::SECONDS;
  };
  std::map<uint64_t, OwedCut> owedCuts;
  void oweCut(uint64_t handle);
  // Chunks that are reported(): safe mode's measure, kept without walking the chunks.
  size_t reportedCount = 0;
  bool safeMode = false;
  bool manualSafeMode = false;
  kj::TimePoint startedAt;
  std::deque<ClusterEvent> recent;
  RepairCounters repairCounters;
  void note(std::string text);
  double balanceThreshold = -1;  // < 0: not balancing
  // Where the balancer is in a source's chunks for a target: a round goes once through
  // them from `start`, round to the smallest handle and up to `start` again. A round in
  // which no chunk could move, nor had to wait, means that source has nothing for that
  // target.
  struct BalanceCursor {
    uint64_t start = 0;
    uint64_t next = 0;
    bool wrapped = false;  // past the largest handle, in this round
    bool waited = false;   // a chunk that could move was busy, in this round
    bool done = false;     // a round with neither: nothing to give
    size_t doneAt = 0;     // the source's chunk count then (a change reopens it)
  };
  std::map<std::pair<uint64_t, uint64_t>, BalanceCursor> balanceCursors;  // (target, source)
  bool mirroring = false;
  // A standby's mirror: by handle, the version each server reported.
  struct MirrorKey {
    uint64_t& operator()(ReportedCopies& c) const { return c.handle; }
  };
  ChunkTable<ReportedCopies, MirrorKey> mirror;
  // Server `id` no longer reports chunk `handle` to this standby.
  void unmirror(uint64_t handle, uint64_t id);
  // Sharing: how many freezes hold each file, the write steps under way on each, and who
  // waits for either to change.
  std::map<uint64_t, uint32_t> frozenInodes;
  std::map<uint64_t, uint32_t> writesUnderWay;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters;
  kj::TaskSet copies;
};

}  // namespace cairn
