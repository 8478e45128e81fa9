#pragma once
// Sessions that cache names and attributes (mounts) and what they cached: every change the
// active master commits is told to each other session that was answered about the
// directory or the inode it touched, so that a mount can let its kernel keep names and
// attributes for long and still see other clients' changes at once (as NFSv4 delegations
// and CephFS capabilities do). What a session was answered about is kept here, bounded;
// past the bound the session is told that anything may have changed, and starts anew.

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "master.capnp.h"

namespace cairn {

struct Mutation;

class Watchers {
 public:
  // Bounds per session: directories and inodes answered about, and changes waiting to be
  // sent while the last call to its watcher is under way. Tests make them small.
  struct Limits {
    size_t interest = 1 << 20;
    size_t queued = 4096;
  };
  Watchers() = default;
  explicit Watchers(Limits limits) : limits(limits) {}
  ~Watchers();

  class Watch;
  // A session starts watching: its changes go to `watcher`. The Watch lives as long as the
  // session holds it (its end stops the calls).
  std::shared_ptr<Watch> add(wire::Watcher::Client watcher);

  // What `watch`'s session was answered about: the names of directory `dir` (a lookup,
  // readdir or a change in it) and the attributes of `inode`. Null: nothing (a session that
  // does not watch).
  void answeredDir(Watch* watch, uint64_t dir);
  void answeredInode(Watch* watch, uint64_t inode);

  // The session whose call is being dispatched (null for none): the changes committed
  // meanwhile are its own, not told back to it, and what they touch counts as answered.
  void setOrigin(Watch* watch) { origin = watch; }

  // A mutation committed: its inode and directory-entry records are told to the sessions
  // answered about them (the origin aside), in one call per session and event-loop turn.
  void committed(const Mutation& m);

  // This master is no longer the active one: each watcher is told, and nothing more.
  void endAll();

  size_t watching() const { return watches.size(); }

 private:
  void tell(Watch& w, uint64_t parent, const std::string* name, uint64_t inode);
  void overflow(Watch& w);
  void flushSoon();
  void flush();
  void send(Watch& w);
  // Nothing more is told to `w`, and it is told so (the call's answer, or its failure).
  static kj::Promise<void> end(Watch& w);

  Limits limits;
  std::list<std::weak_ptr<Watch>> watches;
  Watch* origin = nullptr;
  bool flushQueued = false;
  kj::Maybe<kj::Promise<void>> flushing;  // the flush of this event-loop turn
};

class Watchers::Watch {
 public:
  Watch(Watchers* owner, wire::Watcher::Client watcher) : owner(owner), watcher(kj::mv(watcher)) {}

 private:
  friend class Watchers;
  Watchers* owner;  // null once the Watchers are gone
  wire::Watcher::Client watcher;
  std::unordered_set<uint64_t> dirs, inodes;
  std::vector<std::pair<uint64_t, std::string>> entries;  // queued
  std::vector<uint64_t> changedInodes;                    // queued
  bool all = false;                                       // queued: everything
  bool sending = false;
  bool ended = false;
  kj::Maybe<kj::Promise<void>> inFlight;
};

}  // namespace cairn
