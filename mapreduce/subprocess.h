#pragma once
// Streaming jobs run shell commands: `sh -c COMMAND`, fed on stdin, read line by line on
// stdout (the Hadoop streaming contract). The process must ignore SIGPIPE (a command may
// stop reading early).

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace cairn::mapreduce {

// Writes bytes to the command's stdin; false once the command no longer reads.
using WriteInput = std::function<bool(std::string_view)>;
// Asked a few times a second while a command runs; true stops it.
using Cancelled = std::function<bool()>;

// Runs `sh -c command` with `env` ("NAME=value") added to this process's environment.
// `feed` runs on a thread of its own and writes the command's stdin; stdin closes when it
// returns. Each stdout line, without its newline, goes to `line` on the calling thread (a
// last line without a newline too). Fails with feed's or line's error (the command is then
// killed), or when the command exits non-zero or dies by a signal: the message names the
// exit and ends with the last line the command wrote on stderr. When `cancelled` says so,
// the command (its whole process group) is killed and the result is `unavailable`.
Status runCommand(const std::string& command, const std::vector<std::string>& env,
                  const std::function<Status(const WriteInput&)>& feed,
                  const std::function<Status(std::string_view)>& line,
                  const Cancelled& cancelled = nullptr);

}  // namespace cairn::mapreduce
