// The trash: entries of removed files by time and by path, restore, and expiry. See
// namespace.h.

#include <fmt/format.h>
#include <kj/debug.h>

#include "names.h"
#include "namespace.h"
#include "namespace_codec.h"

namespace cairn {

using namespace codec;
namespace {
// Set once every trash entry has its entry by path (trashPathKey) too.
const std::string TRASH_INDEXED_KEY = "mtrash_indexed";
}  // namespace

std::string Namespace::pathOf(uint64_t directory) {
  std::vector<std::string> parts;
  for (uint64_t current = directory; current != ROOT_INODE;) {
    auto n = readInode(current);
    if (!n) break;
    parts.push_back(n->name);
    current = n->parent;
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path += "/" + *it;
  return path.empty() ? "/" : path;
}

std::vector<TrashEntry> Namespace::listTrash(size_t limit) {
  std::vector<TrashEntry> out;
  for (auto& [key, value] : store.scan("t", "", limit)) {
    TrashEntry e;
    e.deletedNs = static_cast<int64_t>(getBe(key, 1, 8));
    e.inode = getBe(key, 9, 8);
    e.path = value;
    if (auto n = readInode(e.inode)) e.size = n->size;
    out.push_back(std::move(e));
  }
  return out;
}

kj::Promise<MutationResult> Namespace::restore(std::string_view path) {
  auto parts = splitPath(path);
  if (!parts.ok()) return MutationResult{parts.status, {}, {}};
  if (parts.value.empty())
    return MutationResult{Status::invalidArgument("not a file path"), {}, {}};
  std::optional<TrashEntry> newest;
  Mutation m;
  if (trashIndexed()) {
    // The entries of this path only; the newest whose trash entry is still there (one
    // that is not, left by a master without the index, goes).
    std::string prefix = trashPathKey(path, 0, 0).substr(0, path.size() + 2);
    std::vector<std::string> keys;
    std::string after;
    for (;;) {
      auto rows = store.scan(prefix, after, 4096);
      if (rows.empty()) break;
      for (auto& row : rows) keys.push_back(row.first);
      after = rows.back().first;
    }
    size_t at = prefix.size();
    for (auto key = keys.rbegin(); key != keys.rend() && !newest; ++key) {
      TrashEntry e{std::string(path), getBe(*key, at + 8, 8), 0,
                   static_cast<int64_t>(getBe(*key, at, 8))};
      if (store.get(trashKey(e.deletedNs, e.inode)) == std::string(path)) {
        newest = e;
      } else {
        m.del(*key);
      }
    }
  } else {
    // Entries from before the index: the whole trash, once (see indexTrash).
    std::string after;
    for (;;) {
      auto rows = store.scan("t", after, 4096);
      if (rows.empty()) break;
      for (auto& [key, value] : rows) {
        if (value == path)
          newest = TrashEntry{value, getBe(key, 9, 8), 0, static_cast<int64_t>(getBe(key, 1, 8))};
      }
      after = rows.back().first;
    }
  }
  if (!newest) {
    return MutationResult{Status::notFound(fmt::format("'{}' is not in the trash", path)), {}, {}};
  }
  int64_t now = nowNs();
  // Make missing parents, as they were named.
  uint64_t dir = ROOT_INODE;
  for (size_t i = 0; i + 1 < parts.value.size(); ++i) {
    if (auto child = readDirent(dir, parts.value[i])) {
      auto n = readInode(*child);
      if (n->type != InodeType::DIRECTORY) {
        return MutationResult{
            Status::notDirectory(fmt::format("'{}' is not a directory", parts.value[i])), {}, {}};
      }
      dir = *child;
      continue;
    }
    auto made = newEntry(m, dir, parts.value[i], InodeType::DIRECTORY, 0755, 0, 0);
    if (!made.ok()) return MutationResult{made.status, {}, {}};
    // Later steps read through the store, so the new directory goes in now; the committer
    // is first-in first-out, so it is in the log before the restore's own reply.
    store.commit(std::move(m)).detach([](kj::Exception&&) {});
    m = Mutation();
    dir = made.value.inode;
  }
  const std::string& name = parts.value.back();
  if (readDirent(dir, name)) {
    return MutationResult{Status::alreadyExists(fmt::format("'{}' exists", path)), {}, {}};
  }
  auto n = readInode(newest->inode);
  KJ_ASSERT(n.has_value(), "trash entry without its inode", newest->inode);
  Inode p = *readInode(dir);
  p.mtimeNs = p.ctimeNs = now;
  n->ctimeNs = now;
  n->nlink = 1;
  m.put(inodeKey(dir), encodeInode(p));
  m.put(inodeKey(n->inode), encodeInode(*n));
  m.put(direntKey(dir, name), encodeU64(n->inode));
  m.del(trashKey(newest->deletedNs, newest->inode));
  m.del(trashPathKey(path, newest->deletedNs, newest->inode));
  return finish(std::move(m), MutationResult{Status::OK(), *n, {}});
}

bool Namespace::trashIndexed() {
  if (!trashIndexKnown) trashIndexKnown = store.get(TRASH_INDEXED_KEY).has_value();
  return trashIndexKnown;
}

kj::Promise<void> Namespace::indexTrash() {
  if (trashIndexed()) return kj::READY_NOW;
  // A bounded batch a call (one log entry each), from where the last one stopped; the
  // trash made meanwhile is indexed by unlink itself.
  constexpr size_t BATCH = 4096;
  Mutation m;
  auto rows = store.scan("t", trashIndexCursor, BATCH);
  for (auto& [key, value] : rows) {
    m.put(trashPathKey(value, static_cast<int64_t>(getBe(key, 1, 8)), getBe(key, 9, 8)), "");
  }
  bool last = rows.size() < BATCH;
  trashIndexCursor = last ? std::string() : rows.back().first;
  if (last) m.put(TRASH_INDEXED_KEY, "1");
  return store.commit(std::move(m)).then([this, last]() {
    if (last) trashIndexKnown = true;
  });
}

kj::Promise<MutationResult> Namespace::expireTrash() {
  MutationResult r;
  Mutation m;
  ChunkRefs refs(*this, r.releasedHandles);
  int64_t cutoff = nowNs() - trashPeriod / kj::NANOSECONDS;
  for (auto& [key, value] : store.scan("t", "", 1024)) {
    if (static_cast<int64_t>(getBe(key, 1, 8)) > cutoff) break;
    m.del(key);
    m.del(trashPathKey(value, static_cast<int64_t>(getBe(key, 1, 8)), getBe(key, 9, 8)));
    if (auto n = readInode(getBe(key, 9, 8))) {
      n->nlink = 1;
      dropLink(m, *n, 0, refs);
    }
  }
  refs.writeTo(m);
  return finish(std::move(m), std::move(r));
}

}  // namespace cairn
