#include "kernel_cache.h"

#include <cerrno>
#include <cstring>

#include "log.h"

namespace cairn {
namespace {

std::string nameKey(uint64_t parent, std::string_view name) {
  std::string k(sizeof(parent), '\0');
  memcpy(k.data(), &parent, sizeof(parent));
  k.append(name);
  return k;
}

}  // namespace

KernelCache::KernelCache(fuse_session* session, size_t maxNames)
    : session(session), maxNames(maxNames), thread([this]() { run(); }) {}

// (An owner whose stop() failed leaves this alive instead.)
KernelCache::~KernelCache() {
  if (!stop(std::chrono::seconds(2))) thread.detach();
}

void KernelCache::noteName(uint64_t parent, std::string_view name) {
  names.insert(nameKey(parent, name));
  if (names.size() > maxNames) {
    // Too many to keep track of: the kernel forgets them all, and tracking starts over.
    queue(takeNames());
  }
}

std::deque<KernelCache::Drop> KernelCache::takeNames() {
  std::deque<Drop> drops;
  for (auto& k : names) {
    uint64_t dir;
    memcpy(&dir, k.data(), sizeof(dir));
    drops.push_back(Drop{dir, k.substr(sizeof(dir))});
  }
  names.clear();
  return drops;
}

void KernelCache::noteInode(uint64_t inode, bool lookup) { inodes[inode] += lookup ? 1 : 0; }

void KernelCache::forget(uint64_t inode, uint64_t count) {
  auto it = inodes.find(inode);
  if (it == inodes.end()) return;
  if (it->second > count) {
    it->second -= count;
  } else {
    inodes.erase(it);
  }
}

void KernelCache::changed(const std::vector<std::pair<uint64_t, std::string>>& entries,
                          const std::vector<uint64_t>& changedInodes) {
  // Everything told is dropped, kept track of or not: a name may be on its way to the
  // kernel in a reply not yet written (the kernel then holds the drop until that request
  // is done, as it locks the directory for both), or kept under another name (a rename).
  std::deque<Drop> drops;
  for (auto& [parent, name] : entries) {
    names.erase(nameKey(parent, name));
    drops.push_back(Drop{parent, name});
  }
  for (uint64_t inode : changedInodes) drops.push_back(Drop{inode, {}});
  queue(std::move(drops));
}

void KernelCache::allChanged() {
  std::deque<Drop> drops = takeNames();
  for (auto& [inode, lookups] : inodes) drops.push_back(Drop{inode, {}});
  // The inodes stay known (the kernel holds them until it forgets them): their attributes
  // are dropped now, and dropped again at the next change told.
  queue(std::move(drops));
}

void KernelCache::queue(std::deque<Drop> drops) {
  if (drops.empty()) return;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& d : drops) pending.push_back(std::move(d));
  wake.notify_one();
}

void KernelCache::run() {
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    wake.wait(lock, [this]() { return stopping || !pending.empty(); });
    if (stopping) break;
    Drop d = std::move(pending.front());
    pending.pop_front();
    lock.unlock();
    int rc = d.name.empty()
                 ? fuse_lowlevel_notify_inval_inode(session, d.inode, 0, 0)
                 : fuse_lowlevel_notify_inval_entry(session, d.inode, d.name.data(), d.name.size());
    // ENOENT: the kernel holds it no more. Anything else is worth a line.
    if (rc != 0 && rc != -ENOENT) {
      logWarn("dropping {} {} from the kernel's cache: {}", d.inode, d.name, strerror(-rc));
    }
    lock.lock();
    ++writes;
  }
  done = true;
  finished.notify_all();
}

bool KernelCache::stop(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu);
  stopping = true;
  wake.notify_one();
  if (!finished.wait_for(lock, wait, [this]() { return done; })) return false;
  lock.unlock();
  if (thread.joinable()) thread.join();
  return true;
}

uint64_t KernelCache::written() const {
  std::lock_guard<std::mutex> lock(mu);
  return writes;
}

}  // namespace cairn
