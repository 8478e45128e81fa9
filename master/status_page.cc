// The master's status page: the cluster at a glance, as an operator of HDFS or MooseFS
// expects from the NameNode's page or the CGI. Read only; no file name appears on it.

#include <fmt/format.h>

#include "master.h"
#include "status_http.h"
#include "units.h"

namespace cairn {
namespace {

std::string bytes(uint64_t n) { return htmlEscape(humanBytes(static_cast<double>(n))); }

std::string share(uint64_t part, uint64_t whole) {
  double p = whole == 0 ? 0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
  return fmt::format(
      "<span class=\"bar\" title=\"{0:.1f}%\"><span style=\"width:{0:.1f}%\">"
      "</span></span> {0:.1f}%",
      p);
}

std::string duration(kj::Duration d) {
  double s = static_cast<double>(d / kj::MILLISECONDS) / 1000;
  if (s < 120) return fmt::format("{:.1f} s", s);
  if (s < 7200) return fmt::format("{:.0f} min", s / 60);
  return fmt::format("{:.1f} h", s / 3600);
}

std::string ago(kj::Duration d) { return duration(d) + " ago"; }

std::string row(const std::string& name, const std::string& value, bool warn = false) {
  return fmt::format("<tr><th scope=\"row\">{}</th><td class=\"n{}\">{}</td></tr>\n", name,
                     warn ? " warn" : "", value);
}

}  // namespace

std::string Master::statusPage() {
  auto h = chunks->health();
  auto servers = chunks->servers();
  uint64_t capacity = 0, used = 0, available = 0, live = 0, dead = 0, draining = 0;
  for (auto& s : servers) {
    if (!s.live) {
      ++dead;
      continue;
    }
    ++live;
    draining += s.decommissioning;
    capacity += s.capacityBytes;
    used += s.usedBytes;
    available += s.availableBytes;
  }
  std::string body;
  body += "<h2>Cluster</h2>\n<table id=\"summary\">\n";
  body += row("Safe mode",
              !chunks->inSafeMode()        ? "off"
              : chunks->inManualSafeMode() ? "on: entered by an admin, read only"
                                           : "on: waiting for chunkservers to report",
              chunks->inSafeMode());
  if (!haEnabled()) {
    body += row("Masters", "1 (active; no standby)");
  } else if (active_) {
    std::string standbyText;
    for (auto& f : standbys()) {
      standbyText += fmt::format("; standby {} {} (log entry {})", htmlEscape(f.id),
                                 f.inSync     ? "in sync"
                                 : f.snapshot ? "copying a snapshot"
                                              : "catching up",
                                 f.acked);
    }
    body += row(
        "This master",
        fmt::format("active at epoch {}, log entry {}{}", epoch(), store->lastLsn(), standbyText),
        standbys().empty());
  } else {
    // A standby's chunk map lags: what follows is the active's to tell.
    body += row("This master",
                fmt::format("standby at log entry {}; the active master is {}", store->lastLsn(),
                            activeAddress.empty() ? "not elected yet" : htmlEscape(activeAddress)),
                activeAddress.empty());
  }
  body += row("Up for", duration(timer_.now() - startedAt));
  body += row("Capacity", bytes(capacity));
  body += row("Used", bytes(used) + " " + share(used, capacity));
  body += row("Available for new chunks", bytes(available));
  body += row("Files, directories and other entries", std::to_string(ns->inodeCount()));
  body += row("Chunks", std::to_string(h.chunks));
  body += row("Under-replicated chunks", std::to_string(h.underReplicated), h.underReplicated > 0);
  body += row("Missing chunks", std::to_string(h.missing), h.missing > 0);
  body += row("Corrupt replicas kept (last copies)", std::to_string(h.corrupt), h.corrupt > 0);
  body += row("Over-replicated chunks", std::to_string(h.overReplicated));
  body += row("Chunks on one rack while another has room", std::to_string(h.onOneRack));
  if (h.unchecked > 0) {
    body += row("Chunks not yet checked since the start", std::to_string(h.unchecked), true);
  }
  body += row("Copies in flight", std::to_string(h.copiesInFlight));
  body += row("Write leases", std::to_string(chunks->leasesHeld()));
  body += row("Chunkservers",
              fmt::format("{} live, {} dead, {} decommissioning", live, dead, draining), dead > 0);
  body += "</table>\n";

  body +=
      "<h2>Chunkservers</h2>\n<table id=\"chunkservers\">\n<tr><th>Address</th><th>Rack</th>"
      "<th>State</th><th>Chunks</th><th>Capacity</th><th>Used</th><th>Available</th>"
      "<th>Last heartbeat</th></tr>\n";
  for (auto& s : servers) {
    std::string state = !s.live ? "dead" : s.decommissioning ? "decommissioning" : "live";
    body += fmt::format(
        "<tr class=\"server\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}"
        "</td><td class=\"n\">{}</td><td>{} {}</td><td class=\"n\">{}</td><td>{}</td></tr>\n",
        htmlEscape(s.address), htmlEscape(s.rack), state, state, s.chunkCount,
        bytes(s.capacityBytes), bytes(s.usedBytes), share(s.usedBytes, s.capacityBytes),
        bytes(s.availableBytes), htmlEscape(ago(s.sinceHeartbeat)));
  }
  if (servers.empty()) body += "<tr><td colspan=\"8\">No chunkserver has registered.</td></tr>\n";
  body += "</table>\n";

  body += "<h2>Recent events</h2>\n<table id=\"events\">\n<tr><th>When</th><th>What</th></tr>\n";
  auto& events = chunks->events();
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    body += fmt::format("<tr><td>{}</td><td>{}</td></tr>\n", htmlEscape(ago(timer_.now() - it->at)),
                        htmlEscape(it->text));
  }
  if (events.empty()) body += "<tr><td colspan=\"2\">None yet.</td></tr>\n";
  body += "</table>\n";
  return htmlPage("Cairn master", body);
}

}  // namespace cairn
