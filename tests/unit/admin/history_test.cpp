#include "admin/history.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace canaryd::admin {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json rollout(double weight, std::uint64_t control_requests, std::uint64_t canary_requests) {
  return {{"state", "progressing"},
          {"step", 1},
          {"weight", weight},
          {"arms",
           {{"control", {{"requests", control_requests}, {"errors", 0}, {"error_rate", 0.0}, {"p99_seconds", 0.25}}},
            {"canary", {{"requests", canary_requests}, {"errors", 1}, {"error_rate", 0.02}, {"p99_seconds", 0.5}}}}}};
}

json report(double control_total, double control_cost, double canary_total, double canary_cost) {
  return {{"arms",
           {{"control", {{"requests_total", control_total}, {"cost_usd", control_cost}}},
            {"canary", {{"requests_total", canary_total}, {"cost_usd", canary_cost}}}}}};
}

TEST(History, DefaultsKeepFifteenMinutesOfTenSecondSamples) {
  ManualClock clock;
  History h(clock);
  EXPECT_EQ(h.capacity(), 90u);
  EXPECT_EQ(h.interval(), 10s);
  json j = h.to_json();
  EXPECT_EQ(j["interval_seconds"], 10.0);
  EXPECT_EQ(j["span_seconds"], 900.0);
  EXPECT_EQ(j["capacity"], 90);
  EXPECT_TRUE(j["samples"].is_array());
  EXPECT_TRUE(j["samples"].empty());
}

TEST(History, RingIsBoundedAndKeepsTheNewest) {
  ManualClock clock;
  History h(clock, 1s, 5s);
  ASSERT_EQ(h.capacity(), 5u);
  for (int i = 1; i <= 12; ++i) {
    clock.advance(1s);
    h.sample(rollout(i, 0, 0), report(i * 10, 0, 0, 0));
  }
  json samples = h.to_json()["samples"];
  ASSERT_EQ(samples.size(), 5u);
  EXPECT_EQ(samples.front()["weight"], 8.0);  // oldest first
  EXPECT_EQ(samples.back()["weight"], 12.0);
  EXPECT_LT(samples.front()["unix_ms"].get<std::int64_t>(), samples.back()["unix_ms"].get<std::int64_t>());
}

TEST(History, CapacityRoundsUpAndIsAtLeastOne) {
  ManualClock clock;
  EXPECT_EQ(History(clock, 7s, 15s).capacity(), 3u);
  EXPECT_EQ(History(clock, 10s, 1s).capacity(), 1u);
}

TEST(History, RatesAreDeltasOverTheMeasuredInterval) {
  ManualClock clock;
  History h(clock);
  clock.advance(10s);
  // From construction (all counters zero): 50 control requests in 10 s.
  h.sample(rollout(25, 50, 10), report(50, 0.5, 10, 0.02));
  clock.advance(20s);  // a late tick: the rate uses the 20 s that passed
  h.sample(rollout(25, 90, 30), report(90, 0.9, 30, 0.06));

  json samples = h.to_json()["samples"];
  ASSERT_EQ(samples.size(), 2u);
  const json& first = samples[0]["arms"];
  EXPECT_DOUBLE_EQ(first["control"]["requests_per_second"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(first["control"]["cost_per_1k_requests_usd"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(first["canary"]["requests_per_second"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(first["canary"]["cost_per_1k_requests_usd"].get<double>(), 2.0);

  const json& second = samples[1];
  EXPECT_DOUBLE_EQ(second["elapsed_seconds"].get<double>(), 20.0);
  EXPECT_DOUBLE_EQ(second["arms"]["control"]["requests_per_second"].get<double>(), 2.0);  // 40 in 20 s
  EXPECT_DOUBLE_EQ(second["arms"]["control"]["cost_per_1k_requests_usd"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(second["arms"]["canary"]["requests_per_second"].get<double>(), 1.0);  // 20 in 20 s
  EXPECT_DOUBLE_EQ(second["arms"]["canary"]["cost_per_1k_requests_usd"].get<double>(), 2.0);
  // Error rate and p99 are the rollout window's, as the analysis saw them.
  EXPECT_DOUBLE_EQ(second["arms"]["canary"]["error_rate"].get<double>(), 0.02);
  EXPECT_DOUBLE_EQ(second["arms"]["canary"]["p99_seconds"].get<double>(), 0.5);
  EXPECT_EQ(second["arms"]["canary"]["window_requests"], 30);
  EXPECT_EQ(second["state"], "progressing");
  EXPECT_EQ(second["step"], 1);
}

TEST(History, NoRequestsGiveZeroRateAndNoCostOrWindowFigures) {
  ManualClock clock;
  History h(clock);
  clock.advance(10s);
  h.sample(rollout(10, 0, 0), report(0, 0, 0, 0));
  json arm = h.to_json()["samples"][0]["arms"]["canary"];
  EXPECT_DOUBLE_EQ(arm["requests_per_second"].get<double>(), 0.0);
  EXPECT_TRUE(arm["cost_per_1k_requests_usd"].is_null());
  EXPECT_TRUE(arm["error_rate"].is_null());  // nothing in the window to judge
  EXPECT_TRUE(arm["p99_seconds"].is_null());
  EXPECT_EQ(arm["window_requests"], 0);
}

TEST(History, CounterResetDoesNotGiveNegativeRates) {
  ManualClock clock;
  History h(clock);
  clock.advance(10s);
  h.sample(rollout(25, 100, 100), report(1000, 10.0, 400, 1.0));
  clock.advance(10s);
  // The counters restarted from zero and counted 30 and 20 since.
  h.sample(rollout(25, 30, 20), report(30, 0.3, 20, 0.05));
  clock.advance(10s);
  h.sample(rollout(25, 30, 20), report(130, 1.3, 20, 0.05));

  json samples = h.to_json()["samples"];
  ASSERT_EQ(samples.size(), 3u);
  for (const auto& s : samples) {
    for (const char* arm : {"control", "canary"}) {
      EXPECT_GE(s["arms"][arm]["requests_per_second"].get<double>(), 0.0) << s.dump();
      if (!s["arms"][arm]["cost_per_1k_requests_usd"].is_null()) {
        EXPECT_GE(s["arms"][arm]["cost_per_1k_requests_usd"].get<double>(), 0.0) << s.dump();
      }
    }
  }
  EXPECT_DOUBLE_EQ(samples[1]["arms"]["control"]["requests_per_second"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(samples[1]["arms"]["canary"]["cost_per_1k_requests_usd"].get<double>(), 2.5);
  // And the baseline follows the reset counter.
  EXPECT_DOUBLE_EQ(samples[2]["arms"]["control"]["requests_per_second"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(samples[2]["arms"]["canary"]["requests_per_second"].get<double>(), 0.0);
}

TEST(History, NoElapsedTimeGivesNullRate) {
  ManualClock clock;
  History h(clock);
  h.sample(rollout(10, 1, 1), report(5, 0.1, 1, 0.01));
  EXPECT_TRUE(h.to_json()["samples"][0]["arms"]["control"]["requests_per_second"].is_null());
}

TEST(History, MissingInputsBecomeNullsNotThrows) {
  ManualClock clock;
  History h(clock);
  clock.advance(10s);
  h.sample(json(), json::object());
  clock.advance(10s);
  h.sample(json{{"state", "paused"}, {"arms", "garbage"}}, json{{"arms", {{"canary", 3}}}});
  json samples = h.to_json()["samples"];
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_TRUE(samples[0]["state"].is_null());
  EXPECT_EQ(samples[1]["state"], "paused");
  for (const auto& s : samples) {
    for (const char* arm : {"control", "canary"}) {
      const json& a = s["arms"][arm];
      EXPECT_TRUE(a["requests_per_second"].is_null());
      EXPECT_TRUE(a["cost_per_1k_requests_usd"].is_null());
      EXPECT_TRUE(a["error_rate"].is_null());
      EXPECT_TRUE(a["p99_seconds"].is_null());
    }
  }
}

TEST(History, SampleShapeAndTimestamp) {
  ManualClock clock;
  History h(clock);
  clock.advance(10s);
  h.sample(rollout(25, 5, 5), report(5, 0.01, 5, 0.01));
  json s = h.to_json()["samples"][0];
  for (const char* key : {"unix_ms", "time", "elapsed_seconds", "state", "step", "weight", "arms"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  const auto expected_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall().time_since_epoch()).count();
  EXPECT_EQ(s["unix_ms"].get<std::int64_t>(), expected_ms);
  EXPECT_EQ(s["time"], rfc3339(clock.wall()));
  for (const char* arm : {"control", "canary"}) {
    for (const char* key :
         {"requests_per_second", "cost_per_1k_requests_usd", "error_rate", "p99_seconds", "window_requests"}) {
      EXPECT_TRUE(s["arms"][arm].contains(key)) << arm << "." << key;
    }
  }
}

}  // namespace
}  // namespace canaryd::admin
