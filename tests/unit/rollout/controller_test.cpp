// RolloutController's shared-state protocol without Redis: what RolloutSync
// would write, how a compare-and-set conflict is resolved (operator verbs and
// rollbacks re-applied, analysis advances dropped), the lease gate on
// advancing, and "no canary traffic before the stored state is known".
// ManualClock, no sleeps.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"
#include "rollout/controller.hpp"
#include "rollout/state_machine.hpp"

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

config::Config make_config() {
  config::Config cfg;
  cfg.rollout.steps = {{10, 1s}, {25, 1s}, {50, 1s}, {100, 0ms}};
  cfg.rollout.analysis.interval = 1s;
  cfg.rollout.analysis.window = 30s;
  cfg.rollout.analysis.min_requests = 10;
  cfg.rollout.analysis.max_error_rate = 0.01;
  cfg.rollout.analysis.max_p99_latency = 5000ms;
  cfg.rollout.analysis.relative_to_control = true;
  return cfg;
}

class SharedControllerTest : public ::testing::Test {
 protected:
  SharedControllerTest() : ctl_(cfg_, nullptr, clock_) {
    ctl_.enable_shared([this] { ++changes_; });
  }

  void traffic(int canary_errors, int n = 20) {
    for (int i = 0; i < n; ++i) {
      ctl_.record(Arm::control, false, 10ms);
      ctl_.record(Arm::canary, i < canary_errors, 10ms);
    }
  }
  std::string post(RolloutController::Verb verb) {
    ctl_.operate(verb);
    return ctl_.status().value("state", "");
  }
  // A stored status as another replica would have written it.
  std::string stored(rollout::State state, std::size_t step, double weight, std::uint64_t version,
                     std::uint64_t epoch = 0) {
    rollout::Status s;
    s.state = state;
    s.step = step;
    s.weight = weight;
    s.steps = cfg_.rollout.steps;
    s.since = "2026-01-01T00:00:00Z";
    s.reason = "by another replica";
    s.version = version;
    s.epoch = epoch;
    s.step_started_unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(clock_.wall().time_since_epoch()).count();
    return rollout::encode(s);
  }
  void load_absent_and_write() {
    ASSERT_TRUE(ctl_.shared_observed(std::nullopt));
    auto w = ctl_.shared_pending();
    ASSERT_TRUE(w);
    ctl_.shared_written(*w);
  }

  config::Config cfg_ = make_config();
  ManualClock clock_;
  RolloutController ctl_;
  int changes_ = 0;
};

TEST_F(SharedControllerTest, NoCanaryTrafficUntilTheStoredStateIsRead) {
  EXPECT_EQ(ctl_.threshold(), 0u);
  EXPECT_TRUE(ctl_.rolled_back());
  EXPECT_FALSE(ctl_.shared_pending());
  EXPECT_FALSE(ctl_.shared_loaded());
  // Ticks do nothing meanwhile, even with a verdict.
  traffic(0);
  clock_.advance(2s);
  ctl_.tick();
  EXPECT_EQ(ctl_.status()["version"], 0);

  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::progressing, 1, 25, 4)));
  EXPECT_TRUE(ctl_.shared_loaded());
  EXPECT_EQ(ctl_.threshold(), 2500u);
  EXPECT_FALSE(ctl_.rolled_back());
  EXPECT_EQ(ctl_.status()["version"], 4);
  EXPECT_EQ(ctl_.status()["weight"], 25);
  EXPECT_FALSE(ctl_.shared_pending()) << "adopted state needs no write";
}

TEST_F(SharedControllerTest, RestartIntoAnAbortedRolloutSendsNothingToTheCanary) {
  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::aborted, 2, 0, 7, 1)));
  EXPECT_EQ(ctl_.threshold(), 0u);
  EXPECT_TRUE(ctl_.rolled_back());
  EXPECT_EQ(ctl_.epoch(), 1u);
  EXPECT_EQ(ctl_.status()["state"], "aborted");
}

TEST_F(SharedControllerTest, AbsentKeyWritesTheInitialStateOnlyIfStillAbsent) {
  ASSERT_TRUE(ctl_.shared_observed(std::nullopt));
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_FALSE(w->expected);
  EXPECT_EQ(w->version, 0u);
  EXPECT_FALSE(w->needs_lease);
  auto s = rollout::decode(w->value);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->weight, 10);
  ctl_.shared_written(*w);
  EXPECT_FALSE(ctl_.shared_pending());
}

TEST_F(SharedControllerTest, ConflictReappliesAnAbortOnTheStoredState) {
  load_absent_and_write();
  changes_ = 0;
  EXPECT_EQ(post(RolloutController::Verb::abort), "aborted");
  EXPECT_EQ(changes_, 1);
  EXPECT_EQ(ctl_.threshold(), 0u) << "the hot path sees the abort before Redis does";
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->expected, 0u);
  EXPECT_EQ(w->version, 1u);

  // Meanwhile another replica promoted to step 1 (version 1): the CAS fails
  // with that state; the abort is re-applied on it.
  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::progressing, 1, 25, 1)));
  auto st = ctl_.status();
  EXPECT_EQ(st["state"], "aborted");
  EXPECT_EQ(st["version"], 2);
  EXPECT_EQ(st["epoch"], 1);
  w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->expected, 1u);
  EXPECT_EQ(w->version, 2u);
  ctl_.shared_written(*w);
  EXPECT_FALSE(ctl_.shared_pending());
  EXPECT_EQ(ctl_.status()["sync"]["pending"], 0);
}

TEST_F(SharedControllerTest, AnAbortAlreadyStoredIsNotAppliedTwice) {
  load_absent_and_write();
  post(RolloutController::Verb::abort);
  // Another replica aborted first (epoch 1, version 1): ours has nothing left to do.
  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::aborted, 0, 0, 1, 1)));
  EXPECT_FALSE(ctl_.shared_pending());
  EXPECT_EQ(ctl_.status()["epoch"], 1);
  EXPECT_EQ(ctl_.status()["version"], 1);
}

TEST_F(SharedControllerTest, OnlyTheLeaseHolderAdvances) {
  load_absent_and_write();
  traffic(0);
  clock_.advance(2s);
  ctl_.tick();
  EXPECT_EQ(ctl_.status()["step"], 0) << "no lease: no advance";
  EXPECT_EQ(ctl_.status()["verdict"]["kind"], "pass") << "the verdict is still shown";
  EXPECT_FALSE(ctl_.shared_pending());

  ctl_.set_lease(true);
  ctl_.tick();
  EXPECT_EQ(ctl_.status()["step"], 1);
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_TRUE(w->needs_lease);
  EXPECT_EQ(w->expected, 0u);
}

TEST_F(SharedControllerTest, AnAdvanceInConflictIsDroppedNotReplayed) {
  load_absent_and_write();
  ctl_.set_lease(true);
  traffic(0);
  clock_.advance(2s);
  ctl_.tick();
  ASSERT_EQ(ctl_.status()["step"], 1);
  // Another replica advanced step 0 -> 1 first (version 1). Replaying ours
  // would advance a second time (to step 2): it must not.
  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::progressing, 1, 25, 1)));
  EXPECT_EQ(ctl_.status()["step"], 1);
  EXPECT_EQ(ctl_.status()["version"], 1);
  EXPECT_FALSE(ctl_.shared_pending());
}

TEST_F(SharedControllerTest, LeaseLostAtWriteTimeRevertsTheAdvance) {
  load_absent_and_write();
  ctl_.set_lease(true);
  traffic(0);
  clock_.advance(2s);
  ctl_.tick();
  ASSERT_EQ(ctl_.status()["weight"], 25);
  // The script refused the write (lease owned by another replica): the stored
  // state is still version 0, the one we are based on.
  ctl_.set_lease(false);
  ASSERT_TRUE(ctl_.shared_observed(stored(rollout::State::progressing, 0, 10, 0), /*force=*/true));
  EXPECT_EQ(ctl_.status()["weight"], 10);
  EXPECT_EQ(ctl_.threshold(), 1000u);
  EXPECT_FALSE(ctl_.shared_pending());
}

TEST_F(SharedControllerTest, AnyReplicaRollsBackWithoutTheLease) {
  load_absent_and_write();
  traffic(20);  // canary 100% errors, control 0%: the critical error rate, at the first look
  ctl_.tick();
  EXPECT_EQ(ctl_.status()["state"], "aborted");
  EXPECT_EQ(ctl_.threshold(), 0u);
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_FALSE(w->needs_lease);
}

TEST_F(SharedControllerTest, RollbackWhileRedisIsDownIsWrittenWhenItComesBackEmpty) {
  load_absent_and_write();
  traffic(20);
  ctl_.tick();  // local rollback; the CAS fails (Redis down): nothing confirmed
  ASSERT_EQ(ctl_.status()["state"], "aborted");
  // Redis returns without the key: the CAS answers "absent"; our state is written as is.
  ASSERT_TRUE(ctl_.shared_observed(std::nullopt));
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  EXPECT_FALSE(w->expected);
  auto s = rollout::decode(w->value);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->state, rollout::State::aborted);
}

TEST_F(SharedControllerTest, OperationsAfterASnapshotStayQueued) {
  load_absent_and_write();
  post(RolloutController::Verb::pause);
  auto w = ctl_.shared_pending();
  ASSERT_TRUE(w);
  post(RolloutController::Verb::resume);  // lands while the CAS of `w` is in flight
  ctl_.shared_written(*w);
  auto next = ctl_.shared_pending();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->expected, w->version);
  EXPECT_EQ(next->ops, 1u);
}

TEST_F(SharedControllerTest, MalformedStoredStateChangesNothing) {
  load_absent_and_write();
  EXPECT_FALSE(ctl_.shared_observed(std::string("{not json")));
  EXPECT_EQ(ctl_.status()["weight"], 10);
}

TEST(MemoryControllerTest, WithoutRedisTheStateIsInProcess) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  EXPECT_EQ(ctl.threshold(), 1000u);
  EXPECT_EQ(ctl.status()["sync"]["store"], "memory");
  EXPECT_FALSE(ctl.shared_pending());
  for (int i = 0; i < 20; ++i) {
    ctl.record(Arm::control, false, 10ms);
    ctl.record(Arm::canary, false, 10ms);
  }
  clock.advance(2s);
  ctl.tick();
  EXPECT_EQ(ctl.status()["step"], 1) << "one replica needs no lease";
}

}  // namespace
}  // namespace canaryd::rollout
