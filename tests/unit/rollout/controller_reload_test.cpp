// RolloutController on a config reload and on the fallback budget: a changed
// analysis.window swaps in new windows (also while I/O threads record: run
// under TSan with the "concurrency" label), the interval in force is what the
// Redis lease is sized from, only split routes are judged, and the budget is a
// share of both arms' requests in the window. ManualClock, no sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

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
  cfg.rollout.steps = {{10, 10min}, {25, 10min}, {100, 0ms}};
  cfg.rollout.analysis.interval = 1s;
  cfg.rollout.analysis.window = 30s;
  cfg.rollout.analysis.min_requests = 10;
  cfg.rollout.analysis.max_error_rate = 0.01;
  cfg.rollout.analysis.max_p99_latency = 5000ms;
  cfg.rollout.analysis.relative_to_control = true;
  cfg.fallback.budget = 0.2;
  return cfg;
}

std::uint64_t requests(const nlohmann::json& status, const char* arm) {
  return status.at("arms").at(arm).at("requests").get<std::uint64_t>();
}

TEST(ControllerReload, ChangedWindowIsAppliedAndRestartsEmpty) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  for (int i = 0; i < 12; ++i) ctl.record(Arm::canary, false, 10ms);
  auto st = ctl.status();
  EXPECT_EQ(st["window_seconds"].get<double>(), 30.0);
  EXPECT_EQ(requests(st, "canary"), 12u);

  cfg.rollout.analysis.window = 10min;
  ctl.reconfigure(cfg);
  st = ctl.status();
  EXPECT_EQ(st["window_seconds"].get<double>(), 600.0);
  EXPECT_EQ(requests(st, "canary"), 0u);

  // Records, the verdict and the status all use the new window.
  ctl.record(Arm::canary, true, 10ms);
  ctl.tick();
  st = ctl.status();
  EXPECT_EQ(requests(st, "canary"), 1u);
  EXPECT_EQ(st["verdict"]["kind"], "inconclusive") << st.dump();
  EXPECT_EQ(st["verdict"]["canary_requests"], 1);
  // The new window really is 10 minutes: a sample 5 minutes old is still in it.
  clock.advance(5min);
  EXPECT_EQ(requests(ctl.status(), "canary"), 1u);
}

// A canary call split before a rollback that ends after the retry (it hung
// through both) belongs to the judgement that is over: it must not count
// against the retried canary.
TEST(ControllerReload, AttemptsOfAnOlderEpochAreDropped) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  const std::uint64_t before = ctl.epoch();
  ASSERT_TRUE(ctl.operate(RolloutController::Verb::abort));
  ASSERT_TRUE(ctl.operate(RolloutController::Verb::retry));
  ASSERT_GT(ctl.epoch(), before);
  for (int i = 0; i < 20; ++i) ctl.record(Arm::canary, true, 10ms, before);  // the stale ones
  EXPECT_EQ(requests(ctl.status(), "canary"), 0u);
  ctl.record(Arm::canary, false, 10ms, ctl.epoch());  // split under the retried rollout
  EXPECT_EQ(requests(ctl.status(), "canary"), 1u);
  ctl.tick();
  EXPECT_EQ(ctl.status()["state"], "progressing") << ctl.status().dump();
}

TEST(ControllerReload, SameWindowKeepsTheHistory) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  for (int i = 0; i < 7; ++i) ctl.record(Arm::control, false, 10ms);
  cfg.rollout.analysis.min_requests = 500;  // other analysis keys change; the window does not
  cfg.rollout.analysis.interval = 5s;
  ctl.reconfigure(cfg);
  EXPECT_EQ(requests(ctl.status(), "control"), 7u);
  EXPECT_EQ(ctl.analysis_interval(), 5s);  // RolloutSync sizes the lease from it
  ctl.tick();
  EXPECT_EQ(ctl.status()["verdict"]["reason"], "insufficient data: 0 of 500 canary requests");
}

// I/O threads keep recording while reloads swap the windows back and forth:
// no crash, no lost swap, no data race (TSan: make test SANITIZE=thread).
TEST(ControllerReload, WindowSwapWhileRecordingFromOtherThreads) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> recorded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      while (!stop.load(std::memory_order_relaxed)) {
        ctl.record(t % 2 ? Arm::canary : Arm::control, false, 5ms);
        (void)ctl.take_fallback();
        recorded.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (int i = 0; i < 100; ++i) {
    cfg.rollout.analysis.window = i % 2 ? 30s : 2min;
    ctl.reconfigure(cfg);
    ctl.tick();
    (void)ctl.status();
    // Let the recorders get some samples into each generation of windows.
    const auto seen = recorded.load();
    while (recorded.load() < seen + 8) std::this_thread::yield();
  }
  stop = true;
  for (auto& th : threads) th.join();
  // The last reload (i = 99) set 30s; a fresh swap leaves exactly what is recorded after it.
  EXPECT_EQ(ctl.status()["window_seconds"].get<double>(), 30.0);
  cfg.rollout.analysis.window = 45s;
  ctl.reconfigure(cfg);
  for (int i = 0; i < 5; ++i) ctl.record(Arm::canary, false, 5ms);
  auto st = ctl.status();
  EXPECT_EQ(st["window_seconds"].get<double>(), 45.0);
  EXPECT_EQ(requests(st, "canary"), 5u);
  EXPECT_EQ(requests(st, "control"), 0u);
}

// The failures that caused a rollback are still in the window when the
// operator retries: judged again, they would abort the retried rollout at the
// next tick. A retry restarts the windows; a rollback keeps them (the status
// shows why).
TEST(ControllerRetry, RetryRestartsTheWindowsRollbackKeepsThem) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  for (int i = 0; i < 20; ++i) {
    ctl.record(Arm::control, false, 10ms);
    ctl.record(Arm::canary, true, 10ms);  // failing every call: critical at the first look
  }
  ctl.tick();
  auto st = ctl.status();
  ASSERT_EQ(st["state"], "aborted") << st.dump();
  EXPECT_EQ(requests(st, "canary"), 20u);  // kept: the status shows why
  EXPECT_EQ(st["arms"]["canary"]["errors"], 20);

  ctl.operate(RolloutController::Verb::retry);
  st = ctl.status();
  EXPECT_EQ(st["state"], "progressing");
  EXPECT_EQ(st["epoch"], 2);
  EXPECT_EQ(requests(st, "canary"), 0u);
  EXPECT_EQ(requests(st, "control"), 0u);
  ctl.tick();
  st = ctl.status();
  EXPECT_EQ(st["state"], "progressing") << st.dump();
  EXPECT_EQ(st["verdict"]["kind"], "inconclusive");
  // A manual abort (a new epoch into aborted) keeps the windows too.
  ctl.record(Arm::canary, false, 10ms);
  ctl.operate(RolloutController::Verb::abort);
  st = ctl.status();
  EXPECT_EQ(st["state"], "aborted");
  EXPECT_EQ(requests(st, "canary"), 1u);
}

// With Redis, another replica's retry reaches this one as a stored state: it
// must not roll the canary back again from its own stale window.
TEST(ControllerRetry, AdoptedRetryRestartsTheWindows) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  ctl.enable_shared([] {});
  auto stored = [&](rollout::State state, double weight, std::uint64_t version, std::uint64_t epoch) {
    rollout::Status s;
    s.state = state;
    s.weight = weight;
    s.steps = cfg.rollout.steps;
    s.since = "2026-01-01T00:00:00Z";
    s.reason = "by another replica";
    s.version = version;
    s.epoch = epoch;
    s.step_started_unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall().time_since_epoch()).count();
    return rollout::encode(s);
  };
  ASSERT_TRUE(ctl.shared_observed(stored(rollout::State::aborted, 0, 5, 1)));
  for (int i = 0; i < 20; ++i) ctl.record(Arm::canary, true, 10ms);
  // Another replica aborts again (same epoch family): nothing restarts.
  ASSERT_TRUE(ctl.shared_observed(stored(rollout::State::aborted, 0, 6, 1)));
  EXPECT_EQ(requests(ctl.status(), "canary"), 20u);
  // Another replica retried: epoch 2, progressing at 10%.
  ASSERT_TRUE(ctl.shared_observed(stored(rollout::State::progressing, 10, 7, 2)));
  EXPECT_EQ(ctl.status()["state"], "progressing");
  EXPECT_EQ(requests(ctl.status(), "canary"), 0u);
  ctl.tick();
  EXPECT_EQ(ctl.status()["state"], "progressing");
}

TEST(ControllerRoutes, OnlySplitRoutesAreJudged) {
  for (const char* p : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}) {
    EXPECT_TRUE(RolloutController::judged_route(p)) << p;
  }
  for (const char* p : {"/v1/models", "/v1/models/gpt-4.1", "/v1/files", "/v1/chat/completions/x", "/health"}) {
    EXPECT_FALSE(RolloutController::judged_route(p)) << p;
  }
}

// fallback.budget is a share of every request in the window, both arms, the
// failing one not included; then the floor (burst 10) and nothing more.
TEST(ControllerFallbackBudget, ShareOfBothArmsThenTheFloor) {
  auto cfg = make_config();
  ManualClock clock;
  RolloutController ctl(cfg, nullptr, clock);
  for (int i = 0; i < 10; ++i) {
    ctl.record(Arm::control, false, 10ms);
    ctl.record(Arm::canary, false, 10ms);
  }
  // 20 requests x 0.2 = 4 by the ratio (canary-only would give 2), then 10 floor tokens.
  int allowed = 0;
  while (ctl.take_fallback()) {
    ++allowed;
    ASSERT_LT(allowed, 100);
  }
  EXPECT_EQ(allowed, 4 + 10);
  // take_fallback counts a fallback, not a request: the windows did not grow.
  auto st = ctl.status();
  EXPECT_EQ(requests(st, "control") + requests(st, "canary"), 20u);
  // More requests in the window make room again: 60 more -> 80 x 0.2 = 16, so
  // two more fallbacks (14 and 15 < 16), then none.
  for (int i = 0; i < 60; ++i) ctl.record(Arm::control, false, 10ms);
  EXPECT_TRUE(ctl.take_fallback());
  EXPECT_TRUE(ctl.take_fallback());
  EXPECT_FALSE(ctl.take_fallback());
}

}  // namespace
}  // namespace canaryd::rollout
