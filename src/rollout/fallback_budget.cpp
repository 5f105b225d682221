#include "rollout/fallback_budget.hpp"

#include <algorithm>

namespace canaryd::rollout {

FallbackBudget::FallbackBudget(double budget, Floor floor) : budget_(budget), floor_(floor), tokens_(floor.burst) {}

bool FallbackBudget::allow(Clock::Steady::time_point now, std::uint64_t requests_in_window,
                           std::uint64_t fallbacks_in_window) {
  std::lock_guard lock(mutex_);
  if (static_cast<double>(fallbacks_in_window) < budget_ * static_cast<double>(requests_in_window)) return true;
  if (started_ && now > last_) {
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(floor_.burst, tokens_ + elapsed * floor_.per_second);
  }
  if (!started_ || now > last_) last_ = now;
  started_ = true;
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  return false;
}

void FallbackBudget::set_budget(double budget) {
  std::lock_guard lock(mutex_);
  budget_ = budget;
}

double FallbackBudget::budget() const {
  std::lock_guard lock(mutex_);
  return budget_;
}

}  // namespace canaryd::rollout
