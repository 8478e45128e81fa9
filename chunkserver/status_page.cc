// A chunkserver's status page: its disk, its replicas, its link to the master. Read only;
// no file name on it (a chunkserver knows none).

#include <fmt/format.h>

#include "chunkserver.h"
#include "status_http.h"
#include "units.h"

namespace cairn {

std::string Chunkserver::statusPage() {
  auto bytes = [](uint64_t n) { return htmlEscape(humanBytes(static_cast<double>(n))); };
  auto seconds = [](kj::Duration d) {
    return fmt::format("{:.1f} s", static_cast<double>(d / kj::MILLISECONDS) / 1000);
  };
  auto row = [](const std::string& name, const std::string& value) {
    return fmt::format("<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n", name, value);
  };
  uint64_t used = lastSpace.capacityBytes - lastSpace.freeBytes;
  std::string body = "<table id=\"summary\">\n";
  body += row("Address", htmlEscape(opts.address));
  body += row("Rack", htmlEscape(opts.rack));
  for (auto& link : links) {
    std::string state = link->registrationId == 0 ? "<span class=\"warn\">not registered</span>"
                        : link->active            ? fmt::format("active, epoch {}", link->epoch)
                                                  : "standby";
    body += row("Master " + htmlEscape(link->address),
                state + ", last answer " + seconds(timer_.now() - link->lastReply) + " ago");
  }
  body += row("Up for", seconds(timer_.now() - startedAt));
  body += row("Chunk replicas", std::to_string(chunkStore.count()));
  body += row("Disk capacity", bytes(lastSpace.capacityBytes));
  body += row("Disk used", bytes(used));
  body += row("Room for new chunks", bytes(lastSpace.availableBytes));
  body += row("Data directories", htmlEscape(fmt::format("{}", fmt::join(opts.dataDirs, ", "))));
  body += row("Replicas scrubbed", std::to_string(scrubbed));
  body += row("Corrupt replicas found", std::to_string(corruptTotal));
  body += "</table>\n";
  return htmlPage("Cairn chunkserver " + opts.address, body);
}

}  // namespace cairn
