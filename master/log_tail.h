#pragma once
// LevelDB's write-ahead log after a power cut. What the master acknowledged without a sync
// may be lost then (README "Durability"); the unsynced end of the log may hold garbage
// rather than nothing, and LevelDB's paranoid checks refuse to open over it. A torn end is
// cut off (kept beside the log as `<log>.torn`); a bad record with good ones after it is
// damage, not a torn write, and stops the master instead.

#include <leveldb/env.h>

#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace cairn {

struct TornTail {
  std::string file;
  uint64_t kept = 0;     // bytes of whole records left in the log
  uint64_t dropped = 0;  // bytes cut off
};

// Cuts the torn end off every LevelDB log file in `dir`, adding what it cut to `cut`.
// Returns IO_ERROR, changing nothing more, for a log with a bad record before good ones.
Status cutTornLogTails(leveldb::Env& env, const std::string& dir, std::vector<TornTail>& cut);

}  // namespace cairn
