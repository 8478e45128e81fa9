#pragma once
// libcairn for threads without an event loop (FUSE workers, tools): one thread owns the
// loop, the Client and the FileCache; run() hands it work and blocks for the result.

#include <kj/async-unix.h>
#include <kj/async.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "client.h"
#include "file_cache.h"

namespace cairn {

class BlockingClient {
 public:
  BlockingClient(ClientOptions options, FileCacheOptions cacheOptions = {});
  ~BlockingClient();  // cancels what is in flight and joins the loop thread

  // Runs func(client, cache) on the loop thread; func returns a kj::Promise<T> (or a
  // T) and run() returns the T. Exceptions thrown there are rethrown here. Thread-safe.
  template <typename Func>
  auto run(Func&& func) {
    return executor->executeSync([&]() { return func(*client, *cache); });
  }
  // The loop's event port (file descriptors, signals): for use on the loop thread only,
  // inside run().
  kj::UnixEventPort& eventPort() { return *port; }

 private:
  void loop(ClientOptions options, FileCacheOptions cacheOptions);

  std::mutex mutex;
  std::condition_variable readyChanged;
  bool ready = false;
  const kj::Executor* executor = nullptr;
  Client* client = nullptr;
  FileCache* cache = nullptr;
  kj::UnixEventPort* port = nullptr;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  std::thread thread;
};

}  // namespace cairn
