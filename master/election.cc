#include "election.h"

// The synchronous API of the multi-threaded client.
#define THREADED

#include <fmt/format.h>
#include <kj/debug.h>
#include <zookeeper/zookeeper.h>

#include <algorithm>
#include <sstream>

#include "log.h"

namespace cairn {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> splitIds(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string id;
  while (std::getline(in, id, ',')) {
    if (!id.empty()) out.push_back(id);
  }
  return out;
}

// A node's data as text ("" when empty or missing); `stat` is filled when found.
int getText(zhandle_t* zh, const std::string& path, std::string& out, Stat* stat,
            watcher_fn watch = nullptr, void* ctx = nullptr) {
  char buffer[4096];
  int len = sizeof(buffer);
  int rc = watch ? zoo_wget(zh, path.c_str(), watch, ctx, buffer, &len, stat)
                 : zoo_get(zh, path.c_str(), 0, buffer, &len, stat);
  out = rc == ZOK && len > 0 ? std::string(buffer, static_cast<size_t>(len)) : std::string();
  return rc;
}

}  // namespace

Election::Election(ElectionOptions options, Events events)
    : opts(std::move(options)), events(std::move(events)) {
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  holdOffUntil = Clock::now() + std::chrono::milliseconds(opts.startHoldOffMs);
  pumping = pump().eagerlyEvaluate([](kj::Exception&& e) {
    logError("election events stopped: {}", e.getDescription().cStr());
  });
  thread = std::thread([this]() { run(); });
}

Election::~Election() { stop(); }

void Election::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  if (thread.joinable()) thread.join();
}

void Election::setCandidate(bool value) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    candidate = value;
    changed = true;
  }
  wake.notify_all();
}

void Election::resign() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    resignRequested = true;
    changed = true;
  }
  wake.notify_all();
}

kj::Promise<void> Election::writeInSync(std::vector<std::string> ids) {
  std::string value;
  for (auto& id : ids) value += (value.empty() ? "" : ",") + id;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    inSyncWrites.push_back(InSyncWrite{std::move(value), kj::mv(paf.fulfiller)});
  }
  wake.notify_all();
  return kj::mv(paf.promise);
}

std::string Election::path(const char* leaf) const { return opts.root + "/" + leaf; }

void Election::post(kj::Function<void()> fn) {
  std::lock_guard<std::mutex> lock(postMutex);
  posted.push_back(kj::mv(fn));
  if (postedReady) {
    postedReady->fulfill();
    postedReady = nullptr;
  }
}

kj::Promise<void> Election::pump() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(postMutex);
    if (posted.empty()) {
      postedReady = kj::mv(paf.fulfiller);
    } else {
      paf.fulfiller->fulfill();
    }
  }
  return paf.promise.then([this]() {
    std::vector<kj::Function<void()>> batch;
    {
      std::lock_guard<std::mutex> lock(postMutex);
      batch.swap(posted);
    }
    for (auto& fn : batch) fn();
    return pump();
  });
}

void Election::watcher(zhandle_t*, int type, int state, const char*, void* ctx) {
  auto* self = static_cast<Election*>(ctx);
  {
    std::lock_guard<std::mutex> lock(self->mutex);
    if (type == ZOO_SESSION_EVENT) self->sessionState = state;
    self->changed = true;
  }
  self->wake.notify_all();
}

bool Election::connect(std::unique_lock<std::mutex>& lock) {
  sessionState = ZOO_CONNECTING_STATE;
  lock.unlock();
  zhandle_t* handle = zookeeper_init(opts.servers.c_str(), &Election::watcher,
                                     opts.sessionTimeoutMs, nullptr, this, 0);
  lock.lock();
  if (handle == nullptr) {
    logWarn("cannot start a ZooKeeper client for {}", opts.servers);
    return false;
  }
  zh = handle;
  auto deadline = Clock::now() + std::chrono::milliseconds(opts.sessionTimeoutMs);
  wake.wait_until(lock, deadline,
                  [this]() { return stopping || sessionState == ZOO_CONNECTED_STATE; });
  if (sessionState != ZOO_CONNECTED_STATE) {
    disconnect(lock, "");
    return false;
  }
  lock.unlock();
  ensureNodes();
  lock.lock();
  return true;
}

void Election::disconnect(std::unique_lock<std::mutex>& lock, const std::string& why) {
  zhandle_t* handle = zh;
  zh = nullptr;
  bool wasActive = active;
  active = false;
  lock.unlock();
  if (wasActive) {
    post([this, why]() { events.deposed(why); });
  }
  // Closing ends the session: ZooKeeper deletes `active` at once if it still can be told.
  if (handle != nullptr) zookeeper_close(handle);
  lock.lock();
  if (!knownActive.empty()) {
    knownActive.clear();
    post([this]() { events.activeChanged(""); });
  }
  reportInSync(false);
}

void Election::reportInSync(bool inSync) {
  if (inSync == knownInSync) return;
  knownInSync = inSync;
  post([this, inSync]() { events.inSyncChanged(inSync); });
}

void Election::ensureNodes() {
  // Each level of the root, then the nodes; those that exist are left as they are.
  std::string prefix;
  std::stringstream in(opts.root);
  std::string part;
  while (std::getline(in, part, '/')) {
    if (part.empty()) continue;
    prefix += "/" + part;
    zoo_create(zh, prefix.c_str(), nullptr, -1, &ZOO_OPEN_ACL_UNSAFE, 0, nullptr, 0);
  }
  zoo_create(zh, path("epoch").c_str(), "0", 1, &ZOO_OPEN_ACL_UNSAFE, 0, nullptr, 0);
  zoo_create(zh, path("insync").c_str(), "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, nullptr, 0);
}

void Election::tryToWin(std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  std::string insync, epochText;
  Stat insyncStat{}, epochStat{};
  int rc = getText(zh, path("insync"), insync, &insyncStat);
  if (rc == ZOK) rc = getText(zh, path("epoch"), epochText, &epochStat);
  auto ids = splitIds(insync);
  bool eligible = ids.empty() || std::find(ids.begin(), ids.end(), opts.id) != ids.end();
  if (rc != ZOK || !eligible) {
    lock.lock();
    return;
  }
  uint64_t epoch = std::strtoull(epochText.c_str(), nullptr, 10) + 1;
  std::string next = std::to_string(epoch);
  std::string activePath = path("active"), insyncPath = path("insync"), epochPath = path("epoch");
  zoo_op_t ops[3];
  zoo_op_result_t results[3];
  Stat newEpochStat{};
  zoo_check_op_init(&ops[0], insyncPath.c_str(), insyncStat.version);
  zoo_create_op_init(&ops[1], activePath.c_str(), opts.id.data(), static_cast<int>(opts.id.size()),
                     &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, nullptr, 0);
  zoo_set_op_init(&ops[2], epochPath.c_str(), next.data(), static_cast<int>(next.size()),
                  epochStat.version, &newEpochStat);
  rc = zoo_multi(zh, 3, ops, results);
  lock.lock();
  if (rc != ZOK) return;  // someone else won, or the race moved on: look again
  active = true;
  epochVersion = newEpochStat.version;
  logInfo("elected active master at epoch {}", epoch);
  post([this, epoch]() { events.elected(epoch); });
}

void Election::run() {
  std::unique_lock<std::mutex> lock(mutex);
  while (!stopping) {
    if (zh == nullptr) {
      if (!connect(lock)) {
        wake.wait_for(lock, std::chrono::seconds(1), [this]() { return stopping; });
        continue;
      }
    }
    if (sessionState != ZOO_CONNECTED_STATE) {
      // Connection lost (or session expired): an active master stops now, before the
      // server can let its session expire; a standby just starts a new session.
      disconnect(lock, sessionState == ZOO_EXPIRED_SESSION_STATE
                           ? "ZooKeeper session expired"
                           : "lost the connection to ZooKeeper");
      continue;
    }
    if (resignRequested) {
      resignRequested = false;
      holdOffUntil = Clock::now() + std::chrono::milliseconds(opts.resignHoldOffMs);
      if (active) {
        disconnect(lock, "resigned (failover asked for)");
        continue;
      }
    }
    // The in-sync set, written only while `epoch` is still at our win.
    while (!inSyncWrites.empty()) {
      auto write = kj::mv(inSyncWrites.front());
      inSyncWrites.pop_front();
      if (!active) {
        write.done->reject(KJ_EXCEPTION(FAILED, "not the active master"));
        continue;
      }
      lock.unlock();
      std::string epochPath = path("epoch"), insyncPath = path("insync");
      zoo_op_t ops[2];
      zoo_op_result_t results[2];
      zoo_check_op_init(&ops[0], epochPath.c_str(), epochVersion);
      zoo_set_op_init(&ops[1], insyncPath.c_str(), write.value.data(),
                      static_cast<int>(write.value.size()), -1, nullptr);
      int rc = zoo_multi(zh, 2, ops, results);
      lock.lock();
      if (rc == ZOK) {
        write.done->fulfill();
      } else {
        write.done->reject(
            KJ_EXCEPTION(DISCONNECTED, "cannot record the in-sync masters", zerror(rc)));
      }
    }
    changed = false;
    lock.unlock();
    std::string current, insync;
    Stat stat{}, insyncStat{};
    // Watched, so that a standby hears at once that the active left it out.
    int insyncRc = getText(zh, path("insync"), insync, &insyncStat, &Election::watcher, this);
    int rc = getText(zh, path("active"), current, &stat, &Election::watcher, this);
    // A missing node leaves no data watch: one on its existence tells when it is made.
    if (rc == ZNONODE &&
        zoo_wexists(zh, path("active").c_str(), &Election::watcher, this, &stat) == ZOK) {
      lock.lock();
      continue;  // made meanwhile: read it
    }
    lock.lock();
    if (insyncRc == ZOK) {
      auto ids = splitIds(insync);
      reportInSync(std::find(ids.begin(), ids.end(), opts.id) != ids.end());
    }
    if (rc == ZOK || rc == ZNONODE) {
      if (rc == ZNONODE) current.clear();
      if (current != knownActive) {
        knownActive = current;
        post([this, current]() { events.activeChanged(current); });
      }
      if (active && current != opts.id) {
        disconnect(lock, "another master holds the active node");
        continue;
      }
      // A try that fails (another won, or this master is not in sync) waits for the next
      // change or half a second, as everything else here does.
      if (rc == ZNONODE && candidate && !active && Clock::now() >= holdOffUntil) tryToWin(lock);
    }
    wake.wait_for(lock, std::chrono::milliseconds(500), [this]() {
      return stopping || changed || !inSyncWrites.empty() || sessionState != ZOO_CONNECTED_STATE;
    });
  }
  bool wasConnected = zh != nullptr;
  if (wasConnected) {
    zhandle_t* handle = zh;
    zh = nullptr;
    lock.unlock();
    zookeeper_close(handle);
    lock.lock();
  }
  for (auto& write : inSyncWrites) write.done->reject(KJ_EXCEPTION(FAILED, "shutting down"));
}

}  // namespace cairn
