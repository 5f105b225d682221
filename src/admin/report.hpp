// The money side of a migration, live: per-arm tokens, cost and time to first
// byte, and the projected monthly cost and saving at the current request rate
// (the seed's "after 30 days" table, computed while the rollout runs). Served
// as GET /admin/report and printed by `canaryd ctl report`.
//
// record() runs on every I/O thread for every upstream attempt, so it only
// does relaxed atomic adds and lock-free window records (rollout/window.hpp).
// Requests, error rates and p50/p99 are not kept here: build() takes them from
// the rollout windows, so the report and the rollout verdict never disagree.
//
// Formulas (docs/observability.md), per arm over the analysis window W, with
// covered = min(W, time since start):
//   rate               = attempts in W / covered                      [req/s]
//   cost per request   = cost in W / attempts in W (since start when W is empty)
//   projected monthly  = cost per request × rate × 30 days
//   saving             = (control cost/request − canary cost/request)
//                        × (control rate + canary rate) × 30 days
// i.e. what moving all of today's traffic to the canary would save a month.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"

namespace canaryd::rollout {
class ArmWindow;
class CounterWindow;
}  // namespace canaryd::rollout

namespace canaryd::admin {

inline constexpr double kSecondsPerMonth = 30.0 * 24 * 3600;

class Report {
 public:
  Report(const Clock& clock, std::chrono::nanoseconds window);
  ~Report();
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;

  // One upstream attempt (the same attempts the rollout windows count).
  // ttfb: time from sending to the first response byte, when one came.
  void record(Arm arm, std::uint64_t prompt_tokens, std::uint64_t completion_tokens, double cost,
              std::optional<std::chrono::nanoseconds> ttfb) noexcept;

  // rollout_arms: RolloutController::status()["arms"] ({"control": {requests,
  // error_rate, p50_seconds, p99_seconds, ...}, "canary": {...}}); may be null.
  // Shape: {"window_seconds", "covered_seconds", "requests_per_second",
  //   "arms": {"control"|"canary": {requests, errors, error_rate, p50_seconds,
  //     p99_seconds, ttfb_p50_seconds, ttfb_p99_seconds, requests_total,
  //     prompt_tokens, completion_tokens, cost_usd, window_requests,
  //     window_cost_usd, requests_per_second, cost_per_request_usd,
  //     cost_per_1k_requests_usd, projected_monthly_requests,
  //     projected_monthly_cost_usd}},
  //   "projected_monthly_cost_usd", "projected_monthly_saving_usd" (null
  //   until both arms have requests), "saving_percent" (null likewise)}.
  nlohmann::json build(const nlohmann::json& rollout_arms) const;

 private:
  struct ArmAccount;

  const Clock& clock_;
  std::chrono::nanoseconds window_;
  Clock::Steady::time_point started_;
  std::array<std::unique_ptr<ArmAccount>, 2> arms_;
};

}  // namespace canaryd::admin
