// The operator's commands of `cairn`: cluster state, checks, safe mode, space,
// decommissioning and balancing, the CA and certificates.

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "units.h"

namespace cairn {

namespace {
// Sleeps on the client's loop (so that its connections stay serviced).
void pause(CliContext& c, double seconds) {
  c.client.timerForTools()
      .afterDelay(static_cast<int64_t>(seconds * 1000) * kj::MILLISECONDS)
      .wait(c.waitScope);
}
}  // namespace

int cmdDecommission(CliContext& c, const std::string& address, bool wait, double timeoutSeconds) {
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    uint64_t remaining = 0;
    bool done = false;
    Status s = c.client.decommission(address, &remaining, &done).wait(c.waitScope);
    if (!s.ok()) return fail(c, address, s);
    if (done) {
      fmt::print(c.out, "{}: drained; safe to remove\n", address);
      return 0;
    }
    if (!wait) {
      fmt::print(c.out, "{}: decommissioning; {} chunks still there\n", address, remaining);
      return 0;
    }
    if (c.progress) fmt::print(c.err, "\r{}: {} chunks left   ", address, remaining);
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeoutSeconds)) {
      return failText(
          c, fmt::format("{}: still {} chunks after {} s", address, remaining, timeoutSeconds));
    }
    pause(c, 0.5);
  }
}

int cmdBalance(CliContext& c, double threshold, bool wait, double timeoutSeconds) {
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto spread = c.client.balance(threshold).wait(c.waitScope);
    if (!spread.ok()) return fail(c, "balance", spread.status);
    if (spread.value <= threshold) {
      fmt::print(c.out, "balanced: spread {:.3f} <= {:.3f}\n", spread.value, threshold);
      return 0;
    }
    if (!wait) {
      fmt::print(c.out, "balancing: spread {:.3f}, target {:.3f}\n", spread.value, threshold);
      return 0;
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeoutSeconds)) {
      return failText(
          c, fmt::format("balance: spread still {:.3f} after {} s", spread.value, timeoutSeconds));
    }
    pause(c, 0.5);
  }
}

int cmdHealth(CliContext& c, bool json) {
  auto h = c.client.health().wait(c.waitScope);
  if (!h.ok()) return fail(c, "health", h.status);
  auto& v = h.value;
  if (json) {
    fmt::print(c.out, "{}\n",
               nlohmann::json({{"safe_mode", v.safeMode},
                               {"chunks", v.chunks},
                               {"under_replicated", v.underReplicated},
                               {"missing", v.missing},
                               {"over_replicated", v.overReplicated},
                               {"copies_in_flight", v.copiesInFlight},
                               {"corrupt", v.corrupt},
                               {"unchecked", v.unchecked},
                               {"on_one_rack", v.onOneRack}})
                   .dump(2));
    return 0;
  }
  fmt::print(c.out,
             "{}chunks {}, under-replicated {}, missing {}, over-replicated {}, copies in "
             "flight {}, corrupt {}\n",
             v.safeMode ? "SAFE MODE; " : "", v.chunks, v.underReplicated, v.missing,
             v.overReplicated, v.copiesInFlight, v.corrupt);
  if (v.onOneRack > 0) {
    fmt::print(c.out, "{} chunks on one rack while another has room (being copied there)\n",
               v.onOneRack);
  }
  if (v.unchecked > 0) {
    fmt::print(c.out, "{} chunks not yet checked since the master started\n", v.unchecked);
  }
  return 0;
}

int cmdMasters(CliContext& c, bool json) {
  auto all = c.client.masterStates().wait(c.waitScope);
  uint64_t activeLsn = 0;
  bool anyActive = false;
  std::vector<std::string> inSync;
  for (auto& m : all) {
    if (m.role == "active") {
      activeLsn = std::max(activeLsn, m.lsn);
      anyActive = true;
      inSync = m.inSync;
    }
  }
  // A standby is one that could take over: the active counts it in sync. Others are still
  // catching up.
  for (auto& m : all) {
    if (anyActive && m.role == "standby" &&
        std::find(inSync.begin(), inSync.end(), m.address) == inSync.end()) {
      m.role = "catching-up";
    }
  }
  auto behind = [&](const MasterInfo& m) -> int64_t {
    if (!m.reachable || !anyActive) return -1;
    return m.lsn >= activeLsn ? 0 : static_cast<int64_t>(activeLsn - m.lsn);
  };
  if (json) {
    auto out = nlohmann::json::array();
    for (auto& m : all) {
      nlohmann::json j = {{"address", m.address},
                          {"role", m.reachable ? m.role : "unreachable"},
                          {"epoch", m.epoch},
                          {"lsn", m.lsn}};
      if (behind(m) >= 0) j["behind"] = behind(m);
      if (!m.reachable) j["error"] = m.error;
      out.push_back(j);
    }
    fmt::print(c.out, "{}\n", out.dump(2));
  } else {
    fmt::print(c.out, "{:<24} {:<12} {:>6} {:>10} {:>8}\n", "ADDRESS", "ROLE", "EPOCH", "LOG",
               "BEHIND");
    for (auto& m : all) {
      if (!m.reachable) {
        fmt::print(c.out, "{:<24} {:<12} ({})\n", m.address, "unreachable", m.error);
        continue;
      }
      fmt::print(c.out, "{:<24} {:<12} {:>6} {:>10} {:>8}\n", m.address, m.role, m.epoch, m.lsn,
                 behind(m) >= 0 ? std::to_string(behind(m)) : "-");
    }
  }
  return anyActive ? 0 : 1;
}

int cmdFailover(CliContext& c) {
  Status s = c.client.failover().wait(c.waitScope);
  if (!s.ok()) return fail(c, "failover", s);
  fmt::print(c.out, "the active master hands over; `cairn admin masters` shows the new one\n");
  return 0;
}

int cmdSafeMode(CliContext& c, const std::string& action, bool json) {
  auto a = action == "enter"   ? wire::SafeModeAction::ENTER
           : action == "leave" ? wire::SafeModeAction::LEAVE
                               : wire::SafeModeAction::GET;
  auto state = c.client.safeMode(a).wait(c.waitScope);
  if (!state.ok()) return fail(c, "safemode", state.status);
  auto& v = state.value;
  if (json) {
    fmt::print(c.out, "{}\n", nlohmann::json({{"safe_mode", v.on}, {"manual", v.manual}}).dump(2));
  } else {
    fmt::print(c.out, "safe mode: {}\n",
               !v.on      ? "off"
               : v.manual ? "on (entered by an admin: the cluster is read only)"
                          : "on (waiting for chunkservers to report)");
  }
  return 0;
}

namespace {

std::string childPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

// Visits `path` and, below a directory, everything in it (depth first, by name). A
// directory that cannot be listed is reported and skipped; false if any was.
bool walk(CliContext& c, const std::string& path, const FileAttr& attr,
          const std::function<void(const std::string&, const FileAttr&)>& visit) {
  visit(path, attr);
  if (attr.type != FileType::DIRECTORY) return true;
  auto all = c.client.listAll(attr.inode).wait(c.waitScope);
  if (!all.ok()) {
    fail(c, path, all.status);
    return false;
  }
  bool ok = true;
  for (auto& e : all.value) ok = walk(c, childPath(path, e.name), e.attr, visit) && ok;
  return ok;
}

const char* verdictName(wire::ChunkVerdict v) {
  switch (v) {
    case wire::ChunkVerdict::HEALTHY:
      return "healthy";
    case wire::ChunkVerdict::UNDER_REPLICATED:
      return "under_replicated";
    case wire::ChunkVerdict::CORRUPT:
      return "corrupt";
    case wire::ChunkVerdict::MISSING:
      return "missing";
  }
  return "unknown";
}

const char* replicaStateName(wire::ReplicaState s) {
  switch (s) {
    case wire::ReplicaState::GOOD:
      return "good";
    case wire::ReplicaState::CORRUPT:
      return "corrupt";
    case wire::ReplicaState::DRAINING:
      return "draining";
    case wire::ReplicaState::DEAD:
      return "dead";
  }
  return "unknown";
}

std::string percent(uint64_t part, uint64_t whole) {
  return whole == 0 ? "0%" : fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / whole);
}

}  // namespace

int cmdFsck(CliContext& c, const std::string& path, bool json) {
  auto top = resolve(c, path);
  if (!top.ok()) return fail(c, path, top.status);
  uint64_t files = 0, chunks = 0, unchecked = 0, shared = 0;
  std::map<wire::ChunkVerdict, uint64_t> byVerdict;
  auto problems = nlohmann::json::array();
  bool listed = walk(c, path, top.value, [&](const std::string& p, const FileAttr& a) {
    if (a.type != FileType::REGULAR) return;
    auto checks = c.client.fsck(a.inode).wait(c.waitScope);
    if (!checks.ok()) {
      fail(c, p, checks.status);
      ++unchecked;
      return;
    }
    ++files;
    for (auto& k : checks.value) {
      ++chunks;
      shared += k.files > 1;
      ++byVerdict[k.verdict];
      if (k.verdict == wire::ChunkVerdict::HEALTHY) continue;
      auto replicas = nlohmann::json::array();
      std::string shown;
      for (auto& r : k.replicas) {
        replicas.push_back({{"address", r.address}, {"state", replicaStateName(r.state)}});
        shown +=
            fmt::format("{}{} {}", shown.empty() ? "" : ", ", r.address, replicaStateName(r.state));
      }
      problems.push_back({{"path", p},
                          {"index", k.index},
                          {"handle", k.handle},
                          {"version", k.version},
                          {"goal", k.goal},
                          {"verdict", verdictName(k.verdict)},
                          {"files", k.files},
                          {"replicas", replicas}});
      if (!json) {
        fmt::print(c.out, "{}: chunk {} (handle {}, version {}): {}, goal {}{}{}\n", p, k.index,
                   k.handle, k.version, verdictName(k.verdict), k.goal, shown.empty() ? "" : ": ",
                   shown.empty() ? "no replica" : shown);
      }
    }
  });
  uint64_t bad = byVerdict[wire::ChunkVerdict::MISSING] + byVerdict[wire::ChunkVerdict::CORRUPT];
  std::string status = bad > 0 ? "CORRUPT" : "HEALTHY";
  if (json) {
    fmt::print(
        c.out, "{}\n",
        nlohmann::json({{"path", path},
                        {"status", status},
                        {"files", files},
                        {"unchecked", unchecked},
                        {"chunks", chunks},
                        {"shared", shared},
                        {"healthy", byVerdict[wire::ChunkVerdict::HEALTHY]},
                        {"under_replicated", byVerdict[wire::ChunkVerdict::UNDER_REPLICATED]},
                        {"corrupt", byVerdict[wire::ChunkVerdict::CORRUPT]},
                        {"missing", byVerdict[wire::ChunkVerdict::MISSING]},
                        {"problems", problems}})
            .dump(2));
  } else {
    fmt::print(c.out,
               "{} files, {} chunks ({} shared with other files): {} healthy, {} "
               "under-replicated, {} corrupt, {} missing{}\n"
               "The file system under {} is {}\n",
               files, chunks, shared, byVerdict[wire::ChunkVerdict::HEALTHY],
               byVerdict[wire::ChunkVerdict::UNDER_REPLICATED],
               byVerdict[wire::ChunkVerdict::CORRUPT], byVerdict[wire::ChunkVerdict::MISSING],
               unchecked > 0 ? fmt::format(" ({} files not checked)", unchecked) : "", path,
               status);
  }
  return bad > 0 || unchecked > 0 || !listed ? 1 : 0;
}

int cmdReport(CliContext& c, bool json) {
  auto stats = c.client.statfs().wait(c.waitScope);
  if (!stats.ok()) return fail(c, "report", stats.status);
  auto health = c.client.health().wait(c.waitScope);
  if (!health.ok()) return fail(c, "report", health.status);
  auto safe = c.client.safeMode(wire::SafeModeAction::GET).wait(c.waitScope);
  if (!safe.ok()) return fail(c, "report", safe.status);
  uint64_t chunkSize = 0;
  auto servers = c.client.servers(&chunkSize).wait(c.waitScope);
  if (!servers.ok()) return fail(c, "report", servers.status);
  uint64_t used = 0, live = 0, draining = 0;
  for (auto& s : servers.value) {
    if (!s.live) continue;
    ++live;
    used += s.usedBytes;
    draining += s.decommissioning;
  }
  auto& h = health.value;
  auto& st = stats.value;
  auto stateOf = [](const ServerStatus& s) {
    return !s.live ? "dead" : s.decommissioning ? "decommissioning" : "live";
  };
  if (json) {
    auto list = nlohmann::json::array();
    for (auto& s : servers.value) {
      list.push_back({{"address", s.address},
                      {"rack", s.rack},
                      {"state", stateOf(s)},
                      {"capacity", s.capacityBytes},
                      {"used", s.usedBytes},
                      {"available", s.availableBytes},
                      {"chunks", s.chunkCount},
                      {"last_heartbeat_ms", s.heartbeatAgeMs}});
    }
    fmt::print(c.out, "{}\n",
               nlohmann::json({{"master", c.client.masterAddress()},
                               {"safe_mode", safe.value.on},
                               {"manual_safe_mode", safe.value.manual},
                               {"capacity", st.capacityBytes},
                               {"used", used},
                               {"available", st.freeBytes},
                               {"files", st.files},
                               {"chunk_size", chunkSize},
                               {"chunks", h.chunks},
                               {"under_replicated", h.underReplicated},
                               {"missing", h.missing},
                               {"corrupt", h.corrupt},
                               {"over_replicated", h.overReplicated},
                               {"on_one_rack", h.onOneRack},
                               {"copies_in_flight", h.copiesInFlight},
                               {"live_chunkservers", live},
                               {"dead_chunkservers", servers.value.size() - live},
                               {"decommissioning_chunkservers", draining},
                               {"chunkservers", list}})
                   .dump(2));
    return 0;
  }
  auto bytes = [](uint64_t n) { return humanBytes(static_cast<double>(n)); };
  fmt::print(c.out,
             "Master: {}\nSafe mode: {}\nCapacity: {}\nUsed: {} ({})\nAvailable: {}\n"
             "Files and directories: {}\nChunks: {} ({} each at most)\n"
             "Under-replicated chunks: {}\nMissing chunks: {}\nCorrupt replicas kept: {}\n"
             "Over-replicated chunks: {}\nChunks on one rack while another has room: {}\n"
             "Copies in flight: {}\n"
             "Chunkservers: {} live, {} dead, {} decommissioning\n",
             c.client.masterAddress(),
             !safe.value.on      ? "off"
             : safe.value.manual ? "on (an admin's: read only)"
                                 : "on",
             bytes(st.capacityBytes), bytes(used), percent(used, st.capacityBytes),
             bytes(st.freeBytes), st.files, h.chunks, bytes(chunkSize), h.underReplicated,
             h.missing, h.corrupt, h.overReplicated, h.onOneRack, h.copiesInFlight, live,
             servers.value.size() - live, draining);
  for (auto& s : servers.value) {
    fmt::print(c.out,
               "\nChunkserver: {} (rack {})\n  State: {}, last heartbeat {:.1f} s ago\n"
               "  Capacity: {}, used {} ({}), available {}\n  Chunks: {}\n",
               s.address, s.rack, stateOf(s), s.heartbeatAgeMs / 1000.0, bytes(s.capacityBytes),
               bytes(s.usedBytes), percent(s.usedBytes, s.capacityBytes), bytes(s.availableBytes),
               s.chunkCount);
  }
  return 0;
}

int cmdDf(CliContext& c, bool json) {
  auto stats = c.client.statfs().wait(c.waitScope);
  if (!stats.ok()) return fail(c, "df", stats.status);
  auto& st = stats.value;
  uint64_t used = st.capacityBytes > st.freeBytes ? st.capacityBytes - st.freeBytes : 0;
  std::string name = "cairn:" + c.client.masterAddress();
  if (json) {
    fmt::print(c.out, "{}\n",
               nlohmann::json({{"filesystem", name},
                               {"size", st.capacityBytes},
                               {"used", used},
                               {"available", st.freeBytes},
                               {"files", st.files}})
                   .dump(2));
    return 0;
  }
  auto bytes = [](uint64_t n) { return humanBytes(static_cast<double>(n)); };
  fmt::print(c.out, "{:<28} {:>10} {:>10} {:>10} {:>6} {:>10}\n", "Filesystem", "Size", "Used",
             "Avail", "Use%", "Files");
  fmt::print(c.out, "{:<28} {:>10} {:>10} {:>10} {:>6} {:>10}\n", name, bytes(st.capacityBytes),
             bytes(used), bytes(st.freeBytes), percent(used, st.capacityBytes), st.files);
  return 0;
}

int cmdDu(CliContext& c, const std::string& path, bool summary, bool human, bool json) {
  auto top = resolve(c, path);
  if (!top.ok()) return fail(c, path, top.status);
  struct Usage {
    std::string path;
    uint64_t bytes = 0, withReplicas = 0;
  };
  std::vector<Usage> rows;
  bool ok = true;
  auto measure = [&](const std::string& p, const FileAttr& a) {
    Usage u{p};
    ok = walk(c, p, a,
              [&u](const std::string&, const FileAttr& f) {
                if (f.type != FileType::REGULAR) return;
                u.bytes += f.size;
                u.withReplicas += f.size * f.replication;
              }) &&
         ok;
    rows.push_back(u);
  };
  if (summary || top.value.type != FileType::DIRECTORY) {
    measure(path, top.value);
  } else {
    auto all = c.client.listAll(top.value.inode).wait(c.waitScope);
    if (!all.ok()) return fail(c, path, all.status);
    for (auto& e : all.value) measure(childPath(path, e.name), e.attr);
  }
  if (json) {
    auto arr = nlohmann::json::array();
    for (auto& u : rows) {
      arr.push_back({{"path", u.path}, {"bytes", u.bytes}, {"with_replicas", u.withReplicas}});
    }
    fmt::print(c.out, "{}\n", arr.dump(2));
  } else {
    auto shown = [human](uint64_t n) {
      return human ? humanBytes(static_cast<double>(n)) : std::to_string(n);
    };
    for (auto& u : rows) {
      fmt::print(c.out, "{:<12} {:<12} {}\n", shown(u.bytes), shown(u.withReplicas), u.path);
    }
  }
  return ok ? 0 : 1;
}

int cmdServers(CliContext& c, bool json) {
  uint64_t chunkSize = 0;
  auto servers = c.client.servers(&chunkSize).wait(c.waitScope);
  if (!servers.ok()) return fail(c, "servers", servers.status);
  if (json) {
    auto arr = nlohmann::json::array();
    for (auto& s : servers.value) {
      arr.push_back({{"address", s.address},
                     {"rack", s.rack},
                     {"live", s.live},
                     {"decommissioning", s.decommissioning},
                     {"capacity", s.capacityBytes},
                     {"used", s.usedBytes},
                     {"chunks", s.chunkCount}});
    }
    fmt::print(c.out, "{}\n",
               nlohmann::json({{"chunk_size", chunkSize}, {"servers", arr}}).dump(2));
    return 0;
  }
  fmt::print(c.out, "chunk size {}; {} chunkservers\n", humanBytes(static_cast<double>(chunkSize)),
             servers.value.size());
  for (auto& s : servers.value) {
    fmt::print(c.out, "  {:<24} rack {:<10} {:<5} {:>8} chunks  {} used of {}\n", s.address, s.rack,
               s.decommissioning ? "DRAIN"
               : s.live          ? "live"
                                 : "DEAD",
               s.chunkCount, humanBytes(static_cast<double>(s.usedBytes)),
               humanBytes(static_cast<double>(s.capacityBytes)));
  }
  return 0;
}

int cmdCaInit(const std::string& dir, int days) {
  Status s = initCa(dir, days);
  if (!s.ok()) {
    fprintf(stderr, "cairn: %s\n", s.message().c_str());
    return 1;
  }
  printf(
      "cluster CA made in %s (ca.pem; ca-key.pem is secret: keep it off the cluster's "
      "hosts)\n",
      dir.c_str());
  return 0;
}

int cmdCertIssue(const std::string& caDir, const CertRequest& request, const std::string& out) {
  Status s = issueCert(caDir, request, out);
  if (!s.ok()) {
    fprintf(stderr, "cairn: %s\n", s.message().c_str());
    return 1;
  }
  printf("%s certificate '%s' in %s (cert.pem, key.pem, ca.pem), valid %d days\n",
         roleName(request.identity.role), request.identity.name.c_str(), out.c_str(), request.days);
  return 0;
}

}  // namespace cairn
