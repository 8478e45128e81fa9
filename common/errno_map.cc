#include "errno_map.h"

#include <cerrno>

namespace cairn {

int toErrno(ErrorCode code) {
  // No default: -Wswitch names any code added to the schema and not mapped here.
  switch (code) {
    case ErrorCode::OK:
      return 0;
    case ErrorCode::NOT_FOUND:
      return ENOENT;
    case ErrorCode::ALREADY_EXISTS:
      return EEXIST;
    case ErrorCode::NOT_DIRECTORY:
      return ENOTDIR;
    case ErrorCode::IS_DIRECTORY:
      return EISDIR;
    case ErrorCode::NOT_EMPTY:
      return ENOTEMPTY;
    case ErrorCode::PERMISSION_DENIED:
      return EACCES;
    case ErrorCode::TOKEN_INVALID:
      return EACCES;  // only once a fresh token was refused too
    case ErrorCode::NAME_TOO_LONG:
      return ENAMETOOLONG;
    case ErrorCode::INVALID_ARGUMENT:
      return EINVAL;
    case ErrorCode::NO_SPACE:
      return ENOSPC;
    case ErrorCode::NO_ATTRIBUTE:
      return ENODATA;
    case ErrorCode::NOT_SUPPORTED:
      return EOPNOTSUPP;
    case ErrorCode::NOT_PERMITTED:
      return EPERM;
    case ErrorCode::END_OF_DATA:
      return ENXIO;
    case ErrorCode::READ_ONLY:
      return EROFS;
    // What is left is transient or a failure of the cluster: the caller sees an I/O error,
    // never ENOSYS (which would make the kernel stop asking).
    case ErrorCode::STALE_VERSION:
    case ErrorCode::NOT_PRIMARY:
    case ErrorCode::LEASE_EXPIRED:
    case ErrorCode::REPLICA_CORRUPT:
    case ErrorCode::UNAVAILABLE:
    case ErrorCode::IO_ERROR:
    case ErrorCode::SAFE_MODE:
    case ErrorCode::BUSY:
    case ErrorCode::DATA_NOT_PUSHED:
    case ErrorCode::NOT_ACTIVE:  // reached only when no master became active in time
    case ErrorCode::CHUNK_FULL:  // handled by libcairn's append (the next chunk)
      return EIO;
  }
  return EIO;
}

}  // namespace cairn
