// The fallback budget (SPEC §5, fallback.budget): caps how many failed canary
// calls are retried on control, so a dead canary cannot double control's load.
//
//   allow  <=>  fallbacks_in_window < budget * requests_in_window
//           or  a token is left in the floor bucket (refill `per_second`, cap `burst`)
//
// The ratio is over the analysis window (the caller passes both counts from
// Windows): "requests" are all the attempts recorded there, both arms; the
// floor keeps fallbacks working for a low-traffic service whose
// window holds too few requests for the ratio to allow any. Tokens are taken
// only when the ratio says no. budget 0 leaves just the floor.
#pragma once

#include <cstdint>
#include <mutex>

#include "canaryd/clock.hpp"

namespace canaryd::rollout {

// The low-traffic floor: a token bucket.
struct FallbackFloor {
  double per_second = 5;
  double burst = 10;
};

class FallbackBudget {
 public:
  using Floor = FallbackFloor;
  explicit FallbackBudget(double budget, Floor floor = Floor{});

  // Thread-safe. On true the caller performs the fallback and records it
  // (Windows::record_fallback), so the next call sees it counted.
  // `requests_in_window`: every request recorded in the analysis window, both
  // arms (RolloutController passes control's plus canary's attempts; the
  // failing request being decided is not recorded yet, so not included).
  bool allow(Clock::Steady::time_point now, std::uint64_t requests_in_window, std::uint64_t fallbacks_in_window);

  void set_budget(double budget);
  double budget() const;

 private:
  mutable std::mutex mutex_;  // fallbacks are the rare, already-failed path
  double budget_;
  Floor floor_;
  double tokens_;
  bool started_ = false;
  Clock::Steady::time_point last_{};
};

}  // namespace canaryd::rollout
