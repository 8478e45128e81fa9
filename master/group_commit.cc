#include "group_commit.h"

#include <kj/debug.h>

#include <chrono>
#include <vector>

#include "log.h"

namespace cairn {

GroupCommitter::GroupCommitter(leveldb::DB& db) : db(db), writer([this]() { run(); }) {}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  writer.join();
}

void GroupCommitter::setMetrics(Metrics* m) {
  m->describe("cairn_master_commit_batch_size", Metrics::Type::HISTOGRAM,
              "mutations per synced metadata write", {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  m->describe("cairn_master_commit_sync_seconds", Metrics::Type::HISTOGRAM,
              "time of one synced metadata write", LATENCY_BUCKETS);
  metrics.store(m);
}

kj::Promise<void> GroupCommitter::submit(leveldb::WriteBatch batch) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!latchedError.empty()) {
      return KJ_EXCEPTION(FAILED, "metadata store failed earlier", latchedError);
    }
    queue.push_back(Pending{kj::mv(batch), kj::mv(paf.fulfiller)});
  }
  wake.notify_one();
  return kj::mv(paf.promise);
}

void GroupCommitter::run() {
  for (;;) {
    std::vector<Pending> group;
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [this]() { return stopping || !queue.empty(); });
      if (queue.empty()) return;
      while (!queue.empty()) {
        group.push_back(kj::mv(queue.front()));
        queue.pop_front();
      }
    }
    std::string earlier;
    {
      std::lock_guard<std::mutex> lock(mutex);
      earlier = latchedError;
    }
    if (!earlier.empty()) {
      for (auto& p : group) {
        p.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata store failed earlier", earlier));
      }
      continue;
    }
    leveldb::WriteBatch combined;
    for (auto& p : group) combined.Append(p.batch);
    leveldb::WriteOptions options;
    options.sync = true;
    auto started = std::chrono::steady_clock::now();
    leveldb::Status s = db.Write(options, &combined);
    writeCount.fetch_add(1);
    if (Metrics* m = metrics.load()) {
      m->observe("cairn_master_commit_batch_size", {}, static_cast<double>(group.size()));
      m->observe("cairn_master_commit_sync_seconds", {},
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    if (s.ok()) {
      for (auto& p : group) p.fulfiller->fulfill();
      continue;
    }
    logError("metadata write failed: {}", s.ToString());
    {
      std::lock_guard<std::mutex> lock(mutex);
      latchedError = s.ToString();
    }
    for (auto& p : group) {
      p.fulfiller->reject(KJ_EXCEPTION(FAILED, "metadata write failed", s.ToString()));
    }
  }
}

}  // namespace cairn
