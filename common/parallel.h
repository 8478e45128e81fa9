#pragma once
// Bounded parallelism on one event loop.

#include <kj/async.h>
#include <kj/function.h>
#include <kj/vector.h>

#include "status.h"

namespace cairn {

// Runs task(0..count-1) with at most `parallel` in flight; resolves to the first failure
// (after every started task has finished; no new one starts after a failure) or OK.
kj::Promise<Status> runLimited(size_t count, size_t parallel,
                               kj::Function<kj::Promise<Status>(size_t)> task);

}  // namespace cairn
