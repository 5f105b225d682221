// canaryd simulate: scenario files, determinism, and a small run of the real
// judge per kind of canary, with bounds loose enough never to flake (each is
// many binomial standard errors from what 1000 runs measure, docs/rollout.md)
// and tight enough to fail for a broken judge (the peeking judge this
// replaces rolled a healthy canary back in 24-37% of rollouts).
#include "simulate/simulate.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace canaryd::simulate {
namespace {

const char* kConfig = R"(
upstreams:
  a: { base_url: "http://127.0.0.1:1/v1" }
  b: { base_url: "http://127.0.0.1:2/v1" }
split: { control: a, canary: b }
rollout:
  steps:
    - { weight: 10, pause: 10m }
    - { weight: 25, pause: 15m }
    - { weight: 50, pause: 30m }
    - { weight: 100 }
)";

config::Config cfg() { return config::load_string(kConfig, "sim.yaml"); }

std::string error_of(const std::string& yaml) {
  try {
    load_scenarios(yaml, "s.yaml");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Scenario, TopLevelAndVariants) {
  const auto s = load_scenarios(R"(
name: base
rate: 5
control: { error_rate: 0.01, latency_median: 2s }
canary: { finish_length: 0.2 }
changes:
  - { at: 20m, until: 25m, both: { error_rate: 0.1 }, canary: { error_rate: 0.3 } }
variants:
  - { name: one }
  - { name: two, rate: 50, both: { error_rate: 0.02 }, split_factor: 1.5 }
)",
                                "s.yaml");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name, "one");
  EXPECT_DOUBLE_EQ(s[0].rate, 5);
  EXPECT_DOUBLE_EQ(s[0].control.error_rate, 0.01);
  EXPECT_DOUBLE_EQ(s[0].canary.error_rate, 0.01);  // the canary starts as control
  EXPECT_EQ(s[0].canary.latency_median, std::chrono::seconds(2));
  EXPECT_DOUBLE_EQ(s[0].canary.finish_length, 0.2);
  EXPECT_DOUBLE_EQ(s[0].control.finish_length, 0.01);
  ASSERT_EQ(s[0].changes.size(), 1u);
  EXPECT_DOUBLE_EQ(*s[0].changes[0].control.error_rate, 0.1);
  EXPECT_DOUBLE_EQ(*s[0].changes[0].canary.error_rate, 0.3);  // the arm's own key wins over both
  EXPECT_EQ(s[1].name, "two");
  EXPECT_DOUBLE_EQ(s[1].rate, 50);
  EXPECT_DOUBLE_EQ(s[1].canary.error_rate, 0.02);
  EXPECT_DOUBLE_EQ(s[1].split_factor, 1.5);
}

TEST(Scenario, ErrorsNameTheKey) {
  EXPECT_EQ(error_of("rate: -1\n"), "s.yaml:1: rate: must be between 0.001 and 100000, got \"-1\"");
  EXPECT_EQ(error_of("canary: { eror_rate: 0.1 }\n"), "s.yaml:1: canary.eror_rate: unknown key");
  EXPECT_EQ(error_of("changes:\n  - { until: 5m }\n"), "s.yaml:2: changes[0].at: required key missing");
  EXPECT_EQ(error_of("changes:\n  - { at: 5m, until: 1m }\n"), "s.yaml:2: changes[0].until: must be after `at`");
  EXPECT_EQ(error_of("variants:\n  - { name: x }\n  - { name: x }\n"),
            "s.yaml:3: variants[1].name: \"x\" is used twice");
  EXPECT_EQ(error_of("both: { error_rate: 2 }\n"), "s.yaml:1: both.error_rate: must be between 0 and 1, got \"2\"");
}

TEST(Simulate, RunsAreDeterministicAndThreadsDoNotMatter) {
  auto s = load_scenarios("rate: 20\ncanary: { error_rate: 0.05 }\ncontrol: { error_rate: 0.001 }\n", "s.yaml");
  const auto c = cfg();
  const RunResult a = run_once(c, s[0], 7);
  const RunResult b = run_once(c, s[0], 7);
  EXPECT_EQ(a.ending, b.ending);
  EXPECT_EQ(a.canary_requests, b.canary_requests);
  EXPECT_EQ(a.seconds, b.seconds);
  Options one{20, 3, 1}, two{20, 3, 2};
  EXPECT_EQ(to_json(run(c, s[0], one)), to_json(run(c, s[0], two)));
}

Summary simulate(const std::string& yaml, std::uint32_t runs) {
  const auto s = load_scenarios(yaml, "s.yaml");
  return run(cfg(), s.at(0), Options{runs, 20261203, 1});
}

TEST(Simulate, BadCanaryIsRolledBackQuickly) {
  const auto r = simulate("rate: 20\ncontrol: { error_rate: 0.001 }\ncanary: { error_rate: 0.05 }\n", 50);
  std::printf("%s\n", table_row(r).c_str());
  EXPECT_GE(r.rolled_back, 47u);
  EXPECT_LE(r.canary_requests.median, 300);
}

TEST(Simulate, HealthyCanaryIsPromotedNotRolledBack) {
  // A/A at 1% errors, 5 req/s: the whole 55-minute rollout.
  const auto r = simulate("rate: 5\nboth: { error_rate: 0.01 }\n", 30);
  std::printf("%s\n", table_row(r).c_str());
  EXPECT_LE(r.rolled_back, 3u);
  EXPECT_GE(r.promoted, 27u);
}

TEST(Simulate, SkewedSplitPausesForSrm) {
  const auto r = simulate("rate: 20\nsplit_factor: 1.5\nduration: 30m\n", 30);
  std::printf("%s\n", table_row(r).c_str());
  EXPECT_GE(r.paused, 28u);
  ASSERT_FALSE(r.causes.empty());
  EXPECT_EQ(r.causes.front().first, "paused:srm");
}

TEST(Simulate, TheTableAndTheJson) {
  Summary s;
  s.scenario = "x";
  s.runs = 4;
  s.rolled_back = 1;
  s.promoted = 3;
  s.causes = {{"promoted:analysis", 3}, {"rolled_back:error_rate", 1}};
  s.seconds = {90, 3300};
  s.canary_requests = {120, 20000};
  EXPECT_EQ(table_row(s),
            "| x | 4 | 25.0% (1) | 75.0% (3) | 0.0% (0) | 0.0% (0) | 90s / 55.0m | 120 / 20000 | "
            "promoted:analysis 3, rolled_back:error_rate 1 |");
  EXPECT_EQ(to_json(s)["endings"]["rolled_back:error_rate"], 1);
}

}  // namespace
}  // namespace canaryd::simulate
