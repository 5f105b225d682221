#include "metrics/metrics.hpp"

#include <gtest/gtest.h>
#include <spdlog/async.h>
#include <spdlog/sinks/base_sink.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace canaryd::metrics {
namespace {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

// Just enough of the text format to read back what TextSerializer wrote.
std::vector<Sample> parse(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample sample;
    std::size_t pos = line.find_first_of("{ ");
    sample.name = line.substr(0, pos);
    if (line[pos] == '{') {
      const std::size_t end = line.find('}', pos);
      std::string body = line.substr(pos + 1, end - pos - 1);
      std::size_t i = 0;
      while (i < body.size()) {
        const std::size_t eq = body.find('=', i);
        const std::size_t close = body.find('"', eq + 2);
        sample.labels[body.substr(i, eq - i)] = body.substr(eq + 2, close - eq - 2);
        i = close + 1;
        if (i < body.size() && body[i] == ',') ++i;
      }
      pos = end + 1;
    }
    sample.value = std::strtod(line.c_str() + pos + 1, nullptr);
    out.push_back(std::move(sample));
  }
  return out;
}

// The value of the one sample with this name and labels; fails the test if absent.
double value_of(const std::string& text, const std::string& name, const Labels& labels = {}) {
  for (const auto& sample : parse(text)) {
    if (sample.name == name && sample.labels == labels) return sample.value;
  }
  ADD_FAILURE() << "no sample " << name << " with the given labels";
  return -1;
}

std::size_t series_count(const std::string& text, const std::string& name) {
  std::size_t n = 0;
  for (const auto& sample : parse(text)) n += sample.name == name;
  return n;
}

Metrics::Setup test_setup() {
  Metrics::Setup setup;
  setup.providers = {"openai", "holysheep"};
  setup.models = {"gpt-4.1", "deepseek-v3.2", "unpriced-model"};
  setup.pricing = {{"gpt-4.1", {8.00, 32.00}}, {"deepseek-v3.2", {0.42, 1.20}}};
  return setup;
}

TEST(MetricsTest, ExpositionHasEveryFamilyWithItsType) {
  Metrics metrics(test_setup());
  const std::string text = metrics.expose();
  const std::pair<const char*, const char*> families[] = {
      {"ai_proxy_requests_total", "counter"},
      {"ai_proxy_request_duration_seconds", "histogram"},
      {"ai_proxy_time_to_first_byte_seconds", "histogram"},
      {"ai_proxy_tokens_total", "counter"},
      {"ai_proxy_cost_usd_total", "counter"},
      {"ai_proxy_fallbacks_total", "counter"},
      {"ai_proxy_canary_weight", "gauge"},
      {"ai_proxy_rollout_state", "gauge"},
      {"ai_proxy_rollbacks_total", "counter"},
      {"ai_proxy_redis_errors_total", "counter"},
      {"ai_proxy_redis_failovers_total", "counter"},
      {"ai_proxy_redis_redirects_total", "counter"},
      {"ai_proxy_redis_discovery_errors_total", "counter"},
      {"ai_proxy_inflight_requests", "gauge"},
      {"ai_proxy_overhead_seconds", "histogram"},
      {"process_cpu_seconds_total", "counter"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_virtual_memory_bytes", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_start_time_seconds", "gauge"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " " + type + "\n"), std::string::npos) << name;
    EXPECT_NE(text.find(std::string("# HELP ") + name + " "), std::string::npos) << name;
  }
}

TEST(MetricsTest, PrefixComesFromSetupAndIsValidated) {
  auto setup = test_setup();
  setup.prefix = "llm_gw";
  Metrics metrics(setup);
  const std::string text = metrics.expose();
  EXPECT_NE(text.find("# TYPE llm_gw_requests_total counter\n"), std::string::npos);
  EXPECT_EQ(text.find("ai_proxy_"), std::string::npos);

  setup.prefix = "bad-prefix";
  EXPECT_THROW(Metrics{setup}, std::invalid_argument);
  setup.prefix = "";
  EXPECT_THROW(Metrics{setup}, std::invalid_argument);
}

TEST(MetricsTest, UnknownModelsMapToOtherAndSeriesStayBounded) {
  Metrics metrics(test_setup());
  const std::size_t expected = 2 * (3 + 1) * 3;
  EXPECT_EQ(series_count(metrics.expose(), "ai_proxy_requests_total"), expected);

  std::mt19937 rng(42);
  std::uniform_int_distribution<int> letter('a', 'z');
  const int openai = metrics.provider_index("openai");
  ASSERT_GE(openai, 0);
  for (int i = 0; i < 1000; ++i) {
    std::string model = "rnd-";
    for (int c = 0; c < 12; ++c) model.push_back(static_cast<char>(letter(rng)));
    const int m = metrics.model_index(model);
    ASSERT_EQ(m, metrics.other_model_index()) << model;
    metrics.observe_request(openai, m, Metrics::Status::success, 0.1);
    metrics.add_tokens(openai, m, 10, 20);
  }
  const std::string text = metrics.expose();
  EXPECT_EQ(series_count(text, "ai_proxy_requests_total"), expected);
  EXPECT_EQ(series_count(text, "ai_proxy_tokens_total"), 2u * 4 * 2);
  EXPECT_EQ(series_count(text, "ai_proxy_request_duration_seconds_count"), 2u * 4);
  EXPECT_EQ(text.find("rnd-"), std::string::npos);
  EXPECT_EQ(
      value_of(text, "ai_proxy_requests_total", {{"provider", "openai"}, {"model", "other"}, {"status", "success"}}),
      1000);
  EXPECT_EQ(value_of(text, "ai_proxy_request_duration_seconds_count", {{"provider", "openai"}, {"model", "other"}}),
            1000);
  EXPECT_EQ(value_of(text, "ai_proxy_cost_usd_total", {{"provider", "openai"}, {"model", "other"}}), 0);

  EXPECT_EQ(metrics.model_index("gpt-4.1"), 0);
  EXPECT_EQ(metrics.model_index("other"), metrics.other_model_index());
  EXPECT_EQ(metrics.provider_index("nope"), -1);
}

TEST(MetricsTest, BuildsLabelSetsFromConfig) {
  config::Config config;
  config.upstreams["openai"].name = "openai";
  config.upstreams["holysheep"].name = "holysheep";
  config.upstreams["holysheep"].models = {{"gpt-4o", "hs-gpt-4o"}};
  config.pricing = {{"gpt-4.1", {8.00, 32.00}}};
  config.fallback.models = {{"claude-sonnet-4.5", "deepseek-v3.2"}};
  config.metrics.prefix = "ai_proxy";
  Metrics metrics(config);
  EXPECT_EQ(metrics.providers(), (std::vector<std::string>{"holysheep", "openai"}));
  // Every model the config names, then "other".
  EXPECT_EQ(metrics.models().size(), config.known_models().size() + 1);
  EXPECT_EQ(metrics.models().back(), "other");
  for (const auto& model : config.known_models()) EXPECT_NE(metrics.model_index(model), metrics.other_model_index());
  EXPECT_EQ(series_count(metrics.expose(), "ai_proxy_requests_total"), 2 * (config.known_models().size() + 1) * 3);
  metrics.add_tokens(metrics.provider_index("openai"), metrics.model_index("gpt-4.1"), 2'000'000, 0);
  EXPECT_EQ(value_of(metrics.expose(), "ai_proxy_cost_usd_total", {{"provider", "openai"}, {"model", "gpt-4.1"}}), 16);
}

TEST(MetricsTest, ConfiguredOtherIsNotDuplicated) {
  auto setup = test_setup();
  setup.models.push_back("other");
  setup.models.push_back("gpt-4.1");
  Metrics metrics(setup);
  EXPECT_EQ(metrics.models().size(), 4u);
  EXPECT_EQ(series_count(metrics.expose(), "ai_proxy_requests_total"), 2u * 4 * 3);
}

TEST(MetricsTest, CostFollowsPricing) {
  Metrics metrics(test_setup());
  const int p = metrics.provider_index("holysheep");
  metrics.add_tokens(p, metrics.model_index("gpt-4.1"), 1'000'000, 500'000);  // 8 + 16
  metrics.add_tokens(p, metrics.model_index("gpt-4.1"), 250'000, 0);          // + 2
  metrics.add_tokens(p, metrics.model_index("deepseek-v3.2"), 1000, 2000);    // 0.00042 + 0.0024
  metrics.add_tokens(p, metrics.model_index("unpriced-model"), 1000, 1000);   // no pricing: 0
  const std::string text = metrics.expose();
  EXPECT_DOUBLE_EQ(value_of(text, "ai_proxy_cost_usd_total", {{"provider", "holysheep"}, {"model", "gpt-4.1"}}), 26.0);
  EXPECT_NEAR(value_of(text, "ai_proxy_cost_usd_total", {{"provider", "holysheep"}, {"model", "deepseek-v3.2"}}),
              0.00282, 1e-12);
  EXPECT_EQ(value_of(text, "ai_proxy_cost_usd_total", {{"provider", "holysheep"}, {"model", "unpriced-model"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_cost_usd_total", {{"provider", "openai"}, {"model", "gpt-4.1"}}), 0);
  EXPECT_EQ(
      value_of(text, "ai_proxy_tokens_total", {{"provider", "holysheep"}, {"model", "gpt-4.1"}, {"type", "prompt"}}),
      1'250'000);
  EXPECT_EQ(value_of(text, "ai_proxy_tokens_total",
                     {{"provider", "holysheep"}, {"model", "gpt-4.1"}, {"type", "completion"}}),
            500'000);
}

config::Config reload_config() {
  config::Config config;
  config.upstreams["openai"].name = "openai";
  config.upstreams["holysheep"].name = "holysheep";
  config.upstreams["holysheep"].models = {{"gpt-4.1", "deepseek-v3.2"}};
  config.pricing = {{"gpt-4.1", {8.00, 32.00}}, {"deepseek-v3.2", {0.42, 1.20}}};
  config.metrics.prefix = "ai_proxy";
  return config;
}

TEST(MetricsTest, ReloadMayChangePricesButNotLabelSets) {
  const config::Config start = reload_config();
  Metrics metrics(start);
  EXPECT_EQ(metrics.reload_conflict(start), "");

  // New prices for the same models: accepted, and the cost follows them.
  config::Config cheaper = start;
  cheaper.pricing["gpt-4.1"] = {2.00, 4.00};
  cheaper.upstreams["openai"].base_url = "http://elsewhere/v1";  // anything else may change too
  EXPECT_EQ(metrics.reload_conflict(cheaper), "");
  const int p = metrics.provider_index("openai");
  const int m = metrics.model_index("gpt-4.1");
  metrics.add_tokens(p, m, 1'000'000, 0);  // 8
  metrics.set_pricing(cheaper.pricing);
  metrics.add_tokens(p, m, 1'000'000, 1'000'000);  // + 2 + 4
  EXPECT_DOUBLE_EQ(
      value_of(metrics.expose(), "ai_proxy_cost_usd_total", {{"provider", "openai"}, {"model", "gpt-4.1"}}), 14.0);
  // A model outside the start-up set is ignored ("other" stays free).
  metrics.set_pricing({{"other", {100, 100}}, {"brand-new", {100, 100}}});
  metrics.add_tokens(p, metrics.other_model_index(), 1'000'000, 1'000'000);
  EXPECT_EQ(value_of(metrics.expose(), "ai_proxy_cost_usd_total", {{"provider", "openai"}, {"model", "other"}}), 0);

  config::Config renamed = start;
  renamed.upstreams.erase("holysheep");
  renamed.upstreams["holysheep-v2"].name = "holysheep-v2";
  std::string why = metrics.reload_conflict(renamed);
  EXPECT_EQ(why.rfind("upstreams: ", 0), 0u) << why;
  EXPECT_NE(why.find("restart"), std::string::npos) << why;

  config::Config added = start;
  added.upstreams["third"].name = "third";
  EXPECT_EQ(metrics.reload_conflict(added).rfind("upstreams: ", 0), 0u);

  config::Config new_model = start;
  new_model.pricing["claude-sonnet-4.5"] = {3.00, 15.00};
  why = metrics.reload_conflict(new_model);
  EXPECT_EQ(why.rfind("pricing: ", 0), 0u) << why;
  EXPECT_NE(why.find("restart"), std::string::npos) << why;

  config::Config unpriced = start;
  unpriced.pricing.erase("deepseek-v3.2");
  EXPECT_EQ(metrics.reload_conflict(unpriced).rfind("pricing: ", 0), 0u);

  config::Config prefix = start;
  prefix.metrics.prefix = "llm_gw";
  EXPECT_EQ(metrics.reload_conflict(prefix).rfind("metrics.prefix: ", 0), 0u);
}

// A sink that holds spdlog's worker thread until released: stdout into a pipe nobody reads.
class StuckSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void release() {
    std::lock_guard lock(gate_);
    released_ = true;
    cv_.notify_all();
  }
  std::atomic<bool> entered{false};

 protected:
  void sink_it_(const spdlog::details::log_msg&) override {
    entered = true;
    std::unique_lock lock(gate_);
    cv_.wait(lock, [this] { return released_; });
  }
  void flush_() override {}

 private:
  std::mutex gate_;
  std::condition_variable cv_;
  bool released_ = false;
};

TEST(MetricsTest, LogDroppedCountsLinesTheFullQueueOverran) {
  Metrics metrics(test_setup());
  // No spdlog thread pool yet: the family is there, at 0.
  if (!spdlog::thread_pool()) {
    EXPECT_EQ(value_of(metrics.expose(), "ai_proxy_log_dropped_total"), 0);
  }
  const std::string text0 = metrics.expose();
  EXPECT_NE(text0.find("# TYPE ai_proxy_log_dropped_total counter\n"), std::string::npos);

  spdlog::init_thread_pool(4, 1);
  auto sink = std::make_shared<StuckSink>();
  auto logger = std::make_shared<spdlog::async_logger>("stuck", sink, spdlog::thread_pool(),
                                                       spdlog::async_overflow_policy::overrun_oldest);
  logger->info("first");  // taken by the worker, which then hangs in the sink
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!sink->entered && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(sink->entered);
  for (int i = 0; i < 4 + 3; ++i) logger->info("line {}", i);  // 4 fill the queue, 3 overrun it (never block)
  EXPECT_EQ(value_of(metrics.expose(), "ai_proxy_log_dropped_total"), 3);
  sink->release();
}

// Issue 17: the rollout, fallback, judge and shadow families have one series
// set per experiment; the seed's request families keep their labels.
TEST(MetricsTest, ExperimentLabelIsBoundedByTheConfig) {
  Metrics::Setup setup = test_setup();
  setup.experiments = {"gpt", "claude"};
  Metrics metrics(setup);
  metrics.set_canary_weight(1, 25);
  metrics.set_rollout_state(0, "aborted");
  metrics.set_rollout_state(1, "progressing");
  metrics.add_rollback(0, "error_rate");
  metrics.add_fallback(1, "holysheep", "openai", "5xx");
  metrics.add_shadow_result(1, 0);
  metrics.add_rollback(7, "error_rate");  // no such experiment: ignored
  const std::string text = metrics.expose();
  EXPECT_EQ(value_of(text, "ai_proxy_canary_weight", {{"experiment", "gpt"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_canary_weight", {{"experiment", "claude"}}), 25);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "gpt"}, {"state", "aborted"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "claude"}, {"state", "aborted"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "claude"}, {"state", "progressing"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "gpt"}, {"reason", "error_rate"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "claude"}, {"reason", "error_rate"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_fallbacks_total",
                     {{"experiment", "claude"}, {"from", "holysheep"}, {"to", "openai"}, {"reason", "5xx"}}),
            1);
  EXPECT_EQ(value_of(text, "ai_proxy_shadow_requests_total", {{"experiment", "claude"}, {"result", "both_succeeded"}}),
            1);
  EXPECT_EQ(series_count(text, "ai_proxy_canary_weight"), 2u);
  EXPECT_EQ(text.find("experiment=\"default\""), std::string::npos);
  EXPECT_EQ(
      value_of(text, "ai_proxy_requests_total", {{"provider", "openai"}, {"model", "other"}, {"status", "error"}}), 0);
}

TEST(MetricsTest, FixedLabelSetsExistAtZero) {
  Metrics metrics(test_setup());
  const std::string text = metrics.expose();
  for (auto reason : kFallbackReasons) {
    EXPECT_EQ(
        value_of(text, "ai_proxy_fallbacks_total",
                 {{"experiment", "default"}, {"from", "holysheep"}, {"to", "openai"}, {"reason", std::string(reason)}}),
        0);
  }
  EXPECT_EQ(series_count(text, "ai_proxy_fallbacks_total"), 2 * std::size(kFallbackReasons));
  for (auto state : kRolloutStates) {
    EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "default"}, {"state", std::string(state)}}), 0);
  }
  for (auto reason : kRollbackReasons) {
    EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "default"}, {"reason", std::string(reason)}}),
              0);
  }
  for (auto op : kRedisOps) {
    EXPECT_EQ(value_of(text, "ai_proxy_redis_errors_total", {{"op", std::string(op)}}), 0);
  }
  EXPECT_EQ(value_of(text, "ai_proxy_canary_weight", {{"experiment", "default"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_inflight_requests"), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_overhead_seconds_count"), 0);
}

TEST(MetricsTest, EventsLandOnTheirFixedLabels) {
  Metrics metrics(test_setup());
  metrics.add_fallback(0, "holysheep", "openai", "timeout");
  metrics.add_fallback(0, "holysheep", "openai", "something-new");
  metrics.add_fallback(0, "holysheep", "nowhere", "timeout");  // ignored
  metrics.add_rollback(0, "error_rate");
  metrics.add_rollback(0, "cosmic-ray");
  metrics.add_redis_error("pin");
  metrics.add_redis_error("eval");
  metrics.set_canary_weight(0, 25);
  metrics.set_rollout_state(0, "paused");
  metrics.set_rollout_state(0, "aborted");
  metrics.set_rollout_state(0, "bogus");  // ignored: stays aborted
  metrics.inflight_add(3);
  metrics.inflight_add(-1);
  const std::string text = metrics.expose();
  EXPECT_EQ(value_of(text, "ai_proxy_fallbacks_total",
                     {{"experiment", "default"}, {"from", "holysheep"}, {"to", "openai"}, {"reason", "timeout"}}),
            1);
  EXPECT_EQ(value_of(text, "ai_proxy_fallbacks_total",
                     {{"experiment", "default"}, {"from", "holysheep"}, {"to", "openai"}, {"reason", "other"}}),
            1);
  EXPECT_EQ(text.find("nowhere"), std::string::npos);
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "default"}, {"reason", "error_rate"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "default"}, {"reason", "other"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_redis_errors_total", {{"op", "pin"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_redis_errors_total", {{"op", "other"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_canary_weight", {{"experiment", "default"}}), 25);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "default"}, {"state", "aborted"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "default"}, {"state", "paused"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_rollout_state", {{"experiment", "default"}, {"state", "progressing"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_inflight_requests"), 2);
}

TEST(MetricsTest, HistogramBucketsAreInclusiveAndCumulative) {
  Metrics metrics(test_setup());
  const int p = metrics.provider_index("openai");
  const int m = metrics.model_index("gpt-4.1");
  metrics.observe_request(p, m, Metrics::Status::error, 0.005);  // on a bound: counted in le="0.005"
  metrics.observe_request(p, m, Metrics::Status::timeout, 0.3);
  metrics.observe_request(p, m, Metrics::Status::success, 200);  // past 120: +Inf only
  metrics.observe_ttfb(p, m, 0.02);
  metrics.observe_overhead(0.00004);
  metrics.observe_overhead(2.0);
  const std::string text = metrics.expose();
  const Labels pm = {{"provider", "openai"}, {"model", "gpt-4.1"}};
  auto bucket = [&](const std::string& name, const Labels& base, const std::string& le) {
    Labels labels = base;
    labels["le"] = le;
    return value_of(text, name + "_bucket", labels);
  };
  EXPECT_EQ(bucket("ai_proxy_request_duration_seconds", pm, "0.005"), 1);
  EXPECT_EQ(bucket("ai_proxy_request_duration_seconds", pm, "0.25"), 1);
  EXPECT_EQ(bucket("ai_proxy_request_duration_seconds", pm, "0.5"), 2);
  EXPECT_EQ(bucket("ai_proxy_request_duration_seconds", pm, "120"), 2);
  EXPECT_EQ(bucket("ai_proxy_request_duration_seconds", pm, "+Inf"), 3);
  EXPECT_EQ(value_of(text, "ai_proxy_request_duration_seconds_count", pm), 3);
  EXPECT_DOUBLE_EQ(value_of(text, "ai_proxy_request_duration_seconds_sum", pm), 200.305);
  EXPECT_EQ(series_count(text, "ai_proxy_request_duration_seconds_bucket"), 2u * 4 * (kLatencyBuckets.size() + 1));
  EXPECT_EQ(bucket("ai_proxy_time_to_first_byte_seconds", pm, "0.01"), 0);
  EXPECT_EQ(bucket("ai_proxy_time_to_first_byte_seconds", pm, "0.025"), 1);
  EXPECT_EQ(bucket("ai_proxy_overhead_seconds", {}, "5e-05"), 1);
  EXPECT_EQ(bucket("ai_proxy_overhead_seconds", {}, "1"), 1);
  EXPECT_EQ(bucket("ai_proxy_overhead_seconds", {}, "+Inf"), 2);
  for (auto status : {"success", "error", "timeout"}) {
    EXPECT_EQ(
        value_of(text, "ai_proxy_requests_total", {{"provider", "openai"}, {"model", "gpt-4.1"}, {"status", status}}),
        1);
  }
}

TEST(MetricsTest, ConcurrentIncrementsSumExactly) {
  Metrics metrics(test_setup());
  const int p = metrics.provider_index("holysheep");
  const int m = metrics.model_index("gpt-4.1");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        metrics.inflight_add(1);
        metrics.observe_request(p, m, Metrics::Status::success, 0.5);  // exact in binary: sums stay exact
        metrics.observe_ttfb(p, m, 0.25);
        metrics.add_tokens(p, m, 3, 5);
        metrics.observe_overhead(0.0001);
        metrics.add_redis_error("get");
        metrics.inflight_add(-1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  constexpr double kTotal = kThreads * kPerThread;
  const std::string text = metrics.expose();
  const Labels pm = {{"provider", "holysheep"}, {"model", "gpt-4.1"}};
  EXPECT_EQ(value_of(text, "ai_proxy_requests_total",
                     {{"provider", "holysheep"}, {"model", "gpt-4.1"}, {"status", "success"}}),
            kTotal);
  EXPECT_EQ(value_of(text, "ai_proxy_request_duration_seconds_count", pm), kTotal);
  EXPECT_EQ(value_of(text, "ai_proxy_request_duration_seconds_sum", pm), kTotal * 0.5);
  EXPECT_EQ(value_of(text, "ai_proxy_time_to_first_byte_seconds_sum", pm), kTotal * 0.25);
  EXPECT_EQ(
      value_of(text, "ai_proxy_tokens_total", {{"provider", "holysheep"}, {"model", "gpt-4.1"}, {"type", "prompt"}}),
      kTotal * 3);
  EXPECT_EQ(value_of(text, "ai_proxy_tokens_total",
                     {{"provider", "holysheep"}, {"model", "gpt-4.1"}, {"type", "completion"}}),
            kTotal * 5);
  EXPECT_EQ(value_of(text, "ai_proxy_overhead_seconds_count"), kTotal);
  EXPECT_EQ(value_of(text, "ai_proxy_redis_errors_total", {{"op", "get"}}), kTotal);
  EXPECT_EQ(value_of(text, "ai_proxy_inflight_requests"), 0);
}

TEST(MetricsTest, ScrapesWhileWritingStayConsistent) {
  Metrics metrics(test_setup());
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(std::memory_order_relaxed) || i < 1000; ++i) {
        metrics.observe_overhead(0.0001 * (1 + (i + t) % 50));
        if (i > 1'000'000) break;
      }
    });
  }
  for (int scrape = 0; scrape < 20; ++scrape) {
    double previous = 0;
    for (const auto& sample : parse(metrics.expose())) {
      if (sample.name != "ai_proxy_overhead_seconds_bucket") continue;
      EXPECT_GE(sample.value, previous) << "cumulative buckets must not decrease";
      previous = sample.value;
    }
  }
  stop = true;
  for (auto& writer : writers) writer.join();
}

TEST(MetricsTest, ProcessMetricsArePlausible) {
  Metrics metrics(test_setup());
  const std::string text = metrics.expose();
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_GT(value_of(text, "process_resident_memory_bytes"), 0);
  EXPECT_GE(value_of(text, "process_virtual_memory_bytes"), value_of(text, "process_resident_memory_bytes"));
  EXPECT_GE(value_of(text, "process_cpu_seconds_total"), 0);
  EXPECT_GE(value_of(text, "process_open_fds"), 3);  // at least stdin/stdout/stderr
  EXPECT_GE(value_of(text, "process_max_fds"), value_of(text, "process_open_fds"));
  const double start = value_of(text, "process_start_time_seconds");
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600);
}

TEST(MetricsTest, PassesPromtoolCheckMetrics) {
  // scripts/install-deps.sh installs it: missing is a failure, not a skip.
  ASSERT_EQ(access("/usr/bin/promtool", X_OK), 0)
      << "/usr/bin/promtool is not installed (scripts/install-deps.sh installs it: apt-get install prometheus)";
  Metrics metrics(test_setup());
  const int p = metrics.provider_index("openai");
  metrics.observe_request(p, 0, Metrics::Status::success, 0.7);
  metrics.add_tokens(p, 0, 100, 200);
  metrics.add_fallback(0, "holysheep", "openai", "5xx");
  metrics.set_rollout_state(0, "progressing");
  metrics.set_canary_weight(0, 10);

  char path[] = "/tmp/canaryd_metrics_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = metrics.expose();
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);

  const std::string command = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  const int status = pclose(pipe);
  unlink(path);

  std::cout << "promtool output (" << output.size() << " bytes):\n" << output << std::endl;
  RecordProperty("promtool_output", output);
  ASSERT_TRUE(WIFEXITED(status));
  // Exit 1 and "error ..." lines are parse/format errors. Exit 3 means lint findings only
  // ("name: counter metrics should have "_total" suffix"): style, not a broken exposition.
  const int code = WEXITSTATUS(status);
  EXPECT_TRUE(code == 0 || code == 3) << "exit " << code << "\n" << output;
  EXPECT_EQ(output.find("error"), std::string::npos) << output;
}

// The judge v2's families (issue 14): bounded labels, all present from the start.
TEST(MetricsTest, JudgeFamilies) {
  Metrics metrics(test_setup());
  std::string text = metrics.expose();
  EXPECT_EQ(series_count(text, "ai_proxy_quality_answers_total"), 2 * kQualitySignals);
  EXPECT_EQ(series_count(text, "ai_proxy_quality_flagged_total"), 2 * kQualitySignals);
  EXPECT_EQ(series_count(text, "ai_proxy_analysis_check"), config::kCheckCount * std::size(kCheckOutcomes));
  EXPECT_EQ(series_count(text, "ai_proxy_analysis_verdicts_total"), std::size(kVerdictKinds));
  EXPECT_EQ(series_count(text, "ai_proxy_analysis_holds_total"), std::size(kHoldReasons));
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "default"}, {"reason", "quality"}}), 0);

  QualityFlags q;
  q.mark(QualitySignal::truncated, true);
  q.mark(QualitySignal::empty, false);
  const int canary = metrics.provider_index("holysheep");
  metrics.add_quality(canary, q);
  metrics.add_quality(-1, q);  // ignored
  std::array<int, config::kCheckCount> outcomes;
  outcomes.fill(-1);
  outcomes[0] = 0;  // error_rate pass
  outcomes[2] = 2;  // duration inconclusive
  metrics.observe_verdict(0, "inconclusive", outcomes, true, 0.15);
  metrics.add_analysis_hold(0, "srm");
  metrics.add_rollback(0, "quality");
  text = metrics.expose();
  EXPECT_EQ(value_of(text, "ai_proxy_quality_answers_total", {{"provider", "holysheep"}, {"signal", "truncated"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_quality_flagged_total", {{"provider", "holysheep"}, {"signal", "truncated"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_quality_answers_total", {{"provider", "holysheep"}, {"signal", "empty"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_quality_flagged_total", {{"provider", "holysheep"}, {"signal", "empty"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_quality_answers_total", {{"provider", "openai"}, {"signal", "truncated"}}), 0);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_verdicts_total", {{"experiment", "default"}, {"kind", "inconclusive"}}),
            1);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_check",
                     {{"experiment", "default"}, {"check", "error_rate"}, {"outcome", "pass"}}),
            1);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_check",
                     {{"experiment", "default"}, {"check", "error_rate"}, {"outcome", "fail"}}),
            0);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_check",
                     {{"experiment", "default"}, {"check", "duration"}, {"outcome", "inconclusive"}}),
            1);
  EXPECT_EQ(
      value_of(text, "ai_proxy_analysis_check", {{"experiment", "default"}, {"check", "ttfb"}, {"outcome", "pass"}}),
      0);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_srm_mismatch", {{"experiment", "default"}}), 1);
  EXPECT_DOUBLE_EQ(value_of(text, "ai_proxy_analysis_canary_user_share", {{"experiment", "default"}}), 0.15);
  EXPECT_EQ(value_of(text, "ai_proxy_analysis_holds_total", {{"experiment", "default"}, {"reason", "srm"}}), 1);
  EXPECT_EQ(value_of(text, "ai_proxy_rollbacks_total", {{"experiment", "default"}, {"reason", "quality"}}), 1);
}

}  // namespace
}  // namespace canaryd::metrics
