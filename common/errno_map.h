#pragma once
// The one place where Cairn's error codes become the errno a local file system gives.

#include "status.h"

namespace cairn {

int toErrno(ErrorCode code);

}  // namespace cairn
