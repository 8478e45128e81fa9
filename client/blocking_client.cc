#include "blocking_client.h"

#include <kj/async-io.h>

namespace cairn {

BlockingClient::BlockingClient(ClientOptions options, FileCacheOptions cacheOptions)
    : thread([this, options, cacheOptions]() { loop(options, cacheOptions); }) {
  std::unique_lock<std::mutex> lock(mutex);
  readyChanged.wait(lock, [this]() { return ready; });
}

BlockingClient::~BlockingClient() {
  stop->fulfill();
  thread.join();
}

void BlockingClient::loop(ClientOptions options, FileCacheOptions cacheOptions) {
  auto io = kj::setupAsyncIo();
  Client c(options, io.provider->getNetwork(), io.provider->getTimer());
  FileCache fc(c, cacheOptions);
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    executor = &kj::getCurrentThreadExecutor();
    client = &c;
    cache = &fc;
    port = &io.unixEventPort;
    stop = kj::mv(paf.fulfiller);
    ready = true;
  }
  readyChanged.notify_all();
  paf.promise.wait(io.waitScope);
}

}  // namespace cairn
