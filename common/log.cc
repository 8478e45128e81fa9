#include "log.h"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace cairn {
namespace {

std::atomic<LogLevel> minLevel{LogLevel::INFO};
std::mutex mutex;
std::string component = "cairn";

const char* levelName(LogLevel level) {
  switch (level) {
    case LogLevel::DEBUG:
      return "DEBUG";
    case LogLevel::INFO:
      return "INFO ";
    case LogLevel::WARN:
      return "WARN ";
    case LogLevel::ERROR:
      return "ERROR";
  }
  return "?";
}

}  // namespace

void setLogLevel(LogLevel level) { minLevel = level; }

void setLogComponent(std::string_view name) {
  std::lock_guard<std::mutex> lock(mutex);
  component = name;
}

void logLine(LogLevel level, std::string_view text) {
  if (level < minLevel.load()) return;
  // Log timestamps are the one place that reads the wall clock directly: they are for
  // people, never for logic.
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  std::lock_guard<std::mutex> lock(mutex);
  fprintf(stderr, "%s.%03ldZ %s %s: %.*s\n", stamp, ts.tv_nsec / 1000000, levelName(level),
          component.c_str(), static_cast<int>(text.size()), text.data());
  fflush(stderr);
}

}  // namespace cairn
