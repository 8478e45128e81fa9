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

KernelCache::~KernelCache() {
  stop(std::chrono::seconds(2));
  if (thread.joinable()) thread.detach();  // stuck in the kernel: the process is ending
}

void KernelCache::noteName(uint64_t parent, std::string_view name) {
  names.insert(nameKey(parent, name));
  if (names.size() > maxNames) {
    // Too many to keep track of: the kernel forgets them all, and tracking starts over.
    std::deque<Drop> drops;
    for (auto& k : names) {
      uint64_t dir;
      memcpy(&dir, k.data(), sizeof(dir));
      drops.push_back(Drop{dir, k.substr(sizeof(dir))});
    }
    names.clear();
    queue(std::move(drops));
  }
}

void KernelCache::noteInode(uint64_t inode) { inodes.insert(inode); }

void KernelCache::forget(uint64_t inode) { inodes.erase(inode); }

void KernelCache::changed(const std::vector<std::pair<uint64_t, std::string>>& entries,
                          const std::vector<uint64_t>& changedInodes) {
  std::deque<Drop> drops;
  for (auto& [parent, name] : entries) {
    // A name the kernel was not given for long needs no drop (it asks again soon anyway).
    if (names.erase(nameKey(parent, name)) > 0) drops.push_back(Drop{parent, name});
  }
  for (uint64_t inode : changedInodes) {
    if (inodes.count(inode)) drops.push_back(Drop{inode, {}});
  }
  queue(std::move(drops));
}

void KernelCache::allChanged() {
  std::deque<Drop> drops;
  for (auto& k : names) {
    uint64_t dir;
    memcpy(&dir, k.data(), sizeof(dir));
    drops.push_back(Drop{dir, k.substr(sizeof(dir))});
  }
  for (uint64_t inode : inodes) drops.push_back(Drop{inode, {}});
  names.clear();
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

void KernelCache::stop(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu);
  stopping = true;
  wake.notify_one();
  if (finished.wait_for(lock, wait, [this]() { return done; }) && thread.joinable()) {
    lock.unlock();
    thread.join();
  }
}

uint64_t KernelCache::written() const {
  std::lock_guard<std::mutex> lock(mu);
  return writes;
}

}  // namespace cairn
