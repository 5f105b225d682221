// Shadow mode: a share of the split requests that control serves is sent,
// in the background, to the canary too; the client only ever gets control's
// answer and never waits for the shadow. Each pair is compared (compare.hpp)
// into metrics, a JSON log line and the report's "shadow" section.
//
// Bounded, because every shadow is a paid call: `shadow.percent` of the
// control-served split requests, at most `max_per_second` (a token bucket)
// and `max_in_flight` at once, per replica; nothing while the rollout is
// aborted. Streamed requests are shadowed as streams read to the end, so the
// canary sees exactly the request a user would send and the time to first
// byte compares like for like.
//
// Threads: admit() and the pair's life run on the I/O thread of the request
// (the shadow call is spawned on the same executor, so a pair needs no lock);
// the aggregates behind report() are under a mutex (a shadowed request is
// rare next to the hot path, and the mutex is taken once per pair).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"
#include "shadow/compare.hpp"

namespace spdlog {
class logger;
}
namespace canaryd::metrics {
class Metrics;
}
namespace canaryd::upstream {
class Pool;
}

namespace canaryd::log {
class AccessLog;
}

namespace canaryd::shadow {

class Shadow;

// One mirrored request. Created by Shadow::admit(); the proxy fills `control`
// (and feeds `control_stream` for a stream) and calls control_done(); the
// shadow call fills `shadow` and calls shadow_done(); the second of the two
// completes the comparison. If the proxy drops the pair without reporting
// (its client left), the comparison is dropped and counted.
class ShadowPair {
 public:
  // `experiment`: the index in config->experiments of the experiment whose
  // control served the request (its canary gets the shadow).
  ShadowPair(Shadow& owner, std::shared_ptr<const config::Config> config, std::size_t experiment = 0);
  ~ShadowPair();
  ShadowPair(const ShadowPair&) = delete;
  ShadowPair& operator=(const ShadowPair&) = delete;

  void control_done();
  void control_abandoned();
  void shadow_done();

  // With log_bodies: appends to one side's logged answer (control_text or
  // shadow_text), at most kMaxLoggedText per side so a runaway stream cannot
  // grow memory. Without log_bodies: nothing.
  static constexpr std::size_t kMaxLoggedText = 1 << 20;
  void log_text(std::string& side, std::string_view text) const;

  std::shared_ptr<const config::Config> config;  // the generation the pair was made under
  std::size_t experiment = 0;
  const config::ExperimentConfig& exp() const { return config->experiments.at(experiment); }
  std::string request_id;
  std::string path;
  std::string control_model;  // as sent to each arm
  std::string shadow_model;
  bool stream = false;
  bool log_bodies = false;
  std::string request_body;  // only with log_bodies
  AnswerSummary control;
  AnswerSummary shadow;
  StreamSummarizer control_stream;
  std::string control_text;  // only with log_bodies: the body, or the stream's events (bounded)
  std::string shadow_text;

 private:
  void finish();
  Shadow& owner_;
  bool control_reported_ = false;
  bool control_abandoned_ = false;
  bool shadow_reported_ = false;
  bool finished_ = false;
};

class Shadow {
 public:
  // metrics and access_log may be null (tests).
  Shadow(const Clock& clock, metrics::Metrics* metrics, log::AccessLog* access_log);
  ~Shadow();
  Shadow(const Shadow&) = delete;
  Shadow& operator=(const Shadow&) = delete;

  // Named, in this order, by metrics::Metrics::kShadowDrops.
  enum class Drop { rate, in_flight, rolled_back, control_incomplete };

  // At start-up and on each reload (control thread): opens shadow.bodies_file
  // when log_bodies is on. Throws std::runtime_error naming the file.
  void configure(const config::ShadowConfig& cfg);

  // For a split request control is about to serve: sampling, then the caps.
  // `canary_off`: the experiment's rollout is aborted. Returns null when not mirrored.
  std::shared_ptr<ShadowPair> admit(const std::shared_ptr<const config::Config>& config, std::size_t experiment,
                                    bool canary_off);

  // Sends the pair's request to the canary on `ex` (the request's own I/O
  // thread) and reads the answer to the end; never throws, never blocks.
  void start(const boost::asio::any_io_executor& ex, std::shared_ptr<ShadowPair> pair,
             std::shared_ptr<upstream::Pool> pool, std::string head, std::string body);

  // The report's "shadow" section (see docs/shadow.md).
  nlohmann::json report(const config::ShadowConfig& cfg) const;

  // The comparison of one finished pair (called by ShadowPair).
  void record(const ShadowPair& pair, const Comparison& c);
  void dropped(std::size_t experiment, Drop why);
  void shadow_call_ended() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  std::int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

 private:
  bool sample(double percent);
  bool take_token(double per_second);
  void write_bodies(const ShadowPair& pair, const nlohmann::json& line);

  const Clock& clock_;
  metrics::Metrics* metrics_;
  log::AccessLog* access_log_;
  std::atomic<std::int64_t> in_flight_{0};

  mutable std::mutex mu_;  // everything below
  double tokens_ = 0;
  std::optional<Clock::Steady::time_point> refilled_;
  std::string bodies_path_;
  std::shared_ptr<spdlog::logger> bodies_;

  struct Totals {
    std::uint64_t pairs = 0;
    std::uint64_t results[4] = {};
    std::uint64_t dropped[4] = {};
    std::uint64_t status_equal = 0;
    std::uint64_t both_succeeded_compared = 0;  // denominators of the next two
    std::uint64_t finish_reason_equal = 0;
    std::uint64_t tool_names_equal = 0;
    std::uint64_t shadow_answered = 0;  // denominator of the json rates
    std::uint64_t shadow_json_valid = 0;
    std::uint64_t shadow_tool_arguments_valid = 0;
    double length_ratio_sum = 0;
    std::uint64_t length_ratios = 0;
    double latency_delta_sum = 0;
    double ttfb_delta_sum = 0;
    std::uint64_t ttfb_deltas = 0;
    std::uint64_t tokens[2][2] = {};  // [control|canary][prompt|completion]
    double cost[2] = {};              // [control|canary]
  } totals_;
  static constexpr std::size_t kRecent = 1024;  // the quantiles are over the last kRecent pairs
  std::deque<double> latency_deltas_;
  std::deque<double> ttfb_deltas_;
};

}  // namespace canaryd::shadow
