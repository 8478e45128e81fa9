// The coordinator's status page: jobs with their progress per phase, each task with its
// worker and whether its map read a local replica, and the workers. Read only; no input
// or output path appears on it.

#include <fmt/format.h>

#include "coordinator.h"
#include "status_http.h"
#include "units.h"

namespace cairn::mapreduce {
namespace {

std::string progress(uint32_t done, uint32_t total) {
  double p = total == 0 ? 100 : 100.0 * done / total;
  return fmt::format("<span class=\"bar\"><span style=\"width:{:.0f}%\"></span></span> {} / {}", p,
                     done, total);
}

}  // namespace

std::string Coordinator::statusPage() {
  int64_t now = nowMs();
  auto reports = scheduler.reports(now);
  auto workers = scheduler.workerViews(now);
  std::string body =
      "<h2>Jobs</h2>\n<table id=\"jobs\">\n<tr><th>Job</th><th>Kind</th>"
      "<th>State</th><th>Maps</th><th>Reduces</th><th>Data-local maps</th>"
      "<th>Read</th><th>Written</th><th>Failed attempts</th><th>Backups</th>"
      "<th>Time</th></tr>\n";
  for (auto it = reports.rbegin(); it != reports.rend(); ++it) {
    auto& r = *it;
    const JobSpec* spec = scheduler.spec(r.jobId);
    std::string state = r.state == JobState::RUNNING     ? "running"
                        : r.state == JobState::SUCCEEDED ? "succeeded"
                                                         : "failed";
    body += fmt::format(
        "<tr class=\"job\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>"
        "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}"
        "</td><td class=\"n\">{}</td><td class=\"n\">{:.1f} s</td></tr>\n",
        r.jobId, spec ? jobKindName(spec->kind) : "?", state == "failed" ? "dead" : "live", state,
        progress(r.mapsDone, r.mapTasks), progress(r.reducesDone, r.reduceTasks), r.dataLocalMaps,
        htmlEscape(humanBytes(static_cast<double>(r.bytesRead))),
        htmlEscape(humanBytes(static_cast<double>(r.bytesWritten))), r.failedAttempts,
        r.backupAttempts, r.wallMs / 1000.0);
  }
  if (reports.empty()) body += "<tr><td colspan=\"11\">No job yet.</td></tr>\n";
  body += "</table>\n";
  // The tasks of running jobs (ended ones are summed up above).
  for (auto& r : reports) {
    if (r.state != JobState::RUNNING) continue;
    body += fmt::format(
        "<h2>Tasks of job {}</h2>\n<table class=\"tasks\">\n<tr><th>Task</th><th>State</th>"
        "<th>Worker</th><th>Data-local</th><th>Time</th></tr>\n",
        r.jobId);
    for (auto& t : scheduler.tasksOf(r.jobId, now)) {
      std::string where;
      for (auto& w : t.workers) where += (where.empty() ? "" : ", ") + htmlEscape(w);
      body += fmt::format(
          "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
          t.isMap ? "map" : "reduce", t.index, taskStateName(t.state), where,
          t.isMap && t.state == TaskView::State::DONE ? (t.dataLocal ? "yes" : "no") : "",
          t.state == TaskView::State::PENDING ? ""
                                              : fmt::format("{:.1f} s", t.durationMs / 1000.0));
    }
    body += "</table>\n";
  }
  body +=
      "<h2>Workers</h2>\n<table id=\"workers\">\n<tr><th>Address</th><th>Host</th>"
      "<th>Slots</th><th>Running</th><th>Last heartbeat</th></tr>\n";
  for (auto& w : workers) {
    body += fmt::format(
        "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
        "<td>{:.1f} s ago</td></tr>\n",
        htmlEscape(w.address), htmlEscape(w.host), w.slots, w.running, w.sinceHeartbeatMs / 1000.0);
  }
  if (workers.empty()) body += "<tr><td colspan=\"5\">No worker has joined.</td></tr>\n";
  body += "</table>\n";
  return htmlPage("Cairn MapReduce coordinator", body);
}

}  // namespace cairn::mapreduce
