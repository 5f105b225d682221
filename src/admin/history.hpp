// The last 15 minutes of the rollout, per arm, for the status page's charts
// (GET /admin/history, /admin/ui): a bounded ring of samples taken on the
// control thread every `interval` (10 s by default; 90 samples).
//
// Rates come from deltas of the cumulative counters of Report::build()
// (requests_total, cost_usd) over the time that really passed between two
// samples, so a late timer does not inflate them; error rate and p99 are the
// rollout window's (RolloutController::status()["arms"]), i.e. what the
// analysis judged at that moment. Metrics are for Prometheus; this is only the
// small picture an operator looks at while deciding to press "abort".
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>

#include <nlohmann/json.hpp>

#include "canaryd/clock.hpp"

namespace canaryd::admin {

class History {
 public:
  static constexpr std::chrono::nanoseconds kDefaultInterval = std::chrono::seconds(10);
  static constexpr std::chrono::nanoseconds kDefaultSpan = std::chrono::minutes(15);

  // Keeps ceil(span / interval) samples (at least 1). `interval` is only
  // reported (the caller's timer sets the pace); rates use the measured gaps.
  explicit History(const Clock& clock, std::chrono::nanoseconds interval = kDefaultInterval,
                   std::chrono::nanoseconds span = kDefaultSpan);

  // rollout_status: RolloutController::status(); report: Report::build(arms).
  // Missing fields are tolerated (the arm's values become null). Control thread.
  void sample(const nlohmann::json& rollout_status, const nlohmann::json& report);

  // {"interval_seconds", "span_seconds", "capacity",
  //  "samples": [{"unix_ms", "time", "elapsed_seconds", "state", "step", "weight",
  //    "arms": {"control"|"canary": {"requests_per_second", "cost_per_1k_requests_usd",
  //      "error_rate", "p99_seconds", "window_requests"}}}]}   oldest first.
  // A rate is null when nothing measures it (no time passed, no request in the
  // interval for the cost, no request in the window for error rate and p99).
  // Any thread.
  nlohmann::json to_json() const;

  std::chrono::nanoseconds interval() const { return interval_; }
  std::size_t capacity() const { return capacity_; }

 private:
  struct Counters {
    double requests = 0;
    double cost = 0;
  };

  const Clock& clock_;
  const std::chrono::nanoseconds interval_;
  const std::chrono::nanoseconds span_;
  const std::size_t capacity_;

  mutable std::mutex mu_;
  std::deque<nlohmann::json> samples_;
  // The baseline of the next delta; starts at zero at construction, when the
  // report's counters are zero too, so the first sample already has rates.
  Clock::Steady::time_point last_time_;
  Counters last_[2];
};

}  // namespace canaryd::admin
