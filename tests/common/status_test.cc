#include "status.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

namespace cairn {
namespace {

TEST(StatusTest, OkIsDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.toString(), "ok");
}

TEST(StatusTest, NamesComeFromTheSchema) {
  EXPECT_STREQ(errorName(ErrorCode::NOT_FOUND), "notFound");
  EXPECT_STREQ(errorName(ErrorCode::REPLICA_CORRUPT), "replicaCorrupt");
  EXPECT_EQ(Status::notEmpty("dir x").toString(), "notEmpty: dir x");
}

TEST(StatusTest, WireRoundTrip) {
  capnp::MallocMessageBuilder message;
  auto builder = message.initRoot<wire::Status>();
  toWire(Status::staleVersion("v3 < v4"), builder);
  Status back = fromWire(builder.asReader());
  EXPECT_EQ(back.code(), ErrorCode::STALE_VERSION);
  EXPECT_EQ(back.message(), "v3 < v4");
}

}  // namespace
}  // namespace cairn
