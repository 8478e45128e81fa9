#pragma once
// What the kernel caches for long while the master watches this mount's session: the names
// (positive and negative entries) and inodes it was given, and a thread that drops them from
// the kernel when the master says another client changed them, or drops everything when the
// watch ends. The thread, not the loop, writes the notifications: the kernel holds an
// invalidation of a name while a request in its directory is under way, and that request's
// reply comes from the loop.

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "client.h"

namespace cairn {

class KernelCache final : public NamespaceWatcher {
 public:
  // `maxNames`: names kept track of; past it all of them are dropped from the kernel.
  explicit KernelCache(fuse_session* session, size_t maxNames = size_t{1} << 18);
  ~KernelCache() override;

  // The kernel was given (on the loop thread) a name in `parent`, found or not, to keep for
  // long; or an inode: in an entry (`lookup`: the kernel counts one more lookup of it,
  // whatever its timeouts) or its attributes alone. forget: the kernel dropped `count`
  // lookups (all of them, in the end).
  void noteName(uint64_t parent, std::string_view name);
  void noteInode(uint64_t inode, bool lookup);
  void forget(uint64_t inode, uint64_t count);

  void changed(const std::vector<std::pair<uint64_t, std::string>>& entries,
               const std::vector<uint64_t>& inodes) override;
  void allChanged() override;

  // Stops the thread, waiting at most `wait` for the notification it is writing (one waits
  // while a request in its directory is unanswered); false: it is still stuck, and this
  // object must be left alive (the process is ending).
  bool stop(std::chrono::milliseconds wait);
  // Notifications written so far (tests).
  uint64_t written() const;

 private:
  struct Drop {
    uint64_t inode;    // the directory, for a name
    std::string name;  // empty: the inode's attributes and pages
  };
  // Every name kept track of, as drops; none kept after.
  std::deque<Drop> takeNames();
  void queue(std::deque<Drop> drops);
  void run();

  fuse_session* session;
  size_t maxNames;
  // Loop thread only. A name's key: the directory's 8 bytes, then the name.
  std::unordered_set<std::string> names;
  std::unordered_map<uint64_t, uint64_t> inodes;  // the kernel's lookups of each
  // Shared with the thread.
  mutable std::mutex mu;
  std::condition_variable wake, finished;
  std::deque<Drop> pending;
  bool stopping = false, done = false;
  uint64_t writes = 0;
  std::thread thread;
};

}  // namespace cairn
