// /admin/report's accumulators (src/server/report.*) and the access log's
// cost field: sums, window, projection formulas, concurrency.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "admin/report.hpp"

namespace canaryd::admin {
namespace {

using namespace std::chrono_literals;

constexpr double kMonth = 30.0 * 24 * 3600;

nlohmann::json rollout_arms(std::uint64_t control, std::uint64_t canary) {
  return {{"control",
           {{"requests", control}, {"errors", 0}, {"error_rate", 0.0}, {"p50_seconds", 0.1}, {"p99_seconds", 0.4}}},
          {"canary",
           {{"requests", canary}, {"errors", 1}, {"error_rate", 0.25}, {"p50_seconds", 0.05}, {"p99_seconds", 0.2}}}};
}

TEST(CostUsd, PricedAndUnpriced) {
  std::map<std::string, config::Price> pricing{{"gpt-4.1", {8.0, 32.0}}, {"deepseek-v3.2", {0.42, 1.20}}};
  EXPECT_DOUBLE_EQ(config::cost_usd(pricing, "gpt-4.1", 1'000'000, 0), 8.0);
  EXPECT_DOUBLE_EQ(config::cost_usd(pricing, "gpt-4.1", 100, 50), 100 / 1e6 * 8 + 50 / 1e6 * 32);
  EXPECT_DOUBLE_EQ(config::cost_usd(pricing, "deepseek-v3.2", 0, 1'000'000), 1.20);
  EXPECT_EQ(config::cost_usd(pricing, "unknown-model", 1000, 1000), 0.0);
  EXPECT_EQ(config::cost_usd(pricing, "other", 1000, 1000), 0.0);
}

TEST(Report, EmptyReportHasTheShapeCtlExpects) {
  ManualClock clock;
  Report report(clock, 5min);
  nlohmann::json r = report.build(nlohmann::json());
  for (const char* arm : {"control", "canary"}) {
    const auto& a = r["arms"][arm];
    EXPECT_EQ(a["requests"], 0u);
    EXPECT_EQ(a["requests_total"], 0u);
    EXPECT_EQ(a["cost_usd"], 0.0);
    EXPECT_TRUE(a["ttfb_p50_seconds"].is_null());
    EXPECT_TRUE(a["p50_seconds"].is_null());
    for (const char* k : {"error_rate", "prompt_tokens", "completion_tokens", "cost_per_1k_requests_usd",
                          "projected_monthly_cost_usd"}) {
      EXPECT_TRUE(a[k].is_number()) << arm << "." << k;
    }
  }
  EXPECT_TRUE(r["projected_monthly_saving_usd"].is_null());
}

TEST(Report, SumsTokensCostAndTakesWindowFiguresFromTheRollout) {
  ManualClock clock;
  Report report(clock, 5min);
  clock.advance(10s);
  for (int i = 0; i < 4; ++i) report.record(Arm::control, 100, 50, 0.0024, 200ms);
  for (int i = 0; i < 3; ++i) report.record(Arm::canary, 100, 50, 0.000102, 50ms);
  report.record(Arm::canary, 0, 0, 0, std::nullopt);  // a failed call: no usage, no first byte
  clock.advance(10s);
  nlohmann::json r = report.build(rollout_arms(4, 4));
  const auto& c = r["arms"]["control"];
  const auto& k = r["arms"]["canary"];
  EXPECT_EQ(c["requests"], 4u);
  EXPECT_EQ(k["requests"], 4u);
  EXPECT_DOUBLE_EQ(k["error_rate"], 0.25);
  EXPECT_DOUBLE_EQ(c["p99_seconds"], 0.4);
  EXPECT_EQ(c["prompt_tokens"], 400u);
  EXPECT_EQ(c["completion_tokens"], 200u);
  EXPECT_EQ(k["prompt_tokens"], 300u);
  EXPECT_NEAR(c["cost_usd"].get<double>(), 4 * 0.0024, 1e-9);
  EXPECT_NEAR(k["cost_usd"].get<double>(), 3 * 0.000102, 1e-9);
  EXPECT_NEAR(c["cost_per_1k_requests_usd"].get<double>(), 2.4, 1e-6);
  EXPECT_NEAR(k["cost_per_1k_requests_usd"].get<double>(), 3 * 0.000102 / 4 * 1000, 1e-6);
  // TTFB p50 from log-scale buckets: within ~5%.
  EXPECT_NEAR(c["ttfb_p50_seconds"].get<double>(), 0.2, 0.01);
  EXPECT_NEAR(k["ttfb_p50_seconds"].get<double>(), 0.05, 0.0025);

  // 20 s since start: rates are per the 20 s covered, not the 5 min window.
  EXPECT_DOUBLE_EQ(r["covered_seconds"], 20.0);
  EXPECT_DOUBLE_EQ(c["requests_per_second"], 4 / 20.0);
  EXPECT_DOUBLE_EQ(k["requests_per_second"], 4 / 20.0);
  const double c_month = 0.0024 * (4 / 20.0) * kMonth;
  const double k_month = (3 * 0.000102 / 4) * (4 / 20.0) * kMonth;
  EXPECT_NEAR(c["projected_monthly_cost_usd"].get<double>(), c_month, 1e-6);
  EXPECT_NEAR(k["projected_monthly_cost_usd"].get<double>(), k_month, 1e-6);
  EXPECT_NEAR(r["projected_monthly_cost_usd"].get<double>(), c_month + k_month, 1e-6);
  const double saving = (0.0024 - 3 * 0.000102 / 4) * (8 / 20.0) * kMonth;
  EXPECT_NEAR(r["projected_monthly_saving_usd"].get<double>(), saving, 1e-6);
  EXPECT_NEAR(r["saving_percent"].get<double>(), saving / (0.0024 * 8 / 20.0 * kMonth) * 100, 1e-6);
}

TEST(Report, WindowSlidesTotalsStay) {
  ManualClock clock;
  Report report(clock, 1min);
  clock.advance(2min);
  for (int i = 0; i < 10; ++i) report.record(Arm::control, 10, 20, 0.001, 10ms);
  clock.advance(30s);
  auto r = report.build(nlohmann::json());
  EXPECT_DOUBLE_EQ(r["covered_seconds"], 60.0);  // capped at the window
  EXPECT_EQ(r["arms"]["control"]["window_requests"], 10u);
  EXPECT_DOUBLE_EQ(r["arms"]["control"]["requests_per_second"], 10 / 60.0);

  clock.advance(2min);  // everything left the window
  r = report.build(nlohmann::json());
  const auto& c = r["arms"]["control"];
  EXPECT_EQ(c["window_requests"], 0u);
  EXPECT_EQ(c["requests_total"], 10u);
  EXPECT_NEAR(c["cost_usd"].get<double>(), 0.01, 1e-12);
  EXPECT_EQ(c["requests_per_second"], 0.0);
  EXPECT_EQ(c["projected_monthly_cost_usd"], 0.0);                      // no traffic now
  EXPECT_NEAR(c["cost_per_1k_requests_usd"].get<double>(), 1.0, 1e-9);  // falls back to since-start
  EXPECT_TRUE(c["ttfb_p50_seconds"].is_null());
  EXPECT_TRUE(r["projected_monthly_saving_usd"].is_null());  // canary never served
}

TEST(Report, ExactUnderManyThreads) {
  ManualClock clock;
  Report report(clock, 5min);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        report.record(t % 2 ? Arm::canary : Arm::control, 3, 5, 0.000001, 1ms);
      }
    });
  }
  for (auto& th : threads) th.join();
  auto r = report.build(nlohmann::json());
  const std::uint64_t per_arm = kThreads / 2 * kPerThread;
  for (const char* arm : {"control", "canary"}) {
    const auto& a = r["arms"][arm];
    EXPECT_EQ(a["requests_total"], per_arm);
    EXPECT_EQ(a["window_requests"], per_arm);
    EXPECT_EQ(a["prompt_tokens"], per_arm * 3);
    EXPECT_EQ(a["completion_tokens"], per_arm * 5);
    EXPECT_NEAR(a["cost_usd"].get<double>(), per_arm * 0.000001, 1e-9);  // integer nano-USD: exact
  }
}

}  // namespace
}  // namespace canaryd::admin
