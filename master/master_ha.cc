// The master's part in high availability: joining the election, becoming active (taking
// the epoch, shipping the log), and, as a standby, following the active one's log.

#include <fmt/format.h>
#include <kj/debug.h>

#include "address.h"
#include "chunkserver_service.h"
#include "log.h"
#include "master.h"

namespace cairn {

void Master::startHa(kj::Network& network, RpcSecurity security) {
  if (!haEnabled()) return;
  masters = std::make_unique<PeerPool>(network, timer_, std::move(security));
  Election::Events events;
  events.elected = [this](uint64_t epoch) { promote(epoch); };
  events.deposed = [this](std::string why) { deposed(why); };
  events.activeChanged = [this](std::string address) { activeChanged(address); };
  events.inSyncChanged = [this](bool inSync) {
    inSync_ = inSync;
    if (!active_)
      logInfo("{} sync: {} reads", inSync ? "in" : "out of", inSync ? "serving" : "refusing");
  };
  election = std::make_unique<Election>(opts.election, kj::mv(events));
  // A store with half a snapshot in it lacks entries the active acknowledged.
  election->setCandidate(!store->installing());
  logInfo(
      "standby (id {}); ZooKeeper {}{}", opts.election.id, opts.election.servers,
      store->installing() ? "; a snapshot was cut short, so not a candidate until the next" : "");
}

void Master::promote(uint64_t newEpoch) {
  if (active_) return;
  if (sink != nullptr) sink->close();
  sink = nullptr;
  sinkHold = nullptr;
  following = nullptr;
  store->setEpoch(newEpoch);
  store->setWritable(true);
  shipper = std::make_unique<LogShipper>(*store, timer_, opts.replication,
                                         [this](std::vector<std::string> ids) {
                                           ids.insert(ids.begin(), opts.election.id);
                                           return election->writeInSync(std::move(ids));
                                         });
  store->setShipper(
      NamespaceStore::Shipper([this](const LogEntry& e) { return shipper->ship(e); }));
  // The log changed the store under the namespace's counters and the chunk map.
  ns->reload();
  chunks->becomeActive();
  active_ = true;
  activeAddress = opts.election.id;
  startedAt = timer_.now();
  // An entry of the new epoch, so that the log shows where it began.
  store->commit(Mutation{}).detach([](kj::Exception&& e) {
    logError("cannot record the new epoch: {}", e.getDescription().cStr());
  });
  logInfo("active at epoch {} (log entry {})", newEpoch, store->lastLsn());
  chunks->noteEvent(fmt::format("this master became active at epoch {}", newEpoch));
}

void Master::deposed(const std::string& why) {
  if (!active_) return;
  logWarn("no longer active: {}", why);
  // Nothing more is acknowledged: pending commits fail, the store takes no more.
  active_ = false;
  store->setWritable(false);
  watchers_.endAll();  // their caches are not kept true from here
  if (shipper) shipper->stop(why);
  if (opts.onDeposed) {
    // Nothing of the ZooKeeper client, nor of the store's writer, may run on while main()
    // closes the files and replaces the process: a write to a closed file would stop it.
    election->stop();
    store->stopWrites();
    opts.onDeposed(why);
  }
}

void Master::activeChanged(const std::string& address) {
  activeAddress = address;
  if (active_) return;
  if (sink != nullptr) sink->close();
  sink = nullptr;
  sinkHold = nullptr;
  following = nullptr;
  if (address.empty() || address == opts.election.id) return;
  following = followLoop(address).eagerlyEvaluate(
      [](kj::Exception&& e) { logError("following stopped: {}", e.getDescription().cStr()); });
}

kj::Promise<void> Master::followLoop(std::string address) {
  auto own = kj::heap<LogSinkImpl>(*store, opts.standbyAckWritten, [this](bool installing) {
    if (election) election->setCandidate(!installing);
  });
  sink = own.get();
  wire::LogSink::Client cap = kj::mv(own);
  // The active holds the other reference; this one keeps `sink` valid after it is gone.
  sinkHold = cap;
  auto req = masters->get<wire::Master>(address, Role::MASTER)
                 .replicationRequest()
                 .send()
                 .getService()
                 .followRequest();
  req.setId(opts.election.id);
  req.setLastEpoch(store->lastEpoch());
  req.setLastLsn(store->lastLsn());
  req.setSink(kj::mv(cap));
  logInfo("following the active master {} from log entry {}", address, store->lastLsn());
  return req.send()
      .then(
          [address](auto response) {
            Status s = fromWire(response.getStatus());
            logWarn("the active master {} stopped sending its log: {}", address, s.toString());
          },
          [this, address](kj::Exception&& e) {
            logWarn("lost the active master {}: {}", address, e.getDescription().cStr());
            masters->drop(address);
          })
      .then([this]() {
        if (sink != nullptr) sink->close();
        sink = nullptr;
        sinkHold = nullptr;
        return timer_.afterDelay(kj::SECONDS);
      })
      .then([this, address]() -> kj::Promise<void> {
        if (active_ || activeAddress != address) return kj::READY_NOW;
        return followLoop(address);
      });
}

kj::Promise<Status> Master::follow(std::string id, uint64_t lastEpoch, uint64_t lastLsn,
                                   wire::LogSink::Client sinkCap) {
  if (!active_ || !shipper) {
    return Status(ErrorCode::NOT_ACTIVE, "this master is not active");
  }
  // The id goes into ZooKeeper's comma-separated in-sync list: a HOST:PORT, nothing else.
  auto hp = parseHostPort(id);
  if (!hp.ok() || hp.value.port == 0 || id.find(',') != std::string::npos) {
    return Status::invalidArgument("a standby's id is its HOST:PORT");
  }
  if (id == opts.election.id) return Status::invalidArgument("a master cannot follow itself");
  return shipper->follow(std::move(id), lastEpoch, lastLsn, kj::mv(sinkCap));
}

Status Master::resign() {
  if (!haEnabled())
    return Status::invalidArgument("a single master (no ZooKeeper) cannot hand over");
  if (!active_) return Status(ErrorCode::NOT_ACTIVE, "this master is not active");
  bool standbyReady = false;
  for (auto& f : shipper->followers()) standbyReady |= f.inSync;
  if (!standbyReady) {
    return Status::unavailable("no standby is in sync: nobody could take over");
  }
  election->resign();
  return Status::OK();
}

std::vector<FollowerView> Master::standbys() const {
  return shipper && active_ ? shipper->followers() : std::vector<FollowerView>{};
}

void Master::describeState(wire::MasterState::Builder out) {
  out.setId(haEnabled() ? opts.election.id : "");
  bool installing = !active_ && store->installing();
  out.setRole(active_                         ? wire::MasterRole::ACTIVE
              : installing || sink == nullptr ? wire::MasterRole::CATCHING_UP
                                              : wire::MasterRole::STANDBY);
  out.setEpoch(store->currentEpoch());
  out.setLsn(store->lastLsn());
  out.setActive(activeAddress);
  out.setActiveLsn(sink != nullptr ? sink->lastReceived : 0);
  std::vector<std::string> inSync;
  for (auto& f : standbys()) {
    if (f.inSync) inSync.push_back(f.id);
  }
  auto list = out.initInSync(static_cast<uint>(inSync.size()));
  for (size_t i = 0; i < inSync.size(); ++i) list.set(static_cast<uint>(i), inSync[i]);
}

}  // namespace cairn
