// The glue between the pure rollout logic (src/rollout) and the running
// proxy: the hot path reads the weight, epoch and rollback flag from atomics
// and records outcomes into the lock-free windows; the control thread ticks
// the analysis and the state machine and publishes the result; the admin API
// drives it by hand. With Redis the state is shared across replicas.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"

namespace canaryd::metrics {
class Metrics;
}

namespace canaryd::server {

struct AdminResult {
  nlohmann::json body;
  std::string error;   // 400 with this message
  bool not_found = false;
  bool method_not_allowed = false;
};

class RolloutState;  // pimpl over rollout::Rollout + windows

class RolloutController {
 public:
  RolloutController(const config::Config& config, metrics::Metrics* metrics, const Clock& clock);
  ~RolloutController();

  // Hot path, any thread.
  std::uint32_t threshold() const { return threshold_.load(std::memory_order_relaxed); }
  bool rolled_back() const { return rolled_back_.load(std::memory_order_relaxed); }
  std::uint64_t epoch() const { return epoch_.load(std::memory_order_relaxed); }
  void record(Arm arm, bool error, std::chrono::nanoseconds latency);
  // True when a fallback fits the budget (and counts it).
  bool take_fallback();

  // Control plane.
  void tick();
  nlohmann::json status() const;
  AdminResult admin(std::string_view method, std::string_view path, std::string_view body);
  // A reload: new steps/thresholds; the current state, step and weight stay.
  void reconfigure(const config::Config& config);

 private:
  void publish();  // copies the state machine's weight/state into the atomics and metrics (mutex held)

  std::unique_ptr<RolloutState> state_;
  mutable std::mutex mu_;
  metrics::Metrics* metrics_;
  const Clock& clock_;
  std::atomic<std::uint32_t> threshold_{0};
  std::atomic<bool> rolled_back_{false};
  std::atomic<std::uint64_t> epoch_{0};
};

}  // namespace canaryd::server
