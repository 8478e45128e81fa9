#include "replica_rule.h"

#include <algorithm>

namespace cairn {

bool replicaAtFault(ErrorCode code) {
  switch (code) {
    case ErrorCode::NO_SPACE:
    case ErrorCode::IO_ERROR:
    case ErrorCode::UNAVAILABLE:
    case ErrorCode::STALE_VERSION:
    case ErrorCode::REPLICA_CORRUPT:
    case ErrorCode::NOT_FOUND:
      return true;
    default:
      return false;
  }
}

namespace {
bool contains(const std::vector<uint64_t>& v, uint64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}
}  // namespace

FailedWriteDecision afterFailedWrite(const std::vector<uint64_t>& current,
                                     const std::vector<ServerFailure>& failures,
                                     size_t roomElsewhere) {
  FailedWriteDecision d;
  std::vector<uint64_t> atFault;
  size_t noSpace = 0;
  Status firstFault;
  for (auto& f : failures) {
    if (!contains(current, f.server)) continue;
    ErrorCode code = f.status.code();
    if (code == ErrorCode::NOT_PRIMARY || code == ErrorCode::LEASE_EXPIRED) d.newLease = true;
    if (!replicaAtFault(code)) continue;
    if (!contains(atFault, f.server)) atFault.push_back(f.server);
    if (firstFault.ok()) firstFault = f.status;
    if (code == ErrorCode::NO_SPACE) {
      ++noSpace;
      firstFault = f.status;
    }
  }
  if (atFault.empty()) return d;
  size_t survivors = 0;
  for (uint64_t s : current) survivors += !contains(atFault, s);
  if (survivors == 0 || noSpace > roomElsewhere) {
    // Nothing is dropped: every replica keeps every acknowledged byte, and the writer
    // learns why the write cannot be done.
    d.error = noSpace > 0 ? Status::noSpace(firstFault.message()) : firstFault;
    d.newLease = false;
    return d;
  }
  d.drop = std::move(atFault);
  d.newLease = true;
  return d;
}

bool mayLeave(uint64_t server, const std::vector<uint64_t>& current) {
  for (uint64_t s : current) {
    if (s != server) return true;
  }
  return false;
}

bool mayDelete(uint64_t server, bool chunkExists, const std::vector<uint64_t>& current) {
  if (!chunkExists) return true;
  if (contains(current, server)) return false;  // a current replica never goes this way
  return !current.empty();
}

}  // namespace cairn
