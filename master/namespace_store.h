#pragma once
// The master's metadata store: LevelDB behind a write-ahead overlay. A mutation is
// visible to every later read on the event loop at once (the loop serializes mutations,
// so each is computed against all earlier ones), and its promise resolves only when the
// group committer has synced it. Only this module touches LevelDB.

#include <kj/async.h>
#include <leveldb/db.h>
#include <leveldb/env.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "group_commit.h"
#include "status.h"

namespace cairn {

// A set of puts and deletes applied atomically.
struct Mutation {
  std::vector<std::pair<std::string, std::optional<std::string>>> ops;
  void put(std::string key, std::string value) {
    ops.emplace_back(std::move(key), std::move(value));
  }
  void del(std::string key) { ops.emplace_back(std::move(key), std::nullopt); }
  bool empty() const { return ops.empty(); }
};

class NamespaceStore {
 public:
  // Opens (creating if missing) the store in `dir`. `env` may be null for the real disk.
  // Throws if LevelDB cannot open it.
  NamespaceStore(const std::string& dir, leveldb::Env* env);
  ~NamespaceStore();

  std::optional<std::string> get(const std::string& key);

  // Up to `limit` pairs whose keys start with `prefix` and sort after `after` (which,
  // when not empty, is a full key).
  std::vector<std::pair<std::string, std::string>> scan(const std::string& prefix,
                                                        const std::string& after, size_t limit);

  // Applies `m` to what reads see now; the promise resolves once it is durable.
  // Must be called on the event loop that owns this store.
  kj::Promise<void> commit(Mutation m);

  uint64_t syncedWrites() const { return committer->writes(); }
  // Batch sizes and sync times of the group committer go to `metrics` from now on.
  void setMetrics(Metrics* metrics) { committer->setMetrics(metrics); }

 private:
  struct Pending {
    std::optional<std::string> value;
    uint64_t seq;
  };

  std::unique_ptr<leveldb::DB> db;
  std::unique_ptr<GroupCommitter> committer;
  std::map<std::string, Pending> overlay;
  uint64_t nextSeq = 1;
};

}  // namespace cairn
