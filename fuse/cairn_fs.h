#pragma once
// The FUSE low-level operations over libcairn. Each callback copies its arguments, runs
// the libcairn call on the client's loop, maps the Status to an errno and replies once.
// No policy lives here: caching, buffering, retries and replica choice are libcairn's.

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "blocking_client.h"

namespace cairn {

struct MountOptions {
  double entryTimeout = 1.0;  // seconds the kernel may cache a name
  double attrTimeout = 1.0;   // seconds the kernel may cache attributes
};

struct CairnFs {
  BlockingClient* client = nullptr;  // set before the session loop starts
  fuse_session* session = nullptr;   // for notifications to the kernel
  MountOptions options;
};

// The operations table; fuse_req_userdata() of every request is a CairnFs.
fuse_lowlevel_ops cairnOperations();

}  // namespace cairn
