// The judge v2 (issue 14) on synthetic traffic written into real Windows:
// each check's pass / fail / inconclusive, hysteresis, holds, restarts and
// the verdict's JSON. Time is a TimePoint moved by hand.
#include "rollout/judge.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "rollout/state_machine.hpp"

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;
using config::CheckId;

// One arm's traffic model.
struct Arm_ {
  double error_rate = 0.005;
  double median_seconds = 0.8;  // log-normal duration
  double sigma = 0.5;
  double ttfb_fraction = 0.3;  // TTFB = this x duration
  std::array<double, kQualitySignals> eligible{0.9, 0.9, 0.9, 0.1, 0.05};
  std::array<double, kQualitySignals> flagged{0.01, 0.001, 0.002, 0.001, 0.001};
};

class Traffic {
 public:
  explicit Traffic(std::uint64_t seed = 1) : rng_(seed) {}

  // `seconds` of traffic at `rate` req/s, `weight`% of users on the canary
  // (users drawn from a population of `users`), written at `now`.
  void run(Windows& w, TimePoint& now, double seconds, double rate, double weight, const Arm_& canary,
           const Arm_& control, int users = 5000, double canary_user_share = -1) {
    const double share = canary_user_share >= 0 ? canary_user_share : weight / 100;
    const int n = static_cast<int>(seconds * rate);
    const auto step = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate));
    std::uniform_int_distribution<int> pick(0, users - 1);
    for (int i = 0; i < n; ++i) {
      now += step;
      const int user = pick(rng_);
      // The user's arm: a fixed uniform draw per user against the share.
      const double u =
          static_cast<double>(mix(static_cast<std::uint64_t>(user) * 7919 + 17) >> 11) / 9007199254740992.0;
      const bool on_canary = u < share;
      const Arm_& a = on_canary ? canary : control;
      const Arm arm = on_canary ? Arm::canary : Arm::control;
      w.record_user(arm, mix(static_cast<std::uint64_t>(user)));
      Observation o;
      o.error = std::bernoulli_distribution(a.error_rate)(rng_);
      const double d = a.median_seconds * std::exp(a.sigma * normal_(rng_));
      o.duration = std::chrono::nanoseconds(static_cast<std::int64_t>(d * 1e9));
      if (with_ttfb) o.ttfb = std::chrono::nanoseconds(static_cast<std::int64_t>(d * a.ttfb_fraction * 1e9));
      if (!o.error) {
        for (std::size_t s = 0; s < kQualitySignals; ++s) {
          if (std::bernoulli_distribution(a.eligible[s])(rng_)) {
            o.quality.mark(static_cast<QualitySignal>(s), std::bernoulli_distribution(a.flagged[s])(rng_));
          }
        }
      }
      w.record(arm, now, o);
    }
  }

  bool with_ttfb = true;

  static std::uint64_t mix(std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

 private:
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_;
};

config::AnalysisConfig analysis() {
  config::AnalysisConfig a;
  a.window = 5min;
  a.interval = 10s;
  return a;
}

const CheckResult* find(const Verdict& v, CheckId id) {
  for (const auto& c : v.checks) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

TimePoint start() { return TimePoint{} + 100h; }

// Runs looks of 10 s until `looks` are done or the verdict is `stop`; returns the last.
Verdict run_looks(Judge& judge, Windows& w, TimePoint& now, Traffic& t, int looks, double rate, double weight,
                  const Arm_& canary, const Arm_& control, std::optional<Verdict::Kind> stop = std::nullopt,
                  double user_share = -1) {
  Verdict v;
  for (int i = 0; i < looks; ++i) {
    t.run(w, now, 10, rate, weight, canary, control, 5000, user_share);
    v = judge.look(w, now, {weight, true, true});
    if (stop && v.kind == *stop) return v;
  }
  return v;
}

TEST(Judge, HealthyCanaryPassesWithEveryCheckShown) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t;
  TimePoint now = start();
  Arm_ same;
  const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, same, same);
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  // Every enabled check but the p99 ceiling (off by default), in CheckId order.
  ASSERT_EQ(v.checks.size(), config::kCheckCount - 1);
  EXPECT_EQ(v.checks.front().id, CheckId::error_rate);
  EXPECT_EQ(v.checks.back().id, CheckId::response_json);
  for (const auto& c : v.checks) EXPECT_EQ(c.outcome, Outcome::pass) << c.detail;
  ASSERT_TRUE(v.srm);
  EXPECT_EQ(v.srm->outcome, Outcome::pass) << v.srm->detail;
  EXPECT_DOUBLE_EQ(v.alpha_per_check, 0.01 / 9);
  EXPECT_EQ(v.look, 12u);
  EXPECT_TRUE(v.hold.empty());
  const auto* d = find(v, CheckId::duration);
  EXPECT_NEAR(d->estimate, 1.0, 0.15);
  EXPECT_DOUBLE_EQ(d->bound, 1.25);
}

TEST(Judge, BelowMinRequestsIsInconclusiveAndCountsTowardsTheLimit) {
  auto cfg = analysis();
  cfg.inconclusive_limit = 3;
  Judge judge(cfg);
  Windows w(5min);
  Traffic t;
  TimePoint now = start();
  Arm_ same;
  // 1 req/s at 10%: one canary request a look.
  Verdict v = run_looks(judge, w, now, t, 2, 1, 10, same, same);
  EXPECT_EQ(v.kind, Verdict::Kind::inconclusive);
  EXPECT_EQ(v.reason.rfind("insufficient data: ", 0), 0u) << v.reason;
  EXPECT_EQ(v.inconclusive_looks, 2u);
  EXPECT_TRUE(v.hold.empty());
  v = run_looks(judge, w, now, t, 1, 1, 10, same, same);
  EXPECT_EQ(v.hold, "inconclusive");
  EXPECT_EQ(v.hold_reason.rfind("inconclusive for 3 looks: insufficient data", 0), 0u) << v.hold_reason;
  // Not progressing (paused): the streak does not grow.
  t.run(w, now, 10, 1, 10, same, same);
  v = judge.look(w, now, {10, false, true});
  EXPECT_EQ(v.inconclusive_looks, 0u);
  EXPECT_TRUE(v.hold.empty());
}

TEST(Judge, BadCanaryFailsAfterFailureLimitLooks) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(3);
  TimePoint now = start();
  Arm_ bad, good;
  bad.error_rate = 0.05;
  good.error_rate = 0.001;
  int first_failing = -1;
  Verdict v;
  for (int look = 1; look <= 60 && v.kind != Verdict::Kind::fail; ++look) {
    t.run(w, now, 10, 20, 10, bad, good);
    v = judge.look(w, now, {10, true, true});
    const auto* e = find(v, CheckId::error_rate);
    if (first_failing < 0 && e->outcome == Outcome::fail) {
      first_failing = look;
      EXPECT_EQ(v.kind, Verdict::Kind::inconclusive) << "acts only at failure_limit";
      EXPECT_NE(v.reason.find("error_rate failing (1 of 2 looks)"), std::string::npos) << v.reason;
    }
  }
  ASSERT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
  EXPECT_EQ(static_cast<int>(v.look), first_failing + 1);
  EXPECT_TRUE(v.error_rate_failed);
  EXPECT_FALSE(v.latency_failed);
  EXPECT_EQ(v.reason.rfind("canary error rate ", 0), 0u) << v.reason;
  EXPECT_NE(v.reason.find("significantly worse than control"), std::string::npos) << v.reason;
  EXPECT_LE(v.canary_requests, 400u);
}

TEST(Judge, ProviderWideIncidentIsNotTheCanarysFault) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(4);
  TimePoint now = start();
  Arm_ normal, outage;
  outage.error_rate = 0.10;
  Verdict v = run_looks(judge, w, now, t, 12, 20, 10, normal, normal);
  v = run_looks(judge, w, now, t, 30, 20, 10, outage, outage, Verdict::Kind::fail);
  EXPECT_NE(v.kind, Verdict::Kind::fail) << v.reason;
  const auto* e = find(v, CheckId::error_rate);
  EXPECT_EQ(e->outcome, Outcome::pass) << e->detail;
  EXPECT_NE(e->detail.find("but not significantly worse than control"), std::string::npos) << e->detail;
}

TEST(Judge, CriticalErrorRateFailsAtOnceUnlessControlIsAsBad) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(5);
  TimePoint now = start();
  Arm_ dead, good;
  dead.error_rate = 1.0;
  t.run(w, now, 10, 20, 10, dead, good);
  const Verdict v = judge.look(w, now, {10, true, true});
  ASSERT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
  const auto* c = find(v, CheckId::critical_error_rate);
  EXPECT_EQ(c->outcome, Outcome::fail);
  EXPECT_EQ(c->failure_limit, 1u);
  EXPECT_EQ(c->failing_looks, 1u);
  // The rollback reason the acceptance tests read.
  EXPECT_EQ(v.reason.rfind("canary error rate 100.00% above 1.00%", 0), 0u) << v.reason;

  Judge both(analysis());
  Windows w2(5min);
  t.run(w2, now, 10, 20, 10, dead, dead);
  const Verdict v2 = both.look(w2, now, {10, true, true});
  EXPECT_EQ(find(v2, CheckId::critical_error_rate)->outcome, Outcome::pass)
      << find(v2, CheckId::critical_error_rate)->detail;
  EXPECT_EQ(find(v2, CheckId::error_rate)->outcome, Outcome::pass);
}

TEST(Judge, WithoutControlTrafficTheErrorRateIsAbsolute) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(6);
  TimePoint now = start();
  Arm_ bad;
  bad.error_rate = 0.08;
  Verdict v = run_looks(judge, w, now, t, 6, 20, 100, bad, bad, Verdict::Kind::fail);
  EXPECT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
  EXPECT_NE(find(v, CheckId::error_rate)->detail.find("no control traffic in the window"), std::string::npos);
  // A canary at 0.5% at weight 100 passes.
  Judge ok(analysis());
  Windows w2(5min);
  Arm_ fine;
  v = run_looks(ok, w2, now, t, 12, 20, 100, fine, fine);
  EXPECT_EQ(find(v, CheckId::error_rate)->outcome, Outcome::pass);
  EXPECT_EQ(v.srm->outcome, Outcome::skipped);
}

TEST(Judge, LatencyIsJudgedAgainstControl) {
  Arm_ control, slow, slightly;
  slow.median_seconds = control.median_seconds * 1.5;
  slightly.median_seconds = control.median_seconds * 1.1;
  {
    Judge judge(analysis());
    Windows w(5min);
    Traffic t(7);
    TimePoint now = start();
    const Verdict v = run_looks(judge, w, now, t, 30, 20, 10, slow, control, Verdict::Kind::fail);
    ASSERT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
    EXPECT_TRUE(v.latency_failed);
    // Duration and TTFB are both 1.5x: whichever reaches its level first fails it.
    const auto* d = find(v, CheckId::duration);
    const auto* f = find(v, CheckId::ttfb);
    EXPECT_TRUE(d->outcome == Outcome::fail || f->outcome == Outcome::fail) << d->detail << " / " << f->detail;
    EXPECT_NEAR(d->estimate, 1.5, 0.2);
    EXPECT_NEAR(f->estimate, 1.5, 0.2);
  }
  {
    Judge judge(analysis());
    Windows w(5min);
    Traffic t(8);
    TimePoint now = start();
    const Verdict v = run_looks(judge, w, now, t, 30, 20, 10, slightly, control, Verdict::Kind::fail);
    EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
    EXPECT_EQ(find(v, CheckId::duration)->outcome, Outcome::pass);
  }
  {
    // A long-answer provider over an absolute ceiling: only the opt-in p99 check fails.
    auto cfg = analysis();
    cfg.max_p99_latency = 2s;
    Judge judge(cfg);
    Windows w(5min);
    Traffic t(9);
    TimePoint now = start();
    Arm_ long_answers;
    long_answers.median_seconds = 3;
    const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, long_answers, long_answers);
    EXPECT_EQ(find(v, CheckId::duration)->outcome, Outcome::pass);
    EXPECT_EQ(find(v, CheckId::p99_latency)->outcome, Outcome::fail);
  }
}

TEST(Judge, MissingTtfbIsInconclusiveNotAFailure) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(10);
  t.with_ttfb = false;
  TimePoint now = start();
  Arm_ same;
  const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, same, same);
  EXPECT_EQ(v.kind, Verdict::Kind::inconclusive) << v.reason;
  EXPECT_EQ(find(v, CheckId::ttfb)->outcome, Outcome::inconclusive);
  EXPECT_NE(v.reason.find("time to first byte: 0 canary and 0 control samples"), std::string::npos) << v.reason;
}

TEST(Judge, QualityChecksWithDryRunAndDirection) {
  Arm_ control, truncating;
  truncating.flagged[0] = 0.06;
  control.flagged[0] = 0.01;
  {
    Judge judge(analysis());
    Windows w(5min);
    Traffic t(11);
    TimePoint now = start();
    const Verdict v = run_looks(judge, w, now, t, 40, 20, 10, truncating, control, Verdict::Kind::fail);
    ASSERT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
    EXPECT_TRUE(v.quality_failed);
    EXPECT_EQ(find(v, CheckId::truncated)->outcome, Outcome::fail);
    ManualClock clock;
    Rollout r({{{10, 10min}}, {}, config::OnFailure::rollback, true}, clock);
    EXPECT_EQ(r.tick(v)->cause, "quality");
  }
  {
    auto cfg = analysis();
    cfg.check(CheckId::truncated).dry_run = true;
    Judge judge(cfg);
    Windows w(5min);
    Traffic t(11);
    TimePoint now = start();
    const Verdict v = run_looks(judge, w, now, t, 40, 20, 10, truncating, control, Verdict::Kind::fail);
    EXPECT_NE(v.kind, Verdict::Kind::fail) << v.reason;
    const auto* c = find(v, CheckId::truncated);
    EXPECT_EQ(c->outcome, Outcome::fail) << "judged and shown";
    EXPECT_FALSE(c->acting);
    EXPECT_TRUE(c->dry_run);
  }
  {
    // direction: decrease. The canary's share of (say) answers that used a
    // tool falls from 10% to 2%: flagged share falling is the failure.
    auto cfg = analysis();
    cfg.check(CheckId::empty).lower_is_worse = true;
    Judge judge(cfg);
    Windows w(5min);
    Traffic t(12);
    TimePoint now = start();
    Arm_ c = control, k = control;
    k.flagged[2] = 0.10;
    c.flagged[2] = 0.02;
    const Verdict v = run_looks(judge, w, now, t, 40, 20, 10, c, k, Verdict::Kind::fail);
    EXPECT_EQ(find(v, CheckId::empty)->outcome, Outcome::fail) << find(v, CheckId::empty)->detail;
    EXPECT_LT(find(v, CheckId::empty)->estimate, 1);
  }
}

TEST(Judge, NoAnswersOfAKindIsSkipped) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(13);
  TimePoint now = start();
  Arm_ embeddings;
  embeddings.eligible = {0, 0, 0, 0, 0};
  const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, embeddings, embeddings);
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_EQ(find(v, CheckId::tool_call_json)->outcome, Outcome::skipped);
}

TEST(Judge, SampleRatioMismatchHolds) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(14);
  TimePoint now = start();
  Arm_ same;
  Verdict v;
  int look = 0;
  for (; look < 60 && v.hold.empty(); ++look) {
    t.run(w, now, 10, 20, 10, same, same, 20000, 0.15);
    v = judge.look(w, now, {10, true, true});
  }
  ASSERT_EQ(v.hold, "srm") << v.reason;
  EXPECT_EQ(v.srm->outcome, Outcome::fail);
  EXPECT_EQ(v.kind, Verdict::Kind::inconclusive);
  EXPECT_EQ(v.hold_reason.rfind("sample ratio mismatch: canary 1", 0), 0u) << v.hold_reason;
  // The state machine pauses with the reason.
  ManualClock clock;
  Rollout r({{{10, 10min}, {25, 0ms}}, {}, config::OnFailure::rollback, true}, clock);
  const auto tr = r.tick(v);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->to, State::paused);
  EXPECT_EQ(tr->cause, "srm");
  EXPECT_EQ(r.status().reason, "paused by analysis: " + v.hold_reason);
  EXPECT_EQ(r.weight(), 10);

  // A new weight restarts the counts; a lowered one (pins) switches the check off.
  v = judge.look(w, now, {25, true, true});
  EXPECT_EQ(v.srm->canary_users + v.srm->control_users, 0u);
  v = judge.look(w, now, {10, true, true});
  EXPECT_EQ(v.srm->outcome, Outcome::skipped);
  EXPECT_NE(v.srm->detail.find("lowered"), std::string::npos);
}

TEST(Judge, ANewWindowsRestartsEverything) {
  Judge judge(analysis());
  auto w = std::make_unique<Windows>(5min);
  Traffic t(15);
  TimePoint now = start();
  Arm_ dead, good;
  dead.error_rate = 1;
  t.run(*w, now, 10, 20, 10, dead, good);
  EXPECT_EQ(judge.look(*w, now, {10, true, true}).kind, Verdict::Kind::fail);
  auto w2 = std::make_unique<Windows>(5min);
  const Verdict v = judge.look(*w2, now, {10, true, true});
  EXPECT_EQ(v.look, 1u);
  EXPECT_EQ(v.kind, Verdict::Kind::inconclusive);
  EXPECT_EQ(find(v, CheckId::critical_error_rate)->failing_looks, 0u);
}

TEST(Judge, DisabledChecksAreLeftOutAndSpendNoAlpha) {
  auto cfg = analysis();
  for (auto id : {CheckId::truncated, CheckId::content_filter, CheckId::empty, CheckId::tool_call_json,
                  CheckId::response_json, CheckId::ttfb}) {
    cfg.check(id).enabled = false;
  }
  cfg.srm.enabled = false;
  Judge judge(cfg);
  EXPECT_DOUBLE_EQ(judge.alpha_per_check(), 0.01 / 3);
  Windows w(5min);
  Traffic t(16);
  t.with_ttfb = false;
  TimePoint now = start();
  Arm_ same;
  const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, same, same);
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_EQ(v.checks.size(), 3u);
  EXPECT_FALSE(v.srm);
}

TEST(Judge, VerdictJsonRoundTrips) {
  Judge judge(analysis());
  Windows w(5min);
  Traffic t(17);
  TimePoint now = start();
  Arm_ same;
  const Verdict v = run_looks(judge, w, now, t, 12, 20, 10, same, same);
  const nlohmann::json j = to_json(v);
  EXPECT_EQ(j["kind"], "pass");
  EXPECT_EQ(j["checks"].size(), v.checks.size());
  EXPECT_EQ(j["checks"][0]["name"], "error_rate");
  EXPECT_EQ(j["checks"][0]["outcome"], "pass");
  EXPECT_TRUE(j["hold"].is_null());
  EXPECT_EQ(j["srm"]["outcome"], "pass");
  Verdict back;
  ASSERT_TRUE(verdict_from_json(j, back));
  EXPECT_EQ(to_json(back), j);
  // The name before issue 14 still reads.
  nlohmann::json old = {{"kind", "insufficient"}, {"reason", "x"}};
  ASSERT_TRUE(verdict_from_json(old, back));
  EXPECT_EQ(back.kind, Verdict::Kind::inconclusive);
  EXPECT_FALSE(verdict_from_json(nlohmann::json{{"kind", "maybe"}}, back));
}

}  // namespace
}  // namespace canaryd::rollout
