#pragma once
// A daemon's status page and /metrics over HTTP (kj-http), or HTTPS with the daemon's own
// cluster certificate when TLS is on. No client certificate is asked for, so that browsers
// and Prometheus reach them as they reach HDFS's and MooseFS's pages: the pages are read
// only and name no file. Only GET and HEAD are answered.

#include <kj/async-io.h>
#include <kj/compat/http.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "metrics.h"
#include "tls.h"

namespace CLI {
class App;
}

namespace cairn {

class StatusPages final : private kj::TaskSet::ErrorHandler {
 public:
  using Render = std::function<std::string()>;
  StatusPages(kj::Timer& timer, std::shared_ptr<TlsCredentials> tls);
  ~StatusPages();
  // GET `path` ("/", "/metrics") answers what `render` returns then, as `contentType`.
  void add(std::string path, std::string contentType, Render render);
  // Serves the connections `listener` accepts, until this object dies.
  void serve(kj::Own<kj::ConnectionReceiver> listener);
  uint16_t port() { return listener->getPort(); }
  // "http" or "https".
  const char* scheme() const { return tls ? "https" : "http"; }

 private:
  class Service;
  kj::Promise<void> acceptLoop();
  void taskFailed(kj::Exception&& exception) override;

  kj::Timer& timer;
  std::shared_ptr<TlsCredentials> tls;
  kj::Own<kj::HttpHeaderTable> headers;
  kj::Own<Service> service;
  kj::Own<kj::HttpServer> server;
  kj::Own<kj::ConnectionReceiver> listener;
  static constexpr size_t MAX_CONNECTIONS = 64;  // open at once; more are closed at once
  size_t open = 0;
  kj::TaskSet tasks;
};

// Where a daemon serves its pages: --http HOST:PORT ("none": nowhere) and --http-port-file.
struct HttpFlags {
  std::string listen;
  std::string portFile;
};
void addHttpFlags(CLI::App& app, HttpFlags& flags, const std::string& defaultListen);

// Serves `page` at "/" and `metrics` at "/metrics" where `flags` say (HTTPS when `tls`),
// writes the bound HOST:PORT to the port file and logs "status page: URL". Null for
// "none", and (logged as an error) when it cannot listen: the daemon serves on without it.
kj::Own<StatusPages> startStatusPages(kj::AsyncIoContext& io, const HttpFlags& flags,
                                      std::shared_ptr<TlsCredentials> tls, StatusPages::Render page,
                                      Metrics& metrics);

// The HTML page every daemon's status page is built in: self-contained (no script, no
// external asset), refreshing itself every `refreshSeconds`. `body` is already escaped.
std::string htmlPage(const std::string& title, const std::string& body, int refreshSeconds = 5);
// Text made safe for HTML.
std::string htmlEscape(const std::string& text);

}  // namespace cairn
