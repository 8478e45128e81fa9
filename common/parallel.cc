#include "parallel.h"

#include <algorithm>

namespace cairn {
namespace {

struct Lanes {
  size_t next = 0;
  size_t count = 0;
  Status first;
  kj::Function<kj::Promise<Status>(size_t)> task;
};

kj::Promise<void> lane(Lanes& lanes) {
  if (lanes.next >= lanes.count || !lanes.first.ok()) return kj::READY_NOW;
  size_t i = lanes.next++;
  return lanes.task(i).then([&lanes](Status s) {
    if (!s.ok() && lanes.first.ok()) lanes.first = s;
    return lane(lanes);
  });
}

}  // namespace

kj::Promise<Status> runLimited(size_t count, size_t parallel,
                               kj::Function<kj::Promise<Status>(size_t)> task) {
  auto lanes = kj::heap<Lanes>();
  lanes->count = count;
  lanes->task = kj::mv(task);
  kj::Vector<kj::Promise<void>> all;
  for (size_t i = 0; i < std::min(count, parallel); ++i) all.add(lane(*lanes));
  auto& ref = *lanes;
  return kj::joinPromises(all.releaseAsArray())
      .then([&ref]() { return ref.first; })
      .attach(kj::mv(lanes));
}

}  // namespace cairn
