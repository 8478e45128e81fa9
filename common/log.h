#pragma once
// One line per event: "2026-11-25T02:00:00.123Z INFO  master: text".

#include <fmt/format.h>

#include <string_view>

namespace cairn {

enum class LogLevel { DEBUG, INFO, WARN, ERROR };

// Lines below `level` are dropped. Thread-safe.
void setLogLevel(LogLevel level);
void setLogComponent(std::string_view component);
void logLine(LogLevel level, std::string_view text);

template <typename... Args>
void logInfo(fmt::format_string<Args...> f, Args&&... args) {
  logLine(LogLevel::INFO, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void logWarn(fmt::format_string<Args...> f, Args&&... args) {
  logLine(LogLevel::WARN, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void logError(fmt::format_string<Args...> f, Args&&... args) {
  logLine(LogLevel::ERROR, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void logDebug(fmt::format_string<Args...> f, Args&&... args) {
  logLine(LogLevel::DEBUG, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace cairn
