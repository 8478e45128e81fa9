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

// Runs `sh -c command` with `env` ("NAME=value") added to this process's environment.
// `feed` runs on a thread of its own and writes the command's stdin; stdin closes when it
// returns. Each stdout line, without its newline, goes to `line` on the calling thread (a
// last line without a newline too). Fails with feed's or line's error (the command is then
// killed), or when the command exits non-zero or dies by a signal: the message names the
// exit and ends with the last line the command wrote on stderr.
Status runCommand(const std::string& command, const std::vector<std::string>& env,
                  const std::function<Status(const WriteInput&)>& feed,
                  const std::function<Status(std::string_view)>& line);

}  // namespace cairn::mapreduce
