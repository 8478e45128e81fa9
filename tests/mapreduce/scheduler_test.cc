// The coordinator's scheduling decisions, driven with explicit times: locality, the
// reduce barrier, lost workers, lost map output, attempts, backups and timeouts.

#include "scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace cairn::mapreduce {
namespace {

Split split(uint64_t start, std::vector<std::string> hosts) {
  Split s;
  s.path = "/in";
  s.inode = 7;
  s.fileSize = 1000;
  s.start = start;
  s.end = start + 100;
  s.hosts = std::move(hosts);
  return s;
}

JobSpec spec(uint32_t reducers) {
  JobSpec s;
  s.inputs = {"/in"};
  s.output = "/out";
  s.reducers = reducers;
  s.taskTimeoutMs = 10000;
  return s;
}

AttemptResult ok(const Assignment& a) {
  AttemptResult r;
  r.jobId = a.jobId;
  r.task = a.task;
  r.attempt = a.attempt;
  r.isMap = a.isMap;
  r.bytesRead = 100;
  return r;
}

AttemptResult failed(const Assignment& a, const std::string& why) {
  AttemptResult r = ok(a);
  r.status = Status::ioError(why);
  return r;
}

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() {
    SchedulerOptions o;
    o.localityWaitMs = 3000;
    o.backupAfterMs = 1000;
    sched = std::make_unique<Scheduler>(o);
    sched->onReducesDone = [this](uint64_t id) { committing.push_back(id); };
  }
  std::unique_ptr<Scheduler> sched;
  std::vector<uint64_t> committing;
};

TEST_F(SchedulerTest, MapsGoBesideTheirReplicas) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t b = sched->addWorker("B", "B:1", 1, 0);
  uint64_t job = sched->addJob(spec(1), {split(0, {"B"}), split(100, {"A"})}, 1, 0);
  auto ta = sched->assign(a, 0);
  auto tb = sched->assign(b, 0);
  ASSERT_TRUE(ta && tb);
  EXPECT_EQ(ta->task, 1u);
  EXPECT_EQ(tb->task, 0u);
  EXPECT_FALSE(sched->assign(a, 0)) << "one slot";
  sched->finish(a, ok(*ta), 10);
  sched->finish(b, ok(*tb), 10);
  EXPECT_EQ(sched->report(job, 10)->dataLocalMaps, 2u);
}

TEST_F(SchedulerTest, AMapWaitsForAFreeWorkerBesideItsReplicaThenGoesAnywhere) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t c = sched->addWorker("C", "C:1", 1, 0);
  sched->addJob(spec(1), {split(0, {"A"}), split(100, {"A"})}, 1, 0);
  EXPECT_FALSE(sched->assign(c, 0)) << "A is free: leave A's chunks to A";
  auto first = sched->assign(a, 0);
  ASSERT_TRUE(first);
  // A is busy now: C takes the other map at once.
  auto second = sched->assign(c, 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->task, 1u);

  // A chunk with no free worker beside it waits at most localityWaitMs.
  uint64_t job2 = sched->addJob(spec(1), {split(0, {"A"})}, 1, 100);
  sched->finish(c, ok(*second), 200);
  sched->finish(a, ok(*first), 200);
  auto reduce = sched->assign(c, 200);  // the first job's reduce
  ASSERT_TRUE(reduce && !reduce->isMap);
  sched->finish(c, ok(*reduce), 201);
  // Both free; A's chunk waits for A ...
  EXPECT_FALSE(sched->assign(c, 201));
  // ... until it has waited long enough.
  auto late = sched->assign(c, 3200);
  ASSERT_TRUE(late);
  EXPECT_EQ(late->jobId, job2);
}

TEST_F(SchedulerTest, WithoutLocalityTheFirstPendingMapGoesToAnyWorker) {
  uint64_t c = sched->addWorker("C", "C:1", 1, 0);
  sched->addWorker("A", "A:1", 1, 0);
  JobSpec s = spec(1);
  s.noLocality = true;
  sched->addJob(s, {split(0, {"A"})}, 1, 0);
  auto t = sched->assign(c, 0);
  ASSERT_TRUE(t);
  sched->finish(c, ok(*t), 5);
  EXPECT_EQ(sched->report(1, 5)->dataLocalMaps, 0u);
}

TEST_F(SchedulerTest, ReducesStartWhenEveryMapIsDoneAndLearnWhereOutputIs) {
  uint64_t a = sched->addWorker("A", "A:1", 2, 0);
  uint64_t job = sched->addJob(spec(2), {split(0, {"A"}), split(100, {"A"})}, 1, 0);
  auto m0 = sched->assign(a, 0);
  auto m1 = sched->assign(a, 0);
  ASSERT_TRUE(m0 && m1);
  sched->finish(a, ok(*m0), 5);
  EXPECT_FALSE(sched->assign(a, 5)) << "map 1 still runs: no reduce yet";
  sched->finish(a, ok(*m1), 6);
  auto r0 = sched->assign(a, 6);
  ASSERT_TRUE(r0);
  EXPECT_FALSE(r0->isMap);
  ASSERT_EQ(r0->mapOutputs.size(), 2u);
  EXPECT_EQ(r0->mapOutputs[1].worker, "A:1");
  auto r1 = sched->assign(a, 6);
  ASSERT_TRUE(r1);
  sched->finish(a, ok(*r0), 7);
  EXPECT_TRUE(committing.empty());
  sched->finish(a, ok(*r1), 8);
  EXPECT_EQ(committing, std::vector<uint64_t>{job});
  EXPECT_EQ(sched->report(job, 9)->state, JobState::RUNNING) << "until committed";
  sched->jobCommitted(job, Status::OK(), 9);
  EXPECT_EQ(sched->report(job, 9)->state, JobState::SUCCEEDED);
  EXPECT_EQ(sched->endedJobs(), std::vector<uint64_t>{job});
}

TEST_F(SchedulerTest, ALostWorkersRunningAndFinishedMapsRunAgain) {
  uint64_t a = sched->addWorker("A", "A:1", 2, 0);
  uint64_t b = sched->addWorker("B", "B:1", 1, 0);
  uint64_t job =
      sched->addJob(spec(1), {split(0, {"A"}), split(100, {"A"}), split(200, {"B"})}, 1, 0);
  auto m0 = sched->assign(a, 0);
  auto m1 = sched->assign(a, 0);
  auto m2 = sched->assign(b, 0);
  sched->finish(a, ok(*m0), 5);
  sched->finish(b, ok(*m2), 5);
  EXPECT_EQ(sched->report(job, 5)->mapsDone, 2u);
  sched->workerLost(a, "test", 6);
  auto r = sched->report(job, 6);
  EXPECT_EQ(r->mapsDone, 1u) << "map 0's output was on A";
  EXPECT_EQ(r->failedAttempts, 2u) << "map 1 was running on A, map 0's output was there";
  // B reruns maps 0 and 1 (A's chunks, but A is gone) once they have waited.
  auto again = sched->assign(b, 6 + 3000);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->isMap);
  EXPECT_EQ(again->attempt, 1u) << "a new attempt number";
  // A late result from the lost worker changes nothing.
  sched->finish(a, ok(*m1), 7000);
  EXPECT_EQ(sched->report(job, 7000)->mapsDone, 1u);
}

TEST_F(SchedulerTest, MapOutputLostAfterEveryReduceIsDoneIsNotRerun) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t job = sched->addJob(spec(1), {split(0, {"A"})}, 1, 0);
  auto m = sched->assign(a, 0);
  sched->finish(a, ok(*m), 1);
  auto r = sched->assign(a, 1);
  sched->finish(a, ok(*r), 2);
  sched->workerLost(a, "test", 3);
  EXPECT_EQ(sched->report(job, 3)->mapsDone, 1u);
  EXPECT_EQ(committing, std::vector<uint64_t>{job});
}

TEST_F(SchedulerTest, AReduceThatCannotFetchAMapOutputHasTheMapRerun) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t job = sched->addJob(spec(1), {split(0, {"A"})}, 1, 0);
  JobSpec s = spec(1);
  auto m = sched->assign(a, 0);
  sched->finish(a, ok(*m), 1);
  auto r = sched->assign(a, 1);
  ASSERT_TRUE(r && !r->isMap);
  AttemptResult lost = failed(*r, "fetch failed");
  lost.lostMaps = {r->mapOutputs[0]};
  // Far more fetch failures than max attempts: none of them counts against the reduce.
  for (int i = 0; i < 6; ++i) {
    sched->finish(a, lost, 2);
    auto m2 = sched->assign(a, 2);
    ASSERT_TRUE(m2 && m2->isMap) << "the map runs again first";
    sched->finish(a, ok(*m2), 3);
    r = sched->assign(a, 3);
    ASSERT_TRUE(r && !r->isMap);
    lost = failed(*r, "fetch failed");
    lost.lostMaps = {r->mapOutputs[0]};
  }
  EXPECT_EQ(sched->report(job, 4)->state, JobState::RUNNING);
  // A report about an older attempt's output does not rerun the current one.
  AttemptResult stale = failed(*r, "fetch failed");
  stale.lostMaps = {{0, 0, "A:1"}};
  sched->finish(a, stale, 5);
  auto next = sched->assign(a, 5);
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->isMap);
}

TEST_F(SchedulerTest, ATaskFailingMaxAttemptsTimesFailsTheJob) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  JobSpec s = spec(1);
  s.maxAttempts = 3;
  std::vector<uint64_t> failedJobs;
  sched->onFailed = [&](uint64_t id) { failedJobs.push_back(id); };
  uint64_t job = sched->addJob(s, {split(0, {"A"})}, 1, 0);
  for (int i = 0; i < 3; ++i) {
    auto m = sched->assign(a, i);
    ASSERT_TRUE(m) << i;
    sched->finish(a, failed(*m, "mapper exited with status 1: boom"), i);
  }
  auto r = sched->report(job, 5);
  EXPECT_EQ(r->state, JobState::FAILED);
  EXPECT_EQ(r->error, "map task 0 (/in @0) failed 3 times: mapper exited with status 1: boom");
  EXPECT_EQ(r->failedAttempts, 3u);
  EXPECT_EQ(failedJobs, std::vector<uint64_t>{job});
  EXPECT_FALSE(sched->assign(a, 6)) << "nothing more runs for a failed job";
}

TEST_F(SchedulerTest, KillEndsARunningJobOnly) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  std::vector<uint64_t> failedJobs;
  sched->onFailed = [&](uint64_t id) { failedJobs.push_back(id); };
  uint64_t job = sched->addJob(spec(1), {split(0, {"A"})}, 1, 0);
  auto m = sched->assign(a, 0);
  ASSERT_TRUE(m);
  EXPECT_TRUE(sched->kill(job, 5).ok());
  EXPECT_EQ(sched->report(job, 5)->error, "killed on request");
  EXPECT_EQ(sched->endedJobs(), std::vector<uint64_t>{job}) << "workers learn to stop it";
  EXPECT_EQ(failedJobs, std::vector<uint64_t>{job});
  EXPECT_EQ(sched->kill(job, 6).code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(sched->kill(99, 6).code(), ErrorCode::NOT_FOUND);
  // The worker's slot frees when its attempt reports.
  sched->finish(a, failed(*m, "cancelled"), 7);
  uint64_t next = sched->addJob(spec(1), {split(0, {"A"})}, 1, 8);
  auto t = sched->assign(a, 8);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->jobId, next);
}

TEST_F(SchedulerTest, AStragglerGetsABackupAndTheFirstToFinishCounts) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t b = sched->addWorker("B", "B:1", 1, 0);
  uint64_t job = sched->addJob(spec(1), {split(0, {"A"}), split(100, {"B"})}, 1, 0);
  auto slow = sched->assign(a, 0);
  auto quick = sched->assign(b, 0);
  sched->finish(b, ok(*quick), 100);
  EXPECT_FALSE(sched->assign(b, 500)) << "not slow yet";
  auto backup = sched->assign(b, 1500);
  ASSERT_TRUE(backup);
  EXPECT_EQ(backup->task, slow->task);
  EXPECT_NE(backup->attempt, slow->attempt);
  EXPECT_FALSE(sched->assign(b, 1600)) << "one backup per task";
  sched->finish(b, ok(*backup), 1700);
  sched->finish(a, ok(*slow), 1800);  // the loser: ignored
  auto r = sched->report(job, 1800);
  EXPECT_EQ(r->mapsDone, 2u);
  EXPECT_EQ(r->backupAttempts, 1u);
  EXPECT_EQ(r->failedAttempts, 0u);
  auto reduce = sched->assign(a, 1800);
  ASSERT_TRUE(reduce);
  EXPECT_EQ(reduce->mapOutputs[slow->task].worker, "B:1") << "the backup's output counts";
}

TEST_F(SchedulerTest, SilentWorkersAreLostAfterTheJobsTaskTimeout) {
  uint64_t a = sched->addWorker("A", "A:1", 1, 0);
  uint64_t b = sched->addWorker("B", "B:1", 1, 0);
  sched->addJob(spec(1), {split(0, {"A"})}, 1, 0);
  auto m = sched->assign(a, 0);
  ASSERT_TRUE(m);
  for (int64_t t = 1000; t <= 10000; t += 1000) sched->heartbeat(b, t);
  sched->tick(10000);
  EXPECT_TRUE(sched->knowsWorker(a)) << "10 s is not over 10 s";
  sched->heartbeat(b, 10001);
  sched->tick(10001);
  EXPECT_FALSE(sched->knowsWorker(a));
  EXPECT_TRUE(sched->knowsWorker(b));
  EXPECT_FALSE(sched->heartbeat(a, 10002)) << "a lost worker must join again";
  auto again = sched->assign(b, 10001 + 3000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->task, 0u);
}

TEST_F(SchedulerTest, EveryTaskFinishesThroughRandomFailuresLossesAndBackups) {
  // Workers fail attempts, vanish (and new ones come), reduces lose map outputs; every
  // task must still end done exactly as the job's counts say, whatever the order.
  std::mt19937 random(11);
  std::vector<uint64_t> workers;
  int hostsMade = 0;
  auto addWorker = [&](int64_t now) {
    std::string host = "h" + std::to_string(hostsMade++ % 8);
    workers.push_back(sched->addWorker(host, host + ":" + std::to_string(hostsMade), 2, now));
  };
  for (int i = 0; i < 6; ++i) addWorker(0);
  std::vector<Split> splits;
  for (int i = 0; i < 300; ++i) {
    splits.push_back(
        split(i * 100, {"h" + std::to_string(random() % 8), "h" + std::to_string(random() % 8)}));
  }
  JobSpec s = spec(8);
  s.maxAttempts = 1000;
  s.taskTimeoutMs = 100000000;
  uint64_t job = sched->addJob(s, splits, 1, 0);
  struct Running {
    uint64_t worker;
    Assignment a;
  };
  std::vector<Running> running;
  int64_t now = 0;
  for (int step = 0; step < 100000 && committing.empty(); ++step) {
    now += 50;
    for (uint64_t w : workers) sched->heartbeat(w, now);
    for (uint64_t w : workers) {
      while (auto a = sched->assign(w, now)) running.push_back({w, *a});
    }
    if (running.empty()) continue;
    size_t pick = random() % running.size();
    Running r = running[pick];
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(pick));
    int dice = static_cast<int>(random() % 100);
    if (dice < 10) {
      sched->finish(r.worker, failed(r.a, "disk"), now);
    } else if (dice < 12) {
      sched->workerLost(r.worker, "test", now);
      running.erase(std::remove_if(running.begin(), running.end(),
                                   [&](const Running& x) { return x.worker == r.worker; }),
                    running.end());
      workers.erase(std::find(workers.begin(), workers.end(), r.worker));
      addWorker(now);
    } else if (dice < 15 && !r.a.isMap && !r.a.mapOutputs.empty()) {
      AttemptResult lost = failed(r.a, "fetch");
      lost.lostMaps = {r.a.mapOutputs[random() % r.a.mapOutputs.size()]};
      sched->finish(r.worker, lost, now);
    } else {
      sched->finish(r.worker, ok(r.a), now);
    }
  }
  ASSERT_EQ(committing, std::vector<uint64_t>{job});
  auto report = sched->report(job, now);
  EXPECT_EQ(report->mapsDone, 300u);
  EXPECT_EQ(report->reducesDone, 8u);
  EXPECT_GT(report->failedAttempts, 0u);
  for (auto& t : sched->tasksOf(job, now)) EXPECT_EQ(t.state, TaskView::State::DONE);
}

}  // namespace
}  // namespace cairn::mapreduce
