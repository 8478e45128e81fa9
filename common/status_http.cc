#include "status_http.h"

#include <fmt/format.h>
#include <kj/debug.h>

#include <CLI/CLI.hpp>
#include <fstream>

#include "address.h"
#include "log.h"

namespace cairn {

class StatusPages::Service final : public kj::HttpService {
 public:
  explicit Service(const kj::HttpHeaderTable& table) : table(table) {}

  std::map<std::string, std::pair<std::string, Render>> pages;  // path -> (type, render)

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    if (method != kj::HttpMethod::GET && method != kj::HttpMethod::HEAD) {
      return response.sendError(405, "Method Not Allowed", table);
    }
    std::string path(url.cStr());
    path = path.substr(0, path.find_first_of("?#"));
    auto it = pages.find(path);
    if (it == pages.end()) return response.sendError(404, "Not Found", table);
    auto body = kj::heap<std::string>(it->second.second());
    kj::HttpHeaders h(table);
    h.set(kj::HttpHeaderId::CONTENT_TYPE, it->second.first);
    h.add("Cache-Control", "no-store");
    h.add("X-Content-Type-Options", "nosniff");
    h.add("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
    auto out = response.send(200, "OK", h, static_cast<uint64_t>(body->size()));
    if (method == kj::HttpMethod::HEAD) return kj::READY_NOW;
    auto& ref = *body;
    return out->write(ref.data(), ref.size()).attach(kj::mv(out), kj::mv(body));
  }

 private:
  const kj::HttpHeaderTable& table;
};

StatusPages::StatusPages(kj::Timer& timer, std::shared_ptr<TlsCredentials> tls)
    : timer(timer),
      tls(std::move(tls)),
      headers(kj::heap<kj::HttpHeaderTable>()),
      service(kj::heap<Service>(*headers)),
      tasks(*this) {
  kj::HttpServerSettings settings;
  settings.headerTimeout = 10 * kj::SECONDS;
  server = kj::heap<kj::HttpServer>(timer, *headers, *service, settings);
}

StatusPages::~StatusPages() = default;

void StatusPages::add(std::string path, std::string contentType, Render render) {
  service->pages[std::move(path)] = {std::move(contentType), std::move(render)};
}

void StatusPages::serve(kj::Own<kj::ConnectionReceiver> l) {
  listener = kj::mv(l);
  tasks.add(acceptLoop());
}

kj::Promise<void> StatusPages::acceptLoop() {
  return listener->accept().then([this](kj::Own<kj::AsyncIoStream> stream) {
    if (open >= MAX_CONNECTIONS) return acceptLoop();  // dropped: the page is not the work
    ++open;
    kj::Promise<void> served = nullptr;
    if (tls) {
      served =
          tls->accept(kj::mv(stream), timer, 10 * kj::SECONDS, false).then([this](SecureStream s) {
            return server->listenHttp(kj::mv(s.stream));
          });
    } else {
      served = server->listenHttp(kj::mv(stream));
    }
    tasks.add(served.attach(kj::defer([this]() { --open; })));
    return acceptLoop();
  });
}

void StatusPages::taskFailed(kj::Exception&& e) {
  logDebug("status page connection: {}", e.getDescription().cStr());
}

std::string htmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string htmlPage(const std::string& title, const std::string& body, int refreshSeconds) {
  return fmt::format(R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f0f0f0; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.live {{ color: #176317; }} .dead {{ color: #b00020; font-weight: bold; }}
.decommissioning {{ color: #8a5a00; }} .warn {{ color: #b00020; font-weight: bold; }}
.bar {{ display: inline-block; width: 8em; height: 0.8em; background: #e5e5e5; }}
.bar span {{ display: block; height: 100%; background: #4a7bb7; }}
footer {{ margin-top: 2em; color: #777; font-size: 0.85em; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<footer>Refreshes every {refresh} s. Metrics: <a href="/metrics">/metrics</a></footer>
</body></html>
)",
                     fmt::arg("title", htmlEscape(title)), fmt::arg("body", body),
                     fmt::arg("refresh", refreshSeconds));
}

void addHttpFlags(CLI::App& app, HttpFlags& flags, const std::string& defaultListen) {
  flags.listen = defaultListen;
  app.add_option("--http", flags.listen,
                 "HOST:PORT of the status page and /metrics (HTTPS with TLS; \"none\": off)")
      ->capture_default_str();
  app.add_option("--http-port-file", flags.portFile,
                 "write the status page's bound HOST:PORT here once listening");
}

kj::Own<StatusPages> startStatusPages(kj::AsyncIoContext& io, const HttpFlags& flags,
                                      std::shared_ptr<TlsCredentials> tls, StatusPages::Render page,
                                      Metrics& metrics) {
  if (flags.listen.empty() || flags.listen == "none") return kj::Own<StatusPages>();
  auto addr = parseHostPort(flags.listen);
  if (!addr.ok()) KJ_FAIL_REQUIRE("--http", addr.status.toString().c_str());
  auto pages = kj::heap<StatusPages>(io.provider->getTimer(), std::move(tls));
  pages->add("/", "text/html; charset=utf-8", std::move(page));
  pages->add("/metrics", "text/plain; version=0.0.4; charset=utf-8",
             [&metrics]() { return metrics.render(); });
  // The daemon's work matters more than its page: one that cannot listen serves without it.
  kj::Own<kj::ConnectionReceiver> listener;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 listener = io.provider->getNetwork()
                                .parseAddress(addr.value.host, addr.value.port)
                                .wait(io.waitScope)
                                ->listen();
               })) {
    logError("no status page: cannot listen on {}: {}", flags.listen, e->getDescription().cStr());
    return kj::Own<StatusPages>();
  }
  pages->serve(kj::mv(listener));
  std::string bound = HostPort{addr.value.host, pages->port()}.toString();
  logInfo("status page: {}://{}/", pages->scheme(), bound);
  if (!flags.portFile.empty()) std::ofstream(flags.portFile) << bound << "\n";
  return pages;
}

}  // namespace cairn
