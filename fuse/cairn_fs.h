#pragma once
// The FUSE low-level operations over libcairn, served on the client's event loop: requests
// are read from /dev/fuse there, each callback copies its arguments and starts the libcairn
// call, and the reply (the Status mapped to an errno) goes out when it resolves. No thread
// hand-off per request, and no policy here: caching, buffering, retries and replica
// choice are libcairn's.

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <kj/async-unix.h>

#include <unordered_set>

#include "client.h"
#include "file_cache.h"
#include "kernel_cache.h"

namespace cairn {

struct MountOptions {
  double entryTimeout = 1.0;  // seconds the kernel may cache a name
  double attrTimeout = 1.0;   // seconds the kernel may cache attributes
  // Seconds the kernel may cache that a name does not exist (0: it asks each time; the
  // mount's -o negative_timeout, entry_timeout unless given). Names this mount makes
  // replace the cached absence at once; another client's are seen after this long.
  double negativeTimeout = 1.0;
  // Seconds a released file may stay open at the master, so that the releases of that time
  // go in one call (ClientOptions::closeDelay); 0: each release is its own call.
  double closeDelay = 0.02;
  // Seconds the kernel may keep names (found or not) and attributes while the master
  // tells this mount of every change other clients make (-o cache_timeout; 0: never, the
  // three above always). When the master can no longer tell (its connection lost, a
  // failover), all of it is dropped.
  double watchedTimeout = 60.0;
};

struct CairnFs {
  fuse_session* session = nullptr;  // set before serveSession; notifications to the kernel
  MountOptions options;
  // Set by serveSession, on the loop thread:
  Client* client = nullptr;
  FileCache* cache = nullptr;
  kj::TaskSet* tasks = nullptr;               // requests under way
  std::unordered_set<fuse_req_t> unanswered;  // theirs: answered EIO if the session stops
  KernelCache* kernelCache = nullptr;         // with options.watchedTimeout > 0
};

// The operations table; fuse_req_userdata() of every request is a CairnFs.
fuse_lowlevel_ops cairnOperations();

// Serves fs.session on this thread's event loop (the one that runs `client`) until the
// kernel ends it (an unmount) or SIGTERM or SIGINT arrives (both captured with
// UnixEventPort::captureSignal before any thread started).
kj::Promise<void> serveSession(CairnFs& fs, Client& client, FileCache& cache,
                               kj::UnixEventPort& port);

}  // namespace cairn
