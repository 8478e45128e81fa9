#pragma once
// Shipping the metadata log from the active master to its standbys (GFS kept its
// operation log on remote machines before replying; HDFS's standby tails a shared edit
// log). Every committed entry goes to each standby that follows the active; the active's
// commit resolves only once every standby in sync holds it.
//
// In sync: a standby that has every entry the active acknowledged. The set of them is kept
// in ZooKeeper (Election::writeInSync), written before it changes what an acknowledgement
// waits for: a standby joins once it has caught up, and leaves (when it falls silent for
// standbyTimeout) before anything is acknowledged without it. Only a master in the set
// may become active, so none that is behind ever does.

#include <kj/async.h>
#include <kj/timer.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "master.capnp.h"
#include "namespace_store.h"

namespace cairn {

struct ReplicationOptions {
  // Acknowledgements wait for at least this many standbys in sync (0: the active alone
  // may acknowledge while no standby is in sync, as it records in ZooKeeper).
  uint32_t minSyncStandbys = 0;
  kj::Duration standbyTimeout = 5 * kj::SECONDS;
  // Entries kept for standbys that reconnect (beyond those some standby still lacks): the
  // last keepEntries, and no more than keepBytes of their keys and values (what bounds the
  // memory they take: about twice that). A standby further behind is sent
  // a snapshot.
  size_t keepEntries = 100000;
  size_t keepBytes = 16 << 20;
  size_t snapshotPieceBytes = 1 << 20;
};

struct FollowerView {
  std::string id;
  uint64_t acked = 0;  // the last entry it holds
  bool inSync = false;
  bool snapshot = false;  // copying a snapshot
};

// The active's side.
class LogShipper final : private kj::TaskSet::ErrorHandler {
 public:
  // `recordInSync` writes the in-sync set to ZooKeeper (with this master's id first).
  using RecordInSync = kj::Function<kj::Promise<void>(std::vector<std::string> ids)>;
  LogShipper(NamespaceStore& store, kj::Timer& timer, ReplicationOptions options,
             RecordInSync recordInSync);
  ~LogShipper();

  // The store's shipper: resolves once the standbys in sync hold `entry`.
  kj::Promise<void> ship(const LogEntry& entry);
  // A standby's follow call (see schema/master.capnp).
  // Resolves when the active stops sending to this standby, with the reason.
  kj::Promise<Status> follow(std::string id, uint64_t lastEpoch, uint64_t lastLsn,
                             wire::LogSink::Client sink);
  // Stops: pending acknowledgements fail, follow calls end.
  void stop(const std::string& why);
  std::vector<FollowerView> followers() const;
  uint64_t acknowledgedLsn() const { return released; }

 private:
  struct Follower;
  struct Pending {
    uint64_t lsn;
    kj::Own<kj::PromiseFulfiller<void>> done;
  };
  Follower* find(const std::string& id, uint64_t session);
  kj::Promise<void> sendSnapshot(std::string id, uint64_t session,
                                 std::shared_ptr<NamespaceStore::Snapshot> snap, bool first);
  kj::Promise<void> sendFrom(std::string id, uint64_t session);
  // Sends `entries` (in order, from the tail); resolves when the standby answered.
  kj::Promise<void> send(Follower& f, size_t from, size_t count);
  void acked(Follower& f, uint64_t lsn);
  void drop(Follower& f, Status why);
  void release();
  void updateInSync();
  kj::Promise<void> watchLoop();
  void trim();
  void taskFailed(kj::Exception&& exception) override;

  NamespaceStore& store;
  kj::Timer& timer;
  ReplicationOptions opts;
  RecordInSync recordInSync;
  // Entries after (baseEpoch, baseLsn), the store's position when this master became active.
  uint64_t baseEpoch, baseLsn;
  std::deque<LogEntry> tail;
  size_t tailBytes = 0;  // entryBytes() of the entries in `tail`
  std::map<std::string, std::unique_ptr<Follower>> followers_;
  uint64_t nextSession = 1;
  std::deque<Pending> pending;
  uint64_t released;  // every entry up to here is acknowledged
  // Acknowledgements wait for every follower in sync, and for those that left while in sync
  // until ZooKeeper no longer names them (with the last entry each held then).
  std::map<std::string, uint64_t> departed;
  bool recording = false;
  std::vector<std::string> recordedInSync;  // as ZooKeeper has it (without this master)
  bool inSyncKnown = false;                 // the first write has landed
  bool stopped = false;
  kj::Promise<void> watcher = nullptr;
  kj::TaskSet tasks;
};

// The standby's side: the sink the active calls, applying into the store.
class LogSinkImpl final : public wire::LogSink::Server {
 public:
  // `ackWritten`: answer once entries are in the log (else once applied); an entry marked
  // sync is answered once synced either way. `closed` is checked on every call: the sink of
  // a session that ended refuses everything.
  LogSinkImpl(NamespaceStore& store, bool ackWritten, kj::Function<void(bool installing)> onState);
  void close() { closed = true; }
  uint64_t sessionEpoch = 0;  // the active's, from its first entry or snapshot
  uint64_t lastReceived = 0;  // the last entry the active sent

 protected:
  kj::Promise<void> append(AppendContext context) override;
  kj::Promise<void> snapshot(SnapshotContext context) override;

 private:
  NamespaceStore& store;
  bool ackWritten;
  std::set<uint64_t> syncing;  // the last entry of each call waiting for its sync
  kj::Function<void(bool installing)> onState;
  bool closed = false;
};

}  // namespace cairn
