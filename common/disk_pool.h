#pragma once
// A fixed pool of threads for blocking disk work, so that no event loop waits on a disk.
// run() may be called only from a thread with a kj event loop; the returned promise
// resolves on that loop.

#include <kj/async.h>
#include <kj/function.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace cairn {

class DiskPool {
 public:
  explicit DiskPool(size_t threads);
  ~DiskPool();  // finishes queued work, then joins
  DiskPool(const DiskPool&) = delete;
  DiskPool& operator=(const DiskPool&) = delete;

  // Runs `func` on a pool thread. An exception thrown by `func` rejects the promise.
  template <typename Func>
  auto run(Func&& func) -> kj::Promise<std::invoke_result_t<Func>> {
    using T = std::invoke_result_t<Func>;
    auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
    enqueue([func = kj::fwd<Func>(func), fulfiller = kj::mv(paf.fulfiller)]() mutable {
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                     if constexpr (std::is_void_v<T>) {
                       func();
                       fulfiller->fulfill();
                     } else {
                       fulfiller->fulfill(func());
                     }
                   })) {
        fulfiller->reject(kj::mv(*e));
      }
    });
    return kj::mv(paf.promise);
  }

 private:
  void enqueue(kj::Function<void()> job);
  void work();

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<kj::Function<void()>> queue;
  bool stopping = false;
  std::vector<std::thread> threads;
};

}  // namespace cairn
