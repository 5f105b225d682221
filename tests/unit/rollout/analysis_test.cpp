#include "rollout/analysis.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

Snapshot snap(std::uint64_t requests, std::uint64_t errors, std::chrono::nanoseconds p99 = 200ms) {
  Snapshot s;
  s.requests = requests;
  s.errors = errors;
  s.error_rate = requests ? static_cast<double>(errors) / static_cast<double>(requests) : 0;
  s.p50 = p99 / 2;
  s.p99 = p99;
  return s;
}

config::AnalysisConfig cfg(bool relative = true) {
  config::AnalysisConfig c;
  c.min_requests = 100;
  c.max_error_rate = 0.01;
  c.max_p99_latency = 1000ms;
  c.relative_to_control = relative;
  return c;
}

// Reference values from python:
//   p = (e1+e2)/(n1+n2); z = (e1/n1 - e2/n2) / sqrt(p*(1-p)*(1/n1+1/n2))
TEST(TwoProportionZ, MatchesHandComputedValues) {
  EXPECT_NEAR(two_proportion_z(30, 1000, 10, 1000), 3.1943828249996993, 1e-12);
  EXPECT_NEAR(two_proportion_z(25, 1000, 22, 1000), 0.44282915061342065, 1e-12);
  EXPECT_NEAR(two_proportion_z(5, 200, 50, 10000), 3.824174567805503, 1e-12);
  EXPECT_NEAR(two_proportion_z(12, 500, 8, 500), 0.9035079029052513, 1e-12);
  EXPECT_NEAR(two_proportion_z(10, 1000, 30, 1000), -3.1943828249996993, 1e-12);
}

TEST(TwoProportionZ, DegenerateCases) {
  EXPECT_EQ(two_proportion_z(0, 100, 0, 100), 0);      // pooled p = 0
  EXPECT_EQ(two_proportion_z(100, 100, 50, 50), 0);    // pooled p = 1
  EXPECT_EQ(two_proportion_z(5, 100, 0, 0), 0);        // no control
  EXPECT_EQ(two_proportion_z(0, 0, 5, 100), 0);
}

TEST(Analyse, InsufficientBelowMinRequests) {
  auto v = analyse(cfg(), snap(1000, 0), snap(99, 50, 5s));
  EXPECT_EQ(v.kind, Verdict::Kind::inconclusive);
  EXPECT_EQ(v.reason, "insufficient data: 99 of 100 canary requests");
  EXPECT_EQ(v.canary_requests, 99u);
}

TEST(Analyse, PassWhenHealthy) {
  auto v = analyse(cfg(), snap(1000, 5), snap(200, 1));
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_DOUBLE_EQ(v.canary_error_rate, 0.005);
  EXPECT_DOUBLE_EQ(v.control_error_rate, 0.005);
  EXPECT_DOUBLE_EQ(v.canary_p99_seconds, 0.2);
}

TEST(Analyse, FailByAbsoluteRateWithoutRelative) {
  auto v = analyse(cfg(false), snap(1000, 25), snap(1000, 25));
  EXPECT_EQ(v.kind, Verdict::Kind::fail);
  EXPECT_TRUE(v.error_rate_failed);
  EXPECT_FALSE(v.latency_failed);
  EXPECT_NE(v.reason.find("2.50%"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("1.00%"), std::string::npos) << v.reason;
}

TEST(Analyse, NotFailingWhenControlIsAsBad) {
  auto v = analyse(cfg(true), snap(1000, 22), snap(1000, 25));
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_NEAR(v.z, 0.44282915061342065, 1e-12);
  EXPECT_NE(v.reason.find("not significantly worse"), std::string::npos) << v.reason;
}

TEST(Analyse, FailingWhenSignificantlyWorse) {
  auto v = analyse(cfg(true), snap(1000, 10), snap(1000, 30));
  EXPECT_EQ(v.kind, Verdict::Kind::fail);
  EXPECT_NEAR(v.z, 3.1943828249996993, 1e-12);
  EXPECT_NE(v.reason.find("significantly worse than control 1.00%"), std::string::npos) << v.reason;
}

TEST(Analyse, JustAboveCriticalZFails_JustBelowPasses) {
  // 12/500 vs 8/500 is z = 0.90 < 1.645: not significant.
  EXPECT_EQ(analyse(cfg(), snap(500, 8), snap(500, 12)).kind, Verdict::Kind::pass);
  // 5/200 vs 50/10000 is z = 3.82: significant.
  EXPECT_EQ(analyse(cfg(), snap(10000, 50), snap(200, 5)).kind, Verdict::Kind::fail);
}

// Pins the one-sided 95% threshold (z > 1.645), not the two-sided 1.96.
TEST(Analyse, OneSidedThresholdBetween1645And196Fails) {
  EXPECT_DOUBLE_EQ(kZCritical, 1.645);
  // 30/1000 (3.0%) vs 18/1000 (1.8%): z = 1.7532 (python), which a two-sided
  // test at 1.96 would let pass.
  auto v = analyse(cfg(), snap(1000, 18), snap(1000, 30));
  EXPECT_NEAR(v.z, 1.7532171832956915, 1e-12);
  EXPECT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
  EXPECT_TRUE(v.error_rate_failed);
  EXPECT_NE(v.reason.find("(z=1.75)"), std::string::npos) << v.reason;
  // One more control error: 30/1000 vs 19/1000 is z = 1.5910 < 1.645: passes.
  v = analyse(cfg(), snap(1000, 19), snap(1000, 30));
  EXPECT_NEAR(v.z, 1.5910396702449705, 1e-12);
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_FALSE(v.error_rate_failed);
}

// A canary above max_error_rate but far better than control (negative z): the
// test is one-sided, so "different from control" is not "worse than control".
TEST(Analyse, CanaryAboveMaxButControlMuchWorsePasses) {
  // 20/1000 (2.0%) vs 60/1000 (6.0%): z = -4.5644 (python).
  auto v = analyse(cfg(), snap(1000, 60), snap(1000, 20));
  EXPECT_NEAR(v.z, -4.564354645876383, 1e-12);
  EXPECT_EQ(v.kind, Verdict::Kind::pass) << v.reason;
  EXPECT_FALSE(v.error_rate_failed);
  EXPECT_NE(v.reason.find("not significantly worse than control 6.00%"), std::string::npos) << v.reason;
}

TEST(Analyse, RelativeWithoutControlTrafficIsAbsolute) {
  auto v = analyse(cfg(true), snap(0, 0), snap(200, 10));
  EXPECT_EQ(v.kind, Verdict::Kind::fail) << v.reason;
  EXPECT_EQ(v.z, 0);
}

TEST(Analyse, P99Fail) {
  auto v = analyse(cfg(), snap(1000, 0), snap(200, 0, 1500ms));
  EXPECT_EQ(v.kind, Verdict::Kind::fail);
  EXPECT_TRUE(v.latency_failed);
  EXPECT_FALSE(v.error_rate_failed);
  EXPECT_NE(v.reason.find("p99 latency 1.5s above 1s"), std::string::npos) << v.reason;
}

TEST(Analyse, BothFailuresNamed) {
  auto v = analyse(cfg(false), snap(1000, 0), snap(200, 10, 2s));
  EXPECT_EQ(v.kind, Verdict::Kind::fail);
  EXPECT_TRUE(v.latency_failed);
  EXPECT_TRUE(v.error_rate_failed);
  EXPECT_NE(v.reason.find("; "), std::string::npos) << v.reason;
}

TEST(Analyse, VerdictJson) {
  auto j = to_json(analyse(cfg(), snap(1000, 10), snap(1000, 30)));
  EXPECT_EQ(j["kind"], "fail");
  EXPECT_EQ(j["canary_requests"], 1000);
  EXPECT_DOUBLE_EQ(j["canary_error_rate"].get<double>(), 0.03);
}

}  // namespace
}  // namespace canaryd::rollout
