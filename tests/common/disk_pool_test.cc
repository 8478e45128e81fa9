#include "disk_pool.h"

#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/debug.h>

#include <thread>

namespace cairn {
namespace {

TEST(DiskPoolTest, RunsOffTheLoopAndResolvesOnIt) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  DiskPool pool(2);
  auto caller = std::this_thread::get_id();
  auto ran = pool.run([caller]() { return std::this_thread::get_id() != caller; }).wait(ws);
  EXPECT_TRUE(ran);
}

TEST(DiskPoolTest, ExceptionsRejectThePromise) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  DiskPool pool(1);
  auto p = pool.run([]() -> int { KJ_FAIL_ASSERT("disk on fire"); });
  EXPECT_ANY_THROW(p.wait(ws));
  pool.run([]() {}).wait(ws);  // void jobs work, and the pool survived
}

}  // namespace
}  // namespace cairn
