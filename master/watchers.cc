#include "watchers.h"

#include <kj/debug.h>

#include <algorithm>

#include "log.h"
#include "namespace_store.h"

namespace cairn {
namespace {

// Keys (namespace.cc): "i" + inode, "d" + parent + name, both big-endian 64 bits.
bool inodeKey(const std::string& key) { return key.size() == 9 && key[0] == 'i'; }
bool entryKey(const std::string& key) { return key.size() > 9 && key[0] == 'd'; }

uint64_t be64At(const std::string& s, size_t pos) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}

}  // namespace

Watchers::~Watchers() {
  for (auto& weak : watches) {
    if (auto w = weak.lock()) w->owner = nullptr;
  }
}

std::shared_ptr<Watchers::Watch> Watchers::add(wire::Watcher::Client watcher) {
  auto w = std::make_shared<Watch>(this, kj::mv(watcher));
  watches.push_back(w);
  return w;
}

void Watchers::answeredDir(Watch* w, uint64_t dir) {
  if (w == nullptr || w->ended) return;
  if (w->dirs.insert(dir).second && w->dirs.size() + w->inodes.size() > limits.interest) {
    overflow(*w);
  }
}

void Watchers::answeredInode(Watch* w, uint64_t inode) {
  if (w == nullptr || w->ended) return;
  if (w->inodes.insert(inode).second && w->dirs.size() + w->inodes.size() > limits.interest) {
    overflow(*w);
  }
}

void Watchers::committed(const Mutation& m) {
  if (watches.empty()) return;
  // Many entries (chunk records, number reserves) name no inode and no entry.
  if (std::none_of(m.ops.begin(), m.ops.end(),
                   [](auto& op) { return inodeKey(op.first) || entryKey(op.first); })) {
    return;
  }
  std::vector<std::shared_ptr<Watch>> live;
  for (auto it = watches.begin(); it != watches.end();) {
    if (auto w = it->lock()) {
      live.push_back(std::move(w));
      ++it;
    } else {
      it = watches.erase(it);  // its session ended
    }
  }
  for (auto& [key, value] : m.ops) {
    if (inodeKey(key)) {
      uint64_t inode = be64At(key, 1);
      for (auto& w : live) {
        if (w.get() == origin && value) {
          answeredInode(w.get(), inode);
        } else {
          if (w.get() != origin) tell(*w, 0, nullptr, inode);
          if (!value) w->inodes.erase(inode);  // a deleted inode is not seen again
        }
      }
    } else if (entryKey(key)) {
      uint64_t parent = be64At(key, 1);
      std::string name = key.substr(9);
      for (auto& w : live) {
        if (w.get() == origin) {
          answeredDir(w.get(), parent);
        } else {
          tell(*w, parent, &name, 0);
        }
      }
    }
  }
}

void Watchers::tell(Watch& w, uint64_t parent, const std::string* name, uint64_t inode) {
  if (w.ended || w.all) return;
  if (name != nullptr) {
    if (!w.dirs.count(parent)) return;
    w.entries.emplace_back(parent, *name);
  } else {
    if (!w.inodes.count(inode)) return;
    w.changedInodes.push_back(inode);
  }
  if (w.entries.size() + w.changedInodes.size() > limits.queued) {
    overflow(w);
  } else {
    flushSoon();
  }
}

// Too much to keep or to queue: the session hears that anything may have changed, and what
// it was answered about starts anew.
void Watchers::overflow(Watch& w) {
  w.all = true;
  w.entries.clear();
  w.changedInodes.clear();
  w.dirs.clear();
  w.inodes.clear();
  flushSoon();
}

void Watchers::flushSoon() {
  if (flushQueued) return;
  flushQueued = true;
  // (The last turn's promise, done by now, is replaced; never from inside itself.)
  flushing = kj::evalLater([this]() {
               flushQueued = false;
               flush();
             }).eagerlyEvaluate([](kj::Exception&& e) {
    logError("telling watchers of changes: {}", e.getDescription().cStr());
  });
}

void Watchers::flush() {
  for (auto it = watches.begin(); it != watches.end();) {
    if (auto w = it->lock()) {
      send(*w);
      ++it;
    } else {
      it = watches.erase(it);
    }
  }
}

// One call at a time per session: what changes meanwhile waits for the next.
void Watchers::send(Watch& w) {
  if (w.sending || w.ended || (!w.all && w.entries.empty() && w.changedInodes.empty())) return;
  auto req = w.watcher.changedRequest();
  auto entries = req.initEntries(static_cast<unsigned>(w.entries.size()));
  for (unsigned i = 0; i < entries.size(); ++i) {
    entries[i].setParent(w.entries[i].first);
    entries[i].setName(w.entries[i].second);
  }
  auto inodes = req.initInodes(static_cast<unsigned>(w.changedInodes.size()));
  for (unsigned i = 0; i < inodes.size(); ++i) inodes.set(i, w.changedInodes[i]);
  req.setAll(w.all);
  w.entries.clear();
  w.changedInodes.clear();
  w.all = false;
  w.sending = true;
  w.inFlight = req.send()
                   .ignoreResult()
                   .then(
                       [&w]() -> kj::Promise<void> {
                         w.sending = false;
                         if (w.owner != nullptr) w.owner->flushSoon();
                         return kj::READY_NOW;
                       },
                       [&w](kj::Exception&&) {
                         // The session's connection is going (its end drops the Watch),
                         // or its watcher failed: the watch ends, and the session is told
                         // if it can still hear, so that it trusts nothing it kept on the
                         // strength of this watch (else it would go on trusting it).
                         w.sending = false;
                         return end(w);
                       })
                   .eagerlyEvaluate(nullptr);
}

kj::Promise<void> Watchers::end(Watch& w) {
  w.ended = true;
  w.entries.clear();
  w.changedInodes.clear();
  w.dirs.clear();
  w.inodes.clear();
  return w.watcher.endedRequest().send().ignoreResult().catch_([](kj::Exception&&) {});
}

void Watchers::endAll() {
  for (auto& weak : watches) {
    auto w = weak.lock();
    if (!w || w->ended) continue;
    w->inFlight = end(*w).eagerlyEvaluate(nullptr);
  }
}

}  // namespace cairn
