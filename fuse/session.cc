// Serving a FUSE session on libcairn's event loop: the loop reads /dev/fuse (non-blocking)
// and hands each request to libfuse, whose callbacks (cairn_fs.cc) start the libcairn call
// and reply when it resolves.

#include <fcntl.h>
#include <kj/async-unix.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "cairn_fs.h"
#include "log.h"

namespace cairn {
namespace {

// Reads requests while /dev/fuse has them, a batch at a time so that replies and network
// events interleave, and waits for it to become readable when it has none. Resolves when
// the kernel ends the session (an unmount).
class SessionReader {
 public:
  SessionReader(fuse_session* se, kj::UnixEventPort& port)
      : se(se), observer(port, fuse_session_fd(se), kj::UnixEventPort::FdObserver::OBSERVE_READ) {}
  ~SessionReader() { free(buf.mem); }

  kj::Promise<void> run() {
    for (int n = 0; n < 64; ++n) {
      int got = fuse_session_receive_buf(se, &buf);
      if (got == -EAGAIN) return observer.whenBecomesReadable().then([this]() { return run(); });
      if (got == -EINTR) continue;  // a request interrupted before it was read
      if (got < 0) logError("reading /dev/fuse: {}", strerror(-got));
      if (got <= 0 || fuse_session_exited(se)) return kj::READY_NOW;
      fuse_session_process_buf(se, &buf);
    }
    return kj::evalLater([this]() { return run(); });
  }

 private:
  fuse_session* se;
  kj::UnixEventPort::FdObserver observer;
  fuse_buf buf{};
};

struct LogTaskErrors final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& e) override {
    logError("a FUSE request failed: {}", e.getDescription().cStr());
  }
};

}  // namespace

kj::Promise<void> serveSession(CairnFs& fs, Client& client, FileCache& cache,
                               kj::UnixEventPort& port) {
  int fd = fuse_session_fd(fs.session);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    logError("/dev/fuse: cannot make it non-blocking: {}", strerror(errno));
    return kj::READY_NOW;
  }
  auto errors = kj::heap<LogTaskErrors>();
  auto tasks = kj::heap<kj::TaskSet>(*errors);
  auto reader = kj::heap<SessionReader>(fs.session, port);
  fs.client = &client;
  fs.cache = &cache;
  fs.tasks = tasks.get();
  auto stop =
      port.onSignal(SIGTERM).ignoreResult().exclusiveJoin(port.onSignal(SIGINT).ignoreResult());
  return reader->run()
      .exclusiveJoin(kj::mv(stop))
      .then([&fs, tasks = kj::mv(tasks)]() mutable {
        // Requests under way are dropped with the session, and answered EIO: a process
        // waiting on one would hold its directory's lock, and so would the notification
        // the kernel cache's thread may be writing (see KernelCache).
        fs.tasks = nullptr;
        tasks = nullptr;
        for (fuse_req_t req : fs.unanswered) fuse_reply_err(req, EIO);
        fs.unanswered.clear();
        fs.client = nullptr;
        fs.cache = nullptr;
      })
      .attach(kj::mv(reader), kj::mv(errors));
}

}  // namespace cairn
