#include "rpc.h"

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <string>
#include <vector>

namespace cairn {
namespace {

// Records each write made to it, as one string; while `gated`, a write waits for open().
class RecordingStream final : public kj::AsyncIoStream {
 public:
  kj::Promise<size_t> tryRead(void*, size_t, size_t) override { return kj::NEVER_DONE; }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    writes.emplace_back(static_cast<const char*>(buffer), size);
    return wait();
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    std::string bytes;
    for (auto piece : pieces) bytes.append(piece.asChars().begin(), piece.size());
    writes.push_back(std::move(bytes));
    return wait();
  }
  kj::Promise<void> whenWriteDisconnected() override { return kj::NEVER_DONE; }
  void shutdownWrite() override {}

  void open() {
    gated = false;
    for (auto& f : waiting) f->fulfill();
    waiting.clear();
  }

  std::vector<std::string> writes;
  bool gated = false;

 private:
  kj::Promise<void> wait() {
    if (!gated) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiting.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
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

}  // namespace
}  // namespace cairn
