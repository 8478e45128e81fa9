#include "rpc.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <string>
#include <vector>

#include "master.capnp.h"

namespace cairn {
namespace {

// Records each write made to it, as one string, and passes it on to `next` when it has one;
// while `gated`, a write waits for open(); with `failNext`, the next write fails. A write
// that starts before the last is done is a failure of the test: a stream allows one at a
// time.
class RecordingStream final : public kj::AsyncIoStream {
 public:
  RecordingStream() = default;
  explicit RecordingStream(kj::Own<kj::AsyncIoStream> next) : next(kj::mv(next)) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    KJ_IF_MAYBE (n, next) {
      return (*n)->tryRead(buffer, minBytes, maxBytes);
    }
    return kj::NEVER_DONE;
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    auto piece = kj::arrayPtr(static_cast<const kj::byte*>(buffer), size);
    return write(kj::arrayPtr(&piece, 1));
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    EXPECT_FALSE(writing) << "a write started before the last one was done";
    std::string bytes;
    for (auto piece : pieces) bytes.append(piece.asChars().begin(), piece.size());
    writes.push_back(bytes);
    if (failNext) {
      failNext = false;
      return KJ_EXCEPTION(DISCONNECTED, "injected write failure");
    }
    writing = true;
    auto done = wait();
    if (next != nullptr) {
      auto copy = kj::heap(kj::mv(bytes));
      auto& ref = *copy;
      done = done.then([this, &ref]() {
                   KJ_IF_MAYBE (n2, next) {
                     return (*n2)->write(ref.data(), ref.size());
                   }
                   return kj::Promise<void>(kj::READY_NOW);
                 })
                 .attach(kj::mv(copy));
    }
    return done.then([this]() { writing = false; });
  }
  kj::Promise<void> whenWriteDisconnected() override { return kj::NEVER_DONE; }
  void shutdownWrite() override { shutdowns++; }
  void abortRead() override { abortedReads++; }

  void open() {
    gated = false;
    for (auto& f : waiting) f->fulfill();
    waiting.clear();
  }

  std::vector<std::string> writes;
  bool gated = false, failNext = false, writing = false;
  int shutdowns = 0, abortedReads = 0;

 private:
  kj::Promise<void> wait() {
    if (!gated) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiting.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  kj::Maybe<kj::Own<kj::AsyncIoStream>> next;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiting;
};

class RpcStreamTest : public ::testing::Test {
 protected:
  ~RpcStreamTest() noexcept override {}
  RpcStreamTest()
      : io(kj::setupAsyncIo()),
        timer(kj::origin<kj::TimePoint>()),
        inner(kj::heap<RecordingStream>()) {
    recorded = inner.get();
    stream = rpcStream(kj::mv(inner), timer);
  }

  // Writes an RPC message as the RPC system does (segment table and segments as pieces).
  kj::Promise<void> send(capnp::rpc::Message::Which which, uint32_t id) {
    auto message = kj::heap<capnp::MallocMessageBuilder>();
    auto root = message->initRoot<capnp::rpc::Message>();
    switch (which) {
      case capnp::rpc::Message::FINISH:
        root.initFinish().setQuestionId(id);
        break;
      case capnp::rpc::Message::RELEASE:
        root.initRelease().setId(id);
        break;
      default:
        root.initCall().setQuestionId(id);
        break;
    }
    auto& ref = *message;
    return capnp::writeMessage(*stream, ref).attach(kj::mv(message));
  }

  // The messages one recorded write carries, as "finish 7", "call 8", ...
  static std::vector<std::string> messagesIn(const std::string& bytes) {
    auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
    memcpy(words.begin(), bytes.data(), words.asBytes().size());
    std::vector<std::string> out;
    kj::ArrayPtr<const capnp::word> rest = words;
    while (rest.size() > 0) {
      capnp::FlatArrayMessageReader reader(rest);
      auto m = reader.getRoot<capnp::rpc::Message>();
      switch (m.which()) {
        case capnp::rpc::Message::FINISH:
          out.push_back("finish " + std::to_string(m.getFinish().getQuestionId()));
          break;
        case capnp::rpc::Message::RELEASE:
          out.push_back("release " + std::to_string(m.getRelease().getId()));
          break;
        case capnp::rpc::Message::CALL:
          out.push_back("call " + std::to_string(m.getCall().getQuestionId()));
          break;
        default:
          out.push_back("other");
      }
      rest = kj::arrayPtr(reader.getEnd(), rest.end());
    }
    return out;
  }
  using Messages = std::vector<std::string>;

  void advance(kj::Duration d) {
    timer.advanceTo(timer.now() + d);
    io.waitScope.poll();
  }

  kj::AsyncIoContext io;
  kj::TimerImpl timer;
  kj::Own<RecordingStream> inner;
  RecordingStream* recorded;
  kj::Own<kj::AsyncIoStream> stream;
};

TEST_F(RpcStreamTest, AFinishWaitsForTheNextMessageAndGoesFirstInItsWrite) {
  auto finish = send(capnp::rpc::Message::FINISH, 7);
  EXPECT_TRUE(finish.poll(io.waitScope));  // nobody waits for it
  finish.wait(io.waitScope);
  EXPECT_TRUE(recorded->writes.empty());
  send(capnp::rpc::Message::CALL, 8).wait(io.waitScope);
  ASSERT_EQ(recorded->writes.size(), 1u);
  EXPECT_EQ(messagesIn(recorded->writes[0]), (Messages{"finish 7", "call 8"}));
  // Nothing is left to go out later.
  advance(RPC_HOLD * 2);
  EXPECT_EQ(recorded->writes.size(), 1u);
}

TEST_F(RpcStreamTest, WhatIsHeldGoesAloneOnceTheHoldIsOver) {
  send(capnp::rpc::Message::RELEASE, 3).wait(io.waitScope);
  send(capnp::rpc::Message::FINISH, 4).wait(io.waitScope);
  advance(RPC_HOLD / 2);
  EXPECT_TRUE(recorded->writes.empty());
  advance(RPC_HOLD / 2);
  ASSERT_EQ(recorded->writes.size(), 1u);
  EXPECT_EQ(messagesIn(recorded->writes[0]), (Messages{"release 3", "finish 4"}));
}

TEST_F(RpcStreamTest, AMessageWrittenWhileWhatWasHeldGoesOutFollowsIt) {
  send(capnp::rpc::Message::FINISH, 1).wait(io.waitScope);
  recorded->gated = true;
  advance(RPC_HOLD);  // the flush starts and waits at the gate
  ASSERT_EQ(recorded->writes.size(), 1u);
  auto call = send(capnp::rpc::Message::CALL, 2);
  io.waitScope.poll();
  EXPECT_EQ(recorded->writes.size(), 1u);  // the call waits for the flush
  EXPECT_FALSE(call.poll(io.waitScope));
  recorded->open();
  call.wait(io.waitScope);
  ASSERT_EQ(recorded->writes.size(), 2u);
  EXPECT_EQ(messagesIn(recorded->writes[0]), (Messages{"finish 1"}));
  EXPECT_EQ(messagesIn(recorded->writes[1]), (Messages{"call 2"}));
}

TEST_F(RpcStreamTest, WhatIsHeldDuringAFlushGoesWithTheNextMessageAfterIt) {
  send(capnp::rpc::Message::FINISH, 1).wait(io.waitScope);
  recorded->gated = true;
  advance(RPC_HOLD);  // the flush of finish 1 waits at the gate
  send(capnp::rpc::Message::FINISH, 2).wait(io.waitScope);
  auto call = send(capnp::rpc::Message::CALL, 3);
  io.waitScope.poll();
  EXPECT_EQ(recorded->writes.size(), 1u);
  recorded->open();
  call.wait(io.waitScope);
  ASSERT_EQ(recorded->writes.size(), 2u);
  EXPECT_EQ(messagesIn(recorded->writes[0]), (Messages{"finish 1"}));
  EXPECT_EQ(messagesIn(recorded->writes[1]), (Messages{"finish 2", "call 3"}));
}

TEST_F(RpcStreamTest, AFailedFlushFailsTheReadsAndTheNextWrite) {
  send(capnp::rpc::Message::RELEASE, 1).wait(io.waitScope);
  recorded->failNext = true;
  advance(RPC_HOLD);
  EXPECT_EQ(recorded->abortedReads, 1);  // calls waiting for answers fail at once
  EXPECT_ANY_THROW(send(capnp::rpc::Message::CALL, 2).wait(io.waitScope));
}

TEST_F(RpcStreamTest, TheEndOfTheStreamComesAfterWhatWasHeld) {
  send(capnp::rpc::Message::FINISH, 1).wait(io.waitScope);
  recorded->gated = true;
  stream->shutdownWrite();
  io.waitScope.poll();
  ASSERT_EQ(recorded->writes.size(), 1u);
  EXPECT_EQ(recorded->shutdowns, 0);  // the flush is still under way
  recorded->open();
  io.waitScope.poll();
  EXPECT_EQ(recorded->shutdowns, 1);
  advance(RPC_HOLD * 2);
  EXPECT_EQ(recorded->writes.size(), 1u);  // the timer was stopped
}

// Calls between two real RPC systems: each call's Finish goes out with the next call.
class Ended final : public wire::Watcher::Server {
 public:
  kj::Promise<void> ended(EndedContext) override {
    ++calls;
    return kj::READY_NOW;
  }
  int calls = 0;
};

TEST_F(RpcStreamTest, BetweenTwoRpcSystemsEachFinishRidesWithTheNextCall) {
  auto pipe = io.provider->newTwoWayPipe();
  auto clientSide = kj::heap<RecordingStream>(kj::mv(pipe.ends[0]));
  RecordingStream* clientWrites = clientSide.get();
  auto clientStream = rpcStream(kj::mv(clientSide), timer);
  auto serverStream = rpcStream(kj::mv(pipe.ends[1]), timer);
  capnp::TwoPartyVatNetwork clientNetwork(*clientStream, capnp::rpc::twoparty::Side::CLIENT);
  capnp::TwoPartyVatNetwork serverNetwork(*serverStream, capnp::rpc::twoparty::Side::SERVER);
  auto server = kj::heap<Ended>();
  Ended& ended = *server;
  auto serverRpc = capnp::makeRpcServer(serverNetwork, wire::Watcher::Client(kj::mv(server)));
  auto clientRpc = capnp::makeRpcClient(clientNetwork);
  capnp::MallocMessageBuilder vat;
  auto vatId = vat.initRoot<capnp::rpc::twoparty::VatId>();
  vatId.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto watcher = clientRpc.bootstrap(vatId).castAs<wire::Watcher>();
  watcher.endedRequest().send().wait(io.waitScope);
  size_t before = clientWrites->writes.size();
  constexpr int CALLS = 10;
  for (int i = 0; i < CALLS; ++i) watcher.endedRequest().send().wait(io.waitScope);
  EXPECT_EQ(ended.calls, CALLS + 1);
  // One write per call (a call and the last call's Finish), not two.
  EXPECT_EQ(clientWrites->writes.size() - before, static_cast<size_t>(CALLS));
  io.waitScope.poll();  // the last Finish reaches the stream
  advance(RPC_HOLD);
  EXPECT_EQ(clientWrites->writes.size() - before, static_cast<size_t>(CALLS) + 1);
}

}  // namespace
}  // namespace cairn
