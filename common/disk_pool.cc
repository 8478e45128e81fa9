#include "disk_pool.h"

namespace cairn {

DiskPool::DiskPool(size_t count) {
  for (size_t i = 0; i < count; ++i) threads.emplace_back([this]() { work(); });
}

DiskPool::~DiskPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (auto& t : threads) t.join();
}

void DiskPool::enqueue(kj::Function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back(kj::mv(job));
  }
  wake.notify_one();
}

void DiskPool::work() {
  for (;;) {
    kj::Function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [this]() { return stopping || !queue.empty(); });
      if (queue.empty()) return;
      job = kj::mv(queue.front());
      queue.pop_front();
    }
    job();
  }
}

}  // namespace cairn
