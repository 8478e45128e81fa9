#pragma once
// A stream over another that passes on what it does not change itself: the socket's
// options and addresses, the end of reading, the wait for the peer to stop reading. The
// streams that wrap a connection (TLS, the RPC stream's held messages) say only what they
// do differently.

#include <kj/async-io.h>

namespace cairn {

class ForwardingStream : public kj::AsyncIoStream {
 public:
  explicit ForwardingStream(kj::Own<kj::AsyncIoStream> inner) : inner(kj::mv(inner)) {}

  kj::Promise<void> whenWriteDisconnected() override { return inner->whenWriteDisconnected(); }
  void abortRead() override { inner->abortRead(); }
  void getsockopt(int level, int option, void* value, uint* length) override {
    inner->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    inner->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    inner->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    inner->getpeername(addr, length);
  }

 protected:
  kj::Own<kj::AsyncIoStream> inner;  // destroyed after the deriving stream's members
};

}  // namespace cairn
