#include "namespace_store.h"

#include <kj/debug.h>
#include <leveldb/write_batch.h>

namespace cairn {

NamespaceStore::NamespaceStore(const std::string& dir, leveldb::Env* env) {
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  if (env != nullptr) options.env = env;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &raw);
  if (!s.ok()) KJ_FAIL_REQUIRE("cannot open metadata store", dir, s.ToString());
  db.reset(raw);
  committer = std::make_unique<GroupCommitter>(*db);
}

NamespaceStore::~NamespaceStore() {
  committer.reset();  // drains queued writes before the DB closes
}

std::optional<std::string> NamespaceStore::get(const std::string& key) {
  auto it = overlay.find(key);
  if (it != overlay.end()) return it->second.value;
  std::string value;
  leveldb::Status s = db->Get(leveldb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) KJ_FAIL_ASSERT("metadata read failed", s.ToString());
  return value;
}

std::vector<std::pair<std::string, std::string>> NamespaceStore::scan(const std::string& prefix,
                                                                      const std::string& after,
                                                                      size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string start = after.empty() ? prefix : after;
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  it->Seek(start);
  auto ov = overlay.lower_bound(start);
  auto inRange = [&](const std::string& k) {
    return k.compare(0, prefix.size(), prefix) == 0 && (after.empty() || k > after);
  };
  // Merge the two ordered sequences; the overlay wins on equal keys.
  while (out.size() < limit) {
    while (it->Valid() && !after.empty() && it->key().ToString() <= after) it->Next();
    while (ov != overlay.end() && !after.empty() && ov->first <= after) ++ov;
    bool dbValid = it->Valid() && it->key().starts_with(prefix);
    bool ovValid = ov != overlay.end() && inRange(ov->first);
    if (!dbValid && !ovValid) break;
    std::string dbKey = dbValid ? it->key().ToString() : std::string();
    if (ovValid && (!dbValid || ov->first <= dbKey)) {
      if (dbValid && ov->first == dbKey) it->Next();
      if (ov->second.value) out.emplace_back(ov->first, *ov->second.value);
      ++ov;
    } else {
      out.emplace_back(std::move(dbKey), it->value().ToString());
      it->Next();
    }
  }
  if (!it->status().ok()) KJ_FAIL_ASSERT("metadata scan failed", it->status().ToString());
  return out;
}

kj::Promise<void> NamespaceStore::commit(Mutation m) {
  uint64_t seq = nextSeq++;
  leveldb::WriteBatch batch;
  std::vector<std::string> keys;
  for (auto& [key, value] : m.ops) {
    if (value) {
      batch.Put(key, *value);
    } else {
      batch.Delete(key);
    }
    overlay[key] = Pending{value, seq};
    keys.push_back(key);
  }
  return committer->submit(std::move(batch))
      .then([this, seq, keys = std::move(keys)]() {
        // Once durable, LevelDB answers for these keys, unless a later mutation is pending.
        for (auto& key : keys) {
          auto it = overlay.find(key);
          if (it != overlay.end() && it->second.seq == seq) overlay.erase(it);
        }
      });
}

}  // namespace cairn
