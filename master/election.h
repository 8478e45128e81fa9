#pragma once
// Which master is active, decided through ZooKeeper (Debian's zookeeper server, its C
// client libzookeeper-mt), as HDFS's failover controller does.
//
// Under the root node (default /cairn):
//   active  ephemeral, holds the active master's id: whoever created it is active until its
//           session ends;
//   epoch   the number of elections won so far; each winner takes the next one;
//   insync  the ids of the masters that hold every acknowledged mutation, written by the
//           active. Only a master named there (or any, on a cluster that never had an
//           active) may run, so a standby that was behind never becomes active.
// Winning is one atomic multi-operation: insync unchanged since read, create `active`, set
// `epoch` to the next number. The active's later writes of `insync` check that `epoch` has
// not moved, so a deposed master cannot write them.
//
// The ZooKeeper client runs on its own threads; this class talks to it from one thread of
// its own and reports to the event loop it was made on. A master whose
// connection to ZooKeeper drops is deposed at once: the client notices after two thirds of
// the session timeout, before the server lets the session (and `active`) expire.

#include <kj/async.h>
#include <kj/function.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

typedef struct _zhandle zhandle_t;

namespace cairn {

struct ElectionOptions {
  std::string servers;  // ZooKeeper "HOST:PORT,..."
  std::string root = "/cairn";
  std::string id;  // this master's address as clients and other masters reach it
  int sessionTimeoutMs = 4000;
  // After resigning (an admin's failover), this master stays out of the race this long.
  int resignHoldOffMs = 5000;
  // From the start, it stays out this long (a deposed master started again, so that the
  // one it handed over to wins).
  int startHoldOffMs = 0;
};

class Election {
 public:
  struct Events {
    // On the master's event loop.
    kj::Function<void(uint64_t epoch)> elected;
    kj::Function<void(std::string why)> deposed;
    kj::Function<void(std::string active)> activeChanged;  // "" while there is none
    // Whether ZooKeeper names this master in `insync` (false while not connected): then
    // every mutation the active acknowledges waits for it.
    kj::Function<void(bool inSync)> inSyncChanged;
  };
  // Starts at once; made on the master's event loop, where `events` arrive.
  Election(ElectionOptions options, Events events);
  ~Election();

  // Whether this master may run: it holds every mutation the active acknowledged (it is a
  // standby that caught up). Checked against `insync` in ZooKeeper too.
  void setCandidate(bool candidate);
  // Leaves the active role on purpose, and the race for resignHoldOffMs.
  void resign();
  // Ends the session and the election thread (the ZooKeeper client's threads with it);
  // waits for them. The destructor does it too.
  void stop();
  // The active writes who holds every acknowledged mutation. Resolves (on the loop) once
  // ZooKeeper has it; fails if this master is no longer active or ZooKeeper is unreachable.
  kj::Promise<void> writeInSync(std::vector<std::string> ids);

 private:
  struct InSyncWrite {
    std::string value;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> done;
  };
  static void watcher(zhandle_t* zh, int type, int state, const char* path, void* ctx);
  void run();
  bool connect(std::unique_lock<std::mutex>& lock);
  void disconnect(std::unique_lock<std::mutex>& lock, const std::string& why);
  void ensureNodes();
  // Tells the loop whether this master is in sync, if that changed (under the lock).
  void reportInSync(bool inSync);
  void tryToWin(std::unique_lock<std::mutex>& lock);
  // Runs `fn` on the loop (from the election thread).
  void post(kj::Function<void()> fn);
  kj::Promise<void> pump();
  std::string path(const char* leaf) const;

  ElectionOptions opts;
  Events events;
  std::mutex mutex;
  std::mutex postMutex;  // guards the two below; never held with `mutex` waited for
  std::vector<kj::Function<void()>> posted;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> postedReady;
  kj::Promise<void> pumping = nullptr;
  std::condition_variable wake;
  bool stopping = false;
  bool changed = false;  // a watch fired or the session's state moved
  bool candidate = false;
  bool resignRequested = false;
  std::chrono::steady_clock::time_point holdOffUntil{};
  std::deque<InSyncWrite> inSyncWrites;
  zhandle_t* zh = nullptr;
  int sessionState = 0;
  bool active = false;
  int epochVersion = -1;     // the epoch node's version our win left
  std::string knownActive;   // as last reported to the loop
  bool knownInSync = false;  // as last reported to the loop
  std::thread thread;
};

}  // namespace cairn
