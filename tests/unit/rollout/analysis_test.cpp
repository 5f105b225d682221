#include "rollout/analysis.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

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
  EXPECT_EQ(two_proportion_z(0, 100, 0, 100), 0);    // pooled p = 0
  EXPECT_EQ(two_proportion_z(100, 100, 50, 50), 0);  // pooled p = 1
  EXPECT_EQ(two_proportion_z(5, 100, 0, 0), 0);      // no control
  EXPECT_EQ(two_proportion_z(0, 0, 5, 100), 0);
}

// The verdict's JSON keeps the first judge's fields (dashboards and scripts
// read them) and adds the judge v2's; a number that is not set is null.
TEST(VerdictJson, FieldsAndNulls) {
  Verdict v;
  v.kind = Verdict::Kind::fail;
  v.reason = "canary error rate 3.00% above 1.00%";
  v.canary_requests = 1000;
  v.canary_error_rate = 0.03;
  v.error_rate_failed = true;
  CheckResult c;
  c.id = config::CheckId::duration;
  c.outcome = Outcome::inconclusive;
  c.canary = 0.8;  // control, estimate ... left unset
  v.checks.push_back(c);
  const auto j = to_json(v);
  EXPECT_EQ(j["kind"], "fail");
  EXPECT_EQ(j["canary_requests"], 1000);
  EXPECT_DOUBLE_EQ(j["canary_error_rate"].get<double>(), 0.03);
  EXPECT_TRUE(j["error_rate_failed"].get<bool>());
  EXPECT_FALSE(j["quality_failed"].get<bool>());
  EXPECT_EQ(j["checks"][0]["name"], "duration");
  EXPECT_EQ(j["checks"][0]["outcome"], "inconclusive");
  EXPECT_DOUBLE_EQ(j["checks"][0]["canary"].get<double>(), 0.8);
  EXPECT_TRUE(j["checks"][0]["control"].is_null());
  EXPECT_TRUE(j["srm"].is_null());
  EXPECT_TRUE(j["hold"].is_null());
}

TEST(VerdictJson, OutcomeNames) {
  for (auto o : {Outcome::pass, Outcome::fail, Outcome::inconclusive, Outcome::skipped}) {
    EXPECT_EQ(parse_outcome(outcome_name(o)), o);
  }
  EXPECT_FALSE(parse_outcome("maybe"));
  Verdict::Kind k;
  ASSERT_TRUE(parse_verdict_kind("insufficient", k));
  EXPECT_EQ(k, Verdict::Kind::inconclusive);
}

}  // namespace
}  // namespace canaryd::rollout
