// Tests for `canaryd ctl`'s human-readable renderings of the admin API's JSON
// (SPEC §6 shape).
#include "ctl/ctl.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace canaryd::ctl {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

nlohmann::json sample_status() {
  return nlohmann::json::parse(R"({
    "state": "progressing", "step": 1, "weight": 25,
    "steps": [{"weight": 10, "pause": "10m"}, {"weight": 25, "pause": "15m"},
              {"weight": 50, "pause": "30m"}, {"weight": 100, "pause": "0s"}],
    "since": "2026-11-02T10:00:00Z", "reason": "",
    "verdict": {"kind": "pass", "reason": "error rate 0.10% vs 0.20%", "canary_error_rate": 0.001,
                "control_error_rate": 0.002, "z": -1.2, "canary_p99_seconds": 0.85,
                "canary_requests": 640, "control_requests": 1920,
                "error_rate_failed": false, "latency_failed": false},
    "version": 7, "epoch": 1,
    "arms": {
      "control": {"requests": 1920, "errors": 4, "error_rate": 0.0020833, "p50_seconds": 0.31,
                  "p99_seconds": 1.25, "covered_seconds": 300},
      "canary": {"requests": 640, "errors": 1, "error_rate": 0.0016, "p50_seconds": 0.22,
                 "p99_seconds": 0.85, "covered_seconds": 300}
    }
  })");
}

TEST(RenderStatus, ShowsStateWeightStepsAndArms) {
  std::string out = render_status(sample_status());
  EXPECT_THAT(out, HasSubstr("State:    progressing"));
  EXPECT_THAT(out, HasSubstr("Weight:   25% of users on the canary"));
  EXPECT_THAT(out, HasSubstr("Step:     1"));
  EXPECT_THAT(out, HasSubstr("10% -> [25%] -> 50% -> 100%"));
  EXPECT_THAT(out, HasSubstr("Since:    2026-11-02T10:00:00Z"));
  EXPECT_THAT(out, HasSubstr("Verdict:  pass (error rate 0.10% vs 0.20%)"));
  EXPECT_THAT(out, Not(HasSubstr("Reason:")));  // empty reason: no line

  EXPECT_THAT(out, HasSubstr("ARM"));
  // One row per arm, control first, with requests, error rate, p50, p99.
  auto control = out.find("  control   1920");
  auto canary = out.find("  canary    640");
  ASSERT_NE(control, std::string::npos) << out;
  ASSERT_NE(canary, std::string::npos) << out;
  EXPECT_LT(control, canary);
  std::string control_row = out.substr(control, out.find('\n', control) - control);
  EXPECT_THAT(control_row, HasSubstr("0.21%"));
  EXPECT_THAT(control_row, HasSubstr("310ms"));
  EXPECT_THAT(control_row, HasSubstr("1.25s"));
  std::string canary_row = out.substr(canary, out.find('\n', canary) - canary);
  EXPECT_THAT(canary_row, HasSubstr("0.16%"));
  EXPECT_THAT(canary_row, HasSubstr("220ms"));
  EXPECT_THAT(canary_row, HasSubstr("850ms"));
}

TEST(RenderStatus, AbortedWithReasonAndFractionalWeight) {
  auto s = sample_status();
  s["state"] = "aborted";
  s["weight"] = 0;
  s["step"] = 0;
  s["reason"] = "error_rate: canary 5.00% over 200 requests";
  s["steps"][0]["weight"] = 12.5;
  std::string out = render_status(s);
  EXPECT_THAT(out, HasSubstr("State:    aborted"));
  EXPECT_THAT(out, HasSubstr("Weight:   0% of users"));
  EXPECT_THAT(out, HasSubstr("Reason:   error_rate: canary 5.00% over 200 requests"));
  EXPECT_THAT(out, HasSubstr("[12.5%] -> 25%"));
}

TEST(RenderStatus, ToleratesNullsAndOddShapes) {
  // Values a server may send as null (NaN rates, no verdict yet, no samples)
  // or leave out must not crash the CLI.
  auto s = sample_status();
  s["verdict"] = nullptr;
  s["reason"] = nullptr;
  s["since"] = nullptr;
  s["arms"]["control"]["error_rate"] = nullptr;
  s["arms"]["control"]["requests"] = nullptr;
  s["arms"]["canary"]["p99_seconds"] = nullptr;
  s["steps"][1] = 25;  // not an object
  std::string out;
  ASSERT_NO_THROW(out = render_status(s));
  EXPECT_THAT(out, HasSubstr("State:    progressing"));
  EXPECT_THAT(out, HasSubstr("  control"));
  EXPECT_THAT(out, HasSubstr("  canary"));
  EXPECT_THAT(out, Not(HasSubstr("Verdict")));

  nlohmann::json weird = {{"state", 3}, {"step", "one"}, {"weight", "ten"}, {"arms", {{"canary", "x"}}}};
  ASSERT_NO_THROW(out = render_status(weird));
  EXPECT_THAT(out, HasSubstr("State:"));
  ASSERT_NO_THROW(render_status(nlohmann::json::array()));
  ASSERT_NO_THROW(render_status(nlohmann::json("text")));
  ASSERT_NO_THROW(render_status(nlohmann::json()));
  EXPECT_THAT(render_status(nlohmann::json::object()), HasSubstr("State:    ?"));
}

// Issue 14: every check of the verdict, with the dry-run marks and the SRM line.
TEST(RenderStatus, ShowsEveryCheck) {
  nlohmann::json s = sample_status();
  s["verdict"]["kind"] = "inconclusive";
  s["verdict"]["hold"] = "srm";
  s["verdict"]["hold_reason"] = "sample ratio mismatch: canary 15.00% of 900 users at weight 10%";
  s["verdict"]["checks"] = nlohmann::json::parse(R"([
    {"name": "error_rate", "outcome": "pass", "acting": true, "dry_run": false, "critical": false,
     "failing_looks": 0, "failure_limit": 2, "canary": 0.004, "control": 0.0035, "estimate": 1.14,
     "bound": 0.01, "statistic": -0.22, "threshold": 6.8, "detail": "x"},
    {"name": "duration", "outcome": "pass", "acting": true, "dry_run": false, "critical": false,
     "failing_looks": 0, "failure_limit": 2, "canary": 0.812, "control": 0.79, "estimate": 1.03,
     "bound": 1.25, "statistic": -8.1, "threshold": 4.2, "detail": "y"},
    {"name": "truncated", "outcome": "fail", "acting": false, "dry_run": true, "critical": false,
     "failing_looks": 3, "failure_limit": 2, "canary": 0.06, "control": 0.01, "estimate": 6.3,
     "bound": 1.5, "statistic": 9.9, "threshold": 6.8, "detail": "z"},
    {"name": "tool_call_json", "outcome": "skipped", "acting": true, "dry_run": false, "critical": true,
     "failing_looks": 0, "failure_limit": 1, "canary": null, "control": null, "estimate": null,
     "bound": 1.5, "statistic": 0, "threshold": 6.8, "detail": "no such answers"}])");
  s["verdict"]["srm"] = nlohmann::json::parse(R"({"outcome": "fail", "canary_users": 135, "control_users": 765,
     "sampled": 1, "expected_share": 0.1, "user_share": 0.15, "request_share": 0.149, "log_e": 8.1,
     "threshold": 6.9, "detail": "d"})");
  const std::string out = render_status(s);
  EXPECT_THAT(out, HasSubstr("Verdict:  inconclusive"));
  EXPECT_THAT(out, HasSubstr("Hold:     srm: sample ratio mismatch: canary 15.00% of 900 users"));
  EXPECT_THAT(out, HasSubstr("CHECK"));
  EXPECT_THAT(out, HasSubstr("error_rate                 pass          0.40%     0.35%     1.14x     1.00%"));
  EXPECT_THAT(
      out,
      HasSubstr("duration                   pass          812ms     790ms     1.03x     1.25x     z=-8.10 of 4.20"));
  EXPECT_THAT(
      out,
      HasSubstr("truncated (dry run)        fail          6.00%     1.00%     6.30x     1.50x     e=1.99e+04 of 898"));
  EXPECT_THAT(out, HasSubstr("3/2"));
  EXPECT_THAT(out, HasSubstr("tool_call_json (critical)  skipped"));
  EXPECT_THAT(
      out,
      HasSubstr("srm (users on the canary)  fail          15.00%    -         -         10.00%    e=3.29e+03 of 992"));
  EXPECT_THAT(out, HasSubstr("135/900 users"));
  // A verdict from before issue 14 has no checks: no table.
  EXPECT_THAT(render_status(sample_status()), Not(HasSubstr("CHECK")));
}

nlohmann::json sample_report() {
  return nlohmann::json::parse(R"({
    "window_seconds": 300,
    "arms": {
      "control": {"provider": "openai", "requests": 1000, "error_rate": 0.004, "p50_seconds": 0.42,
                  "p99_seconds": 1.8, "ttfb_p50_seconds": 0.35, "prompt_tokens": 120000,
                  "completion_tokens": 45000, "cost_usd": 2.4, "cost_per_1k_requests_usd": 2.4,
                  "projected_monthly_cost_usd": 20736.0},
      "canary": {"provider": "holysheep", "requests": 250, "error_rate": 0.0, "p50_seconds": 0.3,
                 "p99_seconds": 0.9, "ttfb_p50_seconds": 0.2, "prompt_tokens": 30000,
                 "completion_tokens": 11000, "cost_usd": 0.0258, "cost_per_1k_requests_usd": 0.1032,
                 "projected_monthly_cost_usd": 891.65}
    },
    "projected_monthly_saving_usd": 19844.35,
    "shadow": {"enabled": false}
  })");
}

TEST(RenderReport, PerArmRowsAndSaving) {
  std::string out = render_report(sample_report());
  EXPECT_THAT(out, HasSubstr("ARM"));
  EXPECT_THAT(out, HasSubstr("COST"));
  auto control = out.find("  control   1000");
  auto canary = out.find("  canary    250");
  ASSERT_NE(control, std::string::npos) << out;
  ASSERT_NE(canary, std::string::npos) << out;
  EXPECT_LT(control, canary);
  std::string control_row = out.substr(control, out.find('\n', control) - control);
  EXPECT_THAT(control_row, HasSubstr("0.40%"));
  EXPECT_THAT(control_row, HasSubstr("420ms"));
  EXPECT_THAT(control_row, HasSubstr("1.80s"));
  EXPECT_THAT(control_row, HasSubstr("350ms"));
  EXPECT_THAT(control_row, HasSubstr("120000/45000"));
  EXPECT_THAT(control_row, HasSubstr("2.4000"));
  EXPECT_THAT(control_row, HasSubstr("20736.00"));
  std::string canary_row = out.substr(canary, out.find('\n', canary) - canary);
  EXPECT_THAT(canary_row, HasSubstr("30000/11000"));
  EXPECT_THAT(canary_row, HasSubstr("0.0258"));
  EXPECT_THAT(canary_row, HasSubstr("0.1032"));
  EXPECT_THAT(canary_row, HasSubstr("891.65"));
  EXPECT_THAT(out, HasSubstr("Projected monthly saving if all traffic moved to the canary: $19844.35"));
  EXPECT_THAT(out, HasSubstr("Shadow: off (shadow.enabled: false)"));
}

TEST(RenderReport, ShadowSection) {
  auto r = sample_report();
  r["shadow"] = nlohmann::json::parse(R"({"enabled": true, "share_percent": 5, "max_per_second": 2, "max_in_flight": 8,
    "pairs": 120, "in_flight": 1, "skipped": {"rate": 3, "in_flight": 0, "rolled_back": 0},
    "results": {"both_succeeded": 110, "status_differs": 6, "shadow_failed": 4, "both_failed": 0},
    "match_rates": {"status": 0.95, "finish_reason": 0.9, "tool_names": 1.0, "shadow_json_valid": 1.0,
                    "tool_arguments_valid": null},
    "latency_delta_seconds": {"mean": -0.12, "p50": -0.1, "p99": 0.4},
    "ttfb_delta_seconds": {"mean": null, "p50": null, "p99": null},
    "length_ratio_mean": 0.97, "cost_usd": {"control": 0.5, "canary": 0.1, "delta": -0.4}, "cost_delta_percent": -80.0})");
  std::string out = render_report(r);
  EXPECT_THAT(out, HasSubstr("Shadow: 5% of control requests, at most 2/s and 8 in flight"));
  EXPECT_THAT(out, HasSubstr("120 compared, 1 in flight"));
  EXPECT_THAT(out, HasSubstr("both succeeded 110, status differs 6, canary failed 4, both failed 0"));
  EXPECT_THAT(out, HasSubstr("rate cap 3"));
  EXPECT_THAT(out, HasSubstr("status 95.00%, finish_reason 90.00%"));
  EXPECT_THAT(out, HasSubstr("tool arguments valid -"));
  EXPECT_THAT(out, HasSubstr("p50 -100ms, p99 400ms, mean -120ms; first byte p50 -"));
  EXPECT_THAT(out, HasSubstr("canary/control 0.97"));
  EXPECT_THAT(out, HasSubstr("control $0.5000, canary $0.1000, delta $-0.4000 (-80.0%)"));
}

TEST(RenderReport, ToleratesNullsAndMissingArms) {
  auto r = sample_report();
  r["arms"].erase("canary");
  r["arms"]["control"]["cost_usd"] = nullptr;
  r["arms"]["control"]["error_rate"] = nullptr;
  r["arms"]["control"]["prompt_tokens"] = nullptr;
  r["projected_monthly_saving_usd"] = nullptr;
  std::string out;
  ASSERT_NO_THROW(out = render_report(r));
  EXPECT_THAT(out, HasSubstr("  control   1000"));
  EXPECT_THAT(out, Not(HasSubstr("  canary ")));
  ASSERT_NO_THROW(render_report(nlohmann::json::array()));
  ASSERT_NO_THROW(render_report(nlohmann::json()));
  ASSERT_NO_THROW(render_report(nlohmann::json{{"arms", {{"control", 5}}}}));
}

// Issue 17: the experiments list and the report of several experiments.
TEST(RenderExperiments, OneLineEach) {
  nlohmann::json list = nlohmann::json::parse(R"({"experiments": [
    {"name": "gpt", "match": {"models": ["gpt-4.1"]}, "control": "openai", "canary": "a", "state": "aborted",
     "weight": 0, "verdict": "fail"},
    {"name": "claude", "match": {"models": ["claude-*"], "header": {"name": "X-Team", "value": "web"}},
     "control": "openai", "canary": "b", "state": "progressing", "weight": 25, "verdict": "pass"}],
    "default_upstream": "openai"})");
  const std::string out = render_experiments(list);
  EXPECT_THAT(out, HasSubstr("gpt              gpt-4.1"));
  EXPECT_THAT(out, HasSubstr("openai -> a"));
  EXPECT_THAT(out, HasSubstr("aborted      0%      fail"));
  EXPECT_THAT(out, HasSubstr("claude-*, X-Team: web"));
  EXPECT_THAT(out, HasSubstr("progressing  25%     pass"));
  EXPECT_THAT(out, HasSubstr("Requests no experiment matches go to openai."));
  ASSERT_NO_THROW(render_experiments(nlohmann::json()));
}

TEST(RenderReports, EachExperimentThenTheTotal) {
  auto a = sample_report();
  a["experiment"] = "gpt";
  auto b = sample_report();
  b["experiment"] = "claude";
  nlohmann::json r = {{"experiments", {a, b}},
                      {"total",
                       {{"experiments", 2},
                        {"cost_usd", 1.5},
                        {"projected_monthly_cost_usd", 1234.5},
                        {"projected_monthly_saving_usd", 99.0}}}};
  const std::string out = render_reports(r);
  EXPECT_THAT(out, HasSubstr("Experiment gpt\n"));
  EXPECT_THAT(out, HasSubstr("Experiment claude\n"));
  EXPECT_THAT(out, HasSubstr("Total (2 experiments): $1.5000 so far, $1234.50 a month projected; moving every "
                             "experiment's traffic to its canary would save $99.00 a month"));
  ASSERT_NO_THROW(render_reports(nlohmann::json()));
}

}  // namespace
}  // namespace canaryd::ctl
