#include "namespace_store.h"

#include <kj/debug.h>
#include <leveldb/write_batch.h>

#include "log.h"
#include "log_tail.h"

namespace cairn {

const std::string LOG_LSN_KEY = "mlog_lsn";
const std::string LOG_EPOCH_KEY = "mlog_epoch";
const std::string LOG_INSTALLING_KEY = "mlog_installing";

namespace {

std::string encodeNumber(uint64_t v) { return std::to_string(v); }
uint64_t decodeNumber(const std::optional<std::string>& v) {
  return v ? std::strtoull(v->c_str(), nullptr, 10) : 0;
}

}  // namespace

NamespaceStore::NamespaceStore(const std::string& dir, leveldb::Env* base,
                               std::chrono::milliseconds syncDelay)
    : env(base != nullptr ? base : leveldb::Env::Default()),
      blockCache(leveldb::NewLRUCache(8 << 20)) {
  options.create_if_missing = true;
  options.block_cache = blockCache.get();
  options.paranoid_checks = true;
  options.env = &env;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &raw);
  if (s.IsCorruption()) {
    // Perhaps a power cut left garbage where unsynced writes were going.
    std::vector<TornTail> cut;
    Status repaired = cutTornLogTails(env, dir, cut);
    if (!repaired.ok()) {
      KJ_FAIL_REQUIRE("cannot open metadata store", dir, s.ToString(), repaired.toString());
    }
    for (auto& torn : cut) {
      logWarn(
          "metadata log {}: cut a torn end of {} bytes after {} bytes of whole records (a "
          "power cut during unsynced writes; what was synced is all there); the cut bytes "
          "are in {}.torn",
          torn.file, torn.dropped, torn.kept, torn.file);
    }
    if (!cut.empty()) s = leveldb::DB::Open(options, dir, &raw);
  }
  if (!s.ok()) KJ_FAIL_REQUIRE("cannot open metadata store", dir, s.ToString());
  db.reset(raw);
  committer = std::make_unique<GroupCommitter>(*db, syncDelay, &options);
  lsn = syncedLsn = syncingLsn = decodeNumber(get(LOG_LSN_KEY));
  entryEpoch = epoch = decodeNumber(get(LOG_EPOCH_KEY));
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
  if (!writable) {
    return KJ_EXCEPTION(FAILED, "metadata store is read only (this master is not active)");
  }
  bool synced = syncEvery || m.sync;
  if (observer) observer(m);
  return commitEntry(std::move(m), synced);
}

kj::Promise<void> NamespaceStore::commitEntry(Mutation m, bool synced) {
  LogEntry entry{epoch, lsn + 1, std::move(m), synced};
  entry.mutation.put(LOG_LSN_KEY, encodeNumber(entry.lsn));
  entry.mutation.put(LOG_EPOCH_KEY, encodeNumber(entry.epoch));
  lsn = entry.lsn;
  entryEpoch = entry.epoch;
  auto done = write(entry.mutation, synced ? Durability::SYNCED : Durability::WRITTEN);
  KJ_IF_MAYBE (ship, shipper) {
    auto both = kj::heapArrayBuilder<kj::Promise<void>>(2);
    both.add(kj::mv(done));
    both.add((*ship)(entry));
    done = kj::joinPromises(both.finish());
  }
  if (!synced) return done;
  return done.then([this, at = entry.lsn]() { syncedLsn = std::max(syncedLsn, at); });
}

kj::Promise<void> NamespaceStore::sync() {
  if (!writable) {
    return KJ_EXCEPTION(FAILED, "metadata store is read only (this master is not active)");
  }
  if (shipper == nullptr) return committer->barrier();
  if (syncedLsn >= lsn) return kj::READY_NOW;
  KJ_IF_MAYBE (inFlight, syncing) {
    if (syncingLsn >= lsn) return inFlight->addBranch();
  }
  // An entry of its own, synced here and on every standby in sync, covers all before it.
  auto done = commitEntry(Mutation{}, true).fork();
  syncingLsn = lsn;
  auto branch = done.addBranch();
  syncing = kj::mv(done);
  return branch;
}

kj::Promise<void> NamespaceStore::apply(LogEntry entry) {
  KJ_REQUIRE(entry.lsn == lsn + 1, "log entry out of order", entry.lsn, lsn);
  KJ_REQUIRE(entry.epoch >= entryEpoch, "log entry from an older epoch", entry.epoch, entryEpoch);
  entry.mutation.put(LOG_LSN_KEY, encodeNumber(entry.lsn));
  entry.mutation.put(LOG_EPOCH_KEY, encodeNumber(entry.epoch));
  lsn = entry.lsn;
  entryEpoch = entry.epoch;
  epoch = std::max(epoch, entry.epoch);
  bool synced = entry.sync || syncEvery;
  return write(entry.mutation, synced ? Durability::SYNCED : Durability::WRITTEN);
}

kj::Promise<void> NamespaceStore::write(const Mutation& m, Durability durability) {
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
  return committer->submit(std::move(batch), durability)
      .then([this, seq, keys = std::move(keys)]() {
        // Once written, LevelDB answers for these keys, unless a later mutation is pending.
        for (auto& key : keys) {
          auto it = overlay.find(key);
          if (it != overlay.end() && it->second.seq == seq) overlay.erase(it);
        }
      });
}

namespace {

class LevelDbSnapshot final : public NamespaceStore::Snapshot {
 public:
  explicit LevelDbSnapshot(leveldb::DB& db) : db(db), snap(db.GetSnapshot()) {
    leveldb::ReadOptions options;
    options.snapshot = snap;
    options.fill_cache = false;
    std::string value;
    if (db.Get(options, LOG_LSN_KEY, &value).ok()) lsn_ = decodeNumber(value);
    if (db.Get(options, LOG_EPOCH_KEY, &value).ok()) epoch_ = decodeNumber(value);
    it.reset(db.NewIterator(options));
    it->SeekToFirst();
  }
  ~LevelDbSnapshot() override {
    it.reset();
    db.ReleaseSnapshot(snap);
  }
  uint64_t lsn() const override { return lsn_; }
  uint64_t epoch() const override { return epoch_; }
  bool next(size_t maxBytes, std::vector<std::pair<std::string, std::string>>& out) override {
    size_t bytes = 0;
    for (; it->Valid() && bytes < maxBytes; it->Next()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
      bytes += out.back().first.size() + out.back().second.size();
    }
    if (!it->status().ok()) KJ_FAIL_ASSERT("snapshot read failed", it->status().ToString());
    return it->Valid();
  }

 private:
  leveldb::DB& db;
  const leveldb::Snapshot* snap;
  std::unique_ptr<leveldb::Iterator> it;
  uint64_t lsn_ = 0, epoch_ = 0;
};

}  // namespace

std::unique_ptr<NamespaceStore::Snapshot> NamespaceStore::snapshot() {
  return std::make_unique<LevelDbSnapshot>(*db);
}

kj::Promise<void> NamespaceStore::install(
    bool first, std::vector<std::pair<std::string, std::string>> pairs,
    std::optional<std::pair<uint64_t, uint64_t>> lastEpochLsn) {
  KJ_REQUIRE(!writable, "a snapshot goes only into a standby's store");
  Mutation m;
  if (first) {
    // Everything goes, the log position first of all (it comes back with the last piece).
    for (auto& [key, value] : scan("", "", SIZE_MAX)) m.del(key);
    m.put(LOG_INSTALLING_KEY, "1");
    lsn = entryEpoch = 0;
  }
  for (auto& [key, value] : pairs) {
    if (key != LOG_LSN_KEY && key != LOG_EPOCH_KEY && key != LOG_INSTALLING_KEY) {
      m.put(std::move(key), std::move(value));
    }
  }
  if (lastEpochLsn) {
    entryEpoch = lastEpochLsn->first;
    epoch = std::max(epoch, entryEpoch);
    lsn = lastEpochLsn->second;
    m.put(LOG_LSN_KEY, encodeNumber(lsn));
    m.put(LOG_EPOCH_KEY, encodeNumber(entryEpoch));
    m.del(LOG_INSTALLING_KEY);
  } else {
    m.del(LOG_LSN_KEY);
  }
  return write(m, Durability::SYNCED);
}

}  // namespace cairn
