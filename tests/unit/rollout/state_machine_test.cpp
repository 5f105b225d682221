#include "rollout/state_machine.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

config::RolloutConfig spec_config() {
  config::RolloutConfig c;
  c.steps = {{10, 10min}, {25, 15min}, {50, 30min}, {100, 0ms}};
  return c;
}

Verdict verdict(Verdict::Kind kind, std::string reason = "") {
  Verdict v;
  v.kind = kind;
  v.reason = std::move(reason);
  if (kind == Verdict::Kind::fail) v.error_rate_failed = true;
  return v;
}
const Verdict kPass = verdict(Verdict::Kind::pass, "ok");
const Verdict kInsufficient = verdict(Verdict::Kind::inconclusive, "insufficient data: 3 of 100 canary requests");
const Verdict kFail = verdict(Verdict::Kind::fail, "canary error rate 3.00% above 1.00%");

TEST(Rollout, InitialState) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  EXPECT_EQ(r.state(), State::progressing);
  EXPECT_EQ(r.step(), 0u);
  EXPECT_EQ(r.weight(), 10);
  EXPECT_EQ(r.epoch(), 0u);
  EXPECT_EQ(r.status().since, rfc3339(clock.wall()));
}

TEST(Rollout, WalksEveryStepToPromoted) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  const std::chrono::minutes pauses[] = {10min, 15min, 30min};
  const double next[] = {25, 50, 100};
  for (int i = 0; i < 3; ++i) {
    clock.advance(pauses[i] - 10s);
    EXPECT_FALSE(r.tick(kPass)) << "advanced before the pause of step " << i << " ended";
    clock.advance(10s);
    auto t = r.tick(kPass);
    ASSERT_TRUE(t) << "step " << i;
    EXPECT_EQ(t->from, State::progressing);
    EXPECT_EQ(t->to, State::progressing);
    EXPECT_EQ(t->step, static_cast<std::size_t>(i + 1));
    EXPECT_EQ(t->weight, next[i]);
    EXPECT_EQ(r.weight(), next[i]);
  }
  // Last step, no pause: the next passing tick promotes.
  auto t = r.tick(kPass);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::promoted);
  EXPECT_EQ(r.state(), State::promoted);
  EXPECT_EQ(r.weight(), 100);
  EXPECT_EQ(r.step(), 3u);
  EXPECT_FALSE(r.tick(kPass));
  EXPECT_FALSE(r.tick(kFail));  // promoted is final for the analysis
  EXPECT_EQ(r.version(), 4u);
  EXPECT_EQ(r.epoch(), 0u);
}

TEST(Rollout, NoAdvanceOnInsufficient) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  clock.advance(2h);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(r.tick(kInsufficient));
  EXPECT_EQ(r.step(), 0u);
  EXPECT_EQ(r.status().verdict->kind, Verdict::Kind::inconclusive);
  EXPECT_TRUE(r.tick(kPass));  // the pause is long over; the first pass advances
  EXPECT_EQ(r.weight(), 25);
}

TEST(Rollout, ZeroPauseStepAdvancesAtNextPassingTick) {
  ManualClock clock;
  config::RolloutConfig c;
  c.steps = {{5, 0ms}, {50, 1min}};
  Rollout r(c, clock);
  auto t = r.tick(kPass);
  ASSERT_TRUE(t);
  EXPECT_EQ(r.weight(), 50);
  EXPECT_FALSE(r.tick(kPass));
}

TEST(Rollout, NoAdvanceWithoutAutoPromote) {
  ManualClock clock;
  auto c = spec_config();
  c.auto_promote = false;
  Rollout r(c, clock);
  clock.advance(1h);
  EXPECT_FALSE(r.tick(kPass));
  EXPECT_TRUE(r.promote());
  EXPECT_EQ(r.weight(), 25);
}

TEST(Rollout, RollbackOnFail) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  clock.advance(10min);
  ASSERT_TRUE(r.tick(kPass));
  clock.advance(1min);
  auto t = r.tick(kFail);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->from, State::progressing);
  EXPECT_EQ(t->to, State::aborted);
  EXPECT_EQ(t->weight, 0);
  EXPECT_EQ(t->cause, "error_rate");
  EXPECT_NE(t->reason.find("3.00% above 1.00%"), std::string::npos);
  EXPECT_EQ(r.state(), State::aborted);
  EXPECT_EQ(r.weight(), 0);
  EXPECT_EQ(r.epoch(), 1u);
  EXPECT_EQ(r.status().reason, t->reason);
  EXPECT_EQ(r.status().since, rfc3339(clock.wall()));
  // Aborted stays aborted whatever the verdicts.
  EXPECT_FALSE(r.tick(kPass));
  EXPECT_FALSE(r.tick(kFail));
}

TEST(Rollout, OnFailurePause) {
  ManualClock clock;
  auto c = spec_config();
  c.on_failure = config::OnFailure::pause;
  Rollout r(c, clock);
  auto t = r.tick(kFail);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::paused);
  EXPECT_EQ(r.weight(), 10);
  EXPECT_EQ(r.epoch(), 0u);
  EXPECT_FALSE(r.tick(kFail));
  clock.advance(1h);
  EXPECT_FALSE(r.tick(kPass));  // paused: no advance
  ASSERT_TRUE(r.resume());
  EXPECT_FALSE(r.tick(kPass));  // the pause timer restarted at resume
  clock.advance(10min);
  EXPECT_TRUE(r.tick(kPass));
  EXPECT_EQ(r.weight(), 25);
}

TEST(Rollout, PausedCanaryWithTrafficIsStillRolledBack) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  ASSERT_TRUE(r.pause());
  auto t = r.tick(kFail);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::aborted);
  EXPECT_EQ(r.weight(), 0);
}

TEST(Rollout, ManualPauseResume) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  auto t = r.pause();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::paused);
  EXPECT_EQ(r.status().reason, "paused by operator");
  EXPECT_FALSE(r.pause());
  clock.advance(20min);
  EXPECT_FALSE(r.tick(kPass));
  ASSERT_TRUE(r.resume());
  EXPECT_EQ(r.state(), State::progressing);
  EXPECT_FALSE(r.resume());
  clock.advance(9min);
  EXPECT_FALSE(r.tick(kPass));
  clock.advance(1min);
  EXPECT_TRUE(r.tick(kPass));
}

TEST(Rollout, ManualPromote) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  ASSERT_TRUE(r.promote());
  EXPECT_EQ(r.weight(), 25);
  ASSERT_TRUE(r.pause());
  ASSERT_TRUE(r.promote());  // from paused too; continues progressing
  EXPECT_EQ(r.state(), State::progressing);
  EXPECT_EQ(r.weight(), 50);
  ASSERT_TRUE(r.promote());
  EXPECT_EQ(r.weight(), 100);
  auto t = r.promote();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::promoted);
  EXPECT_FALSE(r.promote());
}

TEST(Rollout, AbortAndRetry) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  ASSERT_TRUE(r.promote());
  EXPECT_FALSE(r.retry());  // only from aborted
  auto t = r.abort("operator said so");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->cause, "manual");
  EXPECT_EQ(r.state(), State::aborted);
  EXPECT_EQ(r.weight(), 0);
  EXPECT_EQ(r.epoch(), 1u);
  EXPECT_EQ(r.status().reason, "operator said so");
  EXPECT_FALSE(r.abort("again"));
  EXPECT_FALSE(r.resume());
  EXPECT_FALSE(r.promote());
  t = r.retry();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->to, State::progressing);
  EXPECT_EQ(r.step(), 0u);
  EXPECT_EQ(r.weight(), 10);
  EXPECT_EQ(r.epoch(), 2u);
  EXPECT_FALSE(r.tick(kPass));  // the step timer restarted at retry
}

TEST(Rollout, SetWeight) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  auto bad = r.set_weight(101);
  EXPECT_FALSE(bad.error.empty());
  EXPECT_FALSE(bad.transition);
  EXPECT_FALSE(r.set_weight(-1).error.empty());
  EXPECT_FALSE(r.set_weight(12.345).error.empty());
  EXPECT_FALSE(r.set_weight(std::nan("")).error.empty());
  EXPECT_EQ(r.weight(), 10);
  EXPECT_EQ(r.state(), State::progressing);

  auto ok = r.set_weight(33.33);
  EXPECT_TRUE(ok.error.empty());
  ASSERT_TRUE(ok.transition);
  EXPECT_EQ(r.state(), State::paused);
  EXPECT_DOUBLE_EQ(r.weight(), 33.33);
  EXPECT_EQ(r.status().reason, "weight set to 33.33 by operator");
  EXPECT_EQ(r.epoch(), 0u);  // pins survive a weight change
  EXPECT_FALSE(r.set_weight(33.33).transition);
  clock.advance(1h);
  EXPECT_FALSE(r.tick(kPass));  // the engine leaves a hand-set weight alone
  // Resume continues from the last step at or below the hand-set weight (25).
  ASSERT_TRUE(r.resume());
  EXPECT_EQ(r.step(), 1u);
  EXPECT_DOUBLE_EQ(r.weight(), 33.33);
  ASSERT_TRUE(r.promote());
  EXPECT_EQ(r.weight(), 50);
}

TEST(Rollout, SetWeightZeroIsARollbackForPins) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  ASSERT_TRUE(r.set_weight(30).transition);
  EXPECT_EQ(r.epoch(), 0u);
  clock.advance(5min);
  // Weight 0 by hand: pins of the old epoch must not come back at weight 1.
  auto zero = r.set_weight(0);
  ASSERT_TRUE(zero.transition);
  EXPECT_EQ(zero.transition->weight, 0);
  EXPECT_EQ(r.state(), State::paused);
  EXPECT_EQ(r.epoch(), 1u);
  EXPECT_EQ(r.status().epoch, 1u);
  EXPECT_FALSE(r.set_weight(0).transition);  // already there: no change, no new epoch
  EXPECT_EQ(r.epoch(), 1u);
  ASSERT_TRUE(r.set_weight(1).transition);  // raising again keeps the new epoch
  EXPECT_EQ(r.epoch(), 1u);
  // The epoch travels with the shared state (encode/decode), as an abort's does.
  auto decoded = decode(encode(r.status()));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->epoch, 1u);
  Rollout other(spec_config(), clock);
  other.restore(*decoded);
  EXPECT_EQ(other.epoch(), 1u);
}

TEST(Rollout, SetWeightFromAborted) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  r.abort("x");
  ASSERT_TRUE(r.set_weight(5).transition);
  EXPECT_EQ(r.state(), State::paused);
  EXPECT_EQ(r.weight(), 5);
  EXPECT_EQ(r.epoch(), 1u);
}

TEST(Rollout, NoSteps) {
  ManualClock clock;
  Rollout r(config::RolloutConfig{}, clock);
  EXPECT_EQ(r.state(), State::paused);
  EXPECT_EQ(r.weight(), 0);
  clock.advance(1h);
  EXPECT_FALSE(r.tick(kPass));
  EXPECT_FALSE(r.tick(kFail));  // nothing on the canary
  EXPECT_FALSE(r.promote());
  EXPECT_FALSE(r.resume());
  ASSERT_TRUE(r.set_weight(20).transition);
  EXPECT_EQ(r.weight(), 20);
  ASSERT_TRUE(r.abort("stop"));
  EXPECT_EQ(r.weight(), 0);
  ASSERT_TRUE(r.retry());
  EXPECT_EQ(r.state(), State::paused);
  EXPECT_EQ(r.weight(), 0);
  EXPECT_EQ(r.epoch(), 2u);
}

TEST(Rollout, VersionCountsTransitionsOnly) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  const auto v0 = r.version();
  r.tick(kInsufficient);
  EXPECT_EQ(r.version(), v0);
  r.pause();
  EXPECT_EQ(r.version(), v0 + 1);
  r.pause();  // no-op
  EXPECT_EQ(r.version(), v0 + 1);
}

TEST(Status, JsonShape) {
  ManualClock clock;
  Rollout r(spec_config(), clock);
  auto j = to_json(r.status());
  EXPECT_EQ(j["state"], "progressing");
  EXPECT_EQ(j["step"], 0);
  EXPECT_EQ(j["weight"].dump(), "10");
  ASSERT_EQ(j["steps"].size(), 4u);
  EXPECT_EQ(j["steps"][0]["pause"], "10m");
  EXPECT_EQ(j["steps"][3]["pause"], "0");
  EXPECT_EQ(j["steps"][2]["weight"].dump(), "50");
  EXPECT_TRUE(j["verdict"].is_null());
  EXPECT_EQ(j["since"], rfc3339(clock.wall()));
  EXPECT_EQ(j["version"], 0);
  EXPECT_EQ(j["epoch"], 0);
  r.tick(kInsufficient);
  j = to_json(r.status());
  EXPECT_EQ(j["verdict"]["kind"], "inconclusive");
  r.set_weight(12.5);
  EXPECT_EQ(to_json(r.status())["weight"].dump(), "12.5");
}

TEST(Status, EncodeDecodeRoundTrip) {
  ManualClock clock;
  auto c = spec_config();
  c.steps[1].pause = 1500ms;
  Rollout r(c, clock);
  clock.advance(10min);
  r.tick(kPass);
  r.tick(kFail);
  const Status before = r.status();
  const std::string text = encode(before);
  auto after = decode(text);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->state, before.state);
  EXPECT_EQ(after->step, before.step);
  EXPECT_EQ(after->weight, before.weight);
  ASSERT_EQ(after->steps.size(), before.steps.size());
  for (std::size_t i = 0; i < before.steps.size(); ++i) {
    EXPECT_EQ(after->steps[i].weight, before.steps[i].weight);
    EXPECT_EQ(after->steps[i].pause, before.steps[i].pause);
  }
  EXPECT_EQ(after->since, before.since);
  EXPECT_EQ(after->reason, before.reason);
  ASSERT_TRUE(after->verdict);
  EXPECT_EQ(after->verdict->kind, Verdict::Kind::fail);
  EXPECT_EQ(after->verdict->reason, before.verdict->reason);
  EXPECT_TRUE(after->verdict->error_rate_failed);
  EXPECT_EQ(after->version, before.version);
  EXPECT_EQ(after->epoch, before.epoch);
  EXPECT_EQ(after->step_started_unix_ms, before.step_started_unix_ms);
  EXPECT_EQ(encode(*after), text);
}

TEST(Status, DecodeRejectsGarbage) {
  EXPECT_FALSE(decode(""));
  EXPECT_FALSE(decode("not json"));
  EXPECT_FALSE(decode("[]"));
  EXPECT_FALSE(decode(R"({"state":"progressing"})"));
  EXPECT_FALSE(decode(
      R"({"state":"flying","step":0,"weight":1,"steps":[],"since":"","reason":"","verdict":null,"version":1,"epoch":0})"));
  EXPECT_FALSE(decode(
      R"({"state":"paused","step":"x","weight":1,"steps":[],"since":"","reason":"","verdict":null,"version":1,"epoch":0})"));
  EXPECT_TRUE(decode(
      R"({"state":"paused","step":0,"weight":1,"steps":[],"since":"","reason":"","verdict":null,"version":1,"epoch":0})"));
}

TEST(Status, RestoreCarriesStepTimer) {
  ManualClock clock;
  Rollout a(spec_config(), clock);
  clock.advance(7min);
  auto s = decode(encode(a.status()));
  ASSERT_TRUE(s);

  Rollout b(spec_config(), clock);  // another replica, fresh step timer
  b.restore(*s);
  EXPECT_EQ(b.status().version, a.status().version);
  clock.advance(2min);
  EXPECT_FALSE(b.tick(kPass));  // 9 of 10 minutes
  clock.advance(1min);
  EXPECT_TRUE(b.tick(kPass));  // 10 minutes since the step began on replica a
}

TEST(Status, RestoreAdoptsStateAndEpoch) {
  ManualClock clock;
  Rollout a(spec_config(), clock);
  a.tick(kFail);
  Rollout b(spec_config(), clock);
  b.restore(a.status());
  EXPECT_EQ(b.state(), State::aborted);
  EXPECT_EQ(b.weight(), 0);
  EXPECT_EQ(b.epoch(), 1u);
  EXPECT_TRUE(b.retry());
  EXPECT_EQ(b.epoch(), 2u);
}

TEST(StateNames, RoundTrip) {
  for (State s : kAllStates) EXPECT_EQ(parse_state(state_name(s)), s);
  EXPECT_FALSE(parse_state("bogus"));
}

}  // namespace
}  // namespace canaryd::rollout
