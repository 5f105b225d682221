// The glue between the pure rollout logic (src/rollout) and the running
// proxy: the hot path reads the weight, epoch and rollback flag from atomics
// and records outcomes into the lock-free windows; the control thread ticks
// the analysis and the state machine and publishes the result; the admin API
// drives it by hand.
//
// With Redis the state is shared across replicas (RolloutSync, rollout_sync.hpp):
// every local transition is applied here at once (the hot path never waits on
// Redis) and queued; the sync writes it with a compare-and-set on the stored
// version, and on a conflict hands back the stored state, on which the queued
// operator verbs and rollbacks are re-applied (analysis advances are dropped:
// the next tick judges again, so no step is advanced twice). Until the stored
// state has been read once, the canary gets no traffic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"

namespace canaryd::metrics {
class Metrics;
}
namespace canaryd::rollout {
struct Verdict;
struct Observation;
struct Transition;
}  // namespace canaryd::rollout

namespace canaryd::rollout {

class RolloutState;  // pimpl over rollout::Rollout + windows

class RolloutController {
 public:
  // One experiment's rollout (issue 17); `index` is its place in
  // config.experiments, the `experiment` label of its metrics.
  RolloutController(const config::ExperimentConfig& experiment, metrics::Metrics* metrics, const Clock& clock,
                    std::size_t index = 0);
  // The top-level split's experiment, "default" (tests, simulate).
  RolloutController(const config::Config& config, metrics::Metrics* metrics, const Clock& clock)
      : RolloutController(config::default_experiment(config), metrics, clock, 0) {}
  ~RolloutController();

  // Hot path, any thread.
  std::uint32_t threshold() const { return threshold_.load(std::memory_order_relaxed); }
  bool rolled_back() const { return rolled_back_.load(std::memory_order_relaxed); }
  // Aborted (or shared state not read yet): the canary must get nothing, not even shadows.
  bool canary_off() const { return canary_off_.load(std::memory_order_relaxed); }
  std::uint64_t epoch() const { return epoch_.load(std::memory_order_relaxed); }
  // The routes split between the arms (SPEC §3): the router classifies every
  // request by it (endpoints.cpp), and only their attempts are record()ed:
  // control-only routes (GET /v1/models, ...) have no canary counterpart, and
  // counting them would dilute control's error rate in the relative test.
  static bool judged_route(std::string_view path) {
    return path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/embeddings" ||
           path == "/v1/responses";
  }
  // `epoch`: epoch() when the request was split; an attempt of an older
  // epoch is dropped. nullopt records unconditionally.
  // The judge v2's form (issue 14): the attempt's error, duration, time to
  // first byte and the LLM quality signals of its answer.
  void record(Arm arm, const Observation& observation, std::optional<std::uint64_t> epoch = std::nullopt);
  // A call without a separate first byte (tests, old callers): TTFB = latency.
  void record(Arm arm, bool error, std::chrono::nanoseconds latency, std::optional<std::uint64_t> epoch = std::nullopt);
  // The split assigned this request's user to `arm` (not forced by the
  // override header): the judge's sample-ratio check. `user_hash` is
  // split::key_hash's user hash. Same epoch rule as record().
  void record_user(Arm arm, std::uint64_t user_hash, std::optional<std::uint64_t> epoch = std::nullopt);
  // True when a fallback fits the budget (and counts it).
  bool take_fallback();

  // Control plane.
  void tick();
  nlohmann::json status() const;
  // The last verdict alone (GET /admin/verdict, Argo Rollouts' Web provider):
  // its JSON, or {"kind":"inconclusive","reason":"no analysis has run yet"}.
  nlohmann::json verdict() const;
  // An operator's verb (admin/api.cpp parses them from /admin/rollout/*), the
  // verbs of `kubectl argo rollouts`. `weight` is validated by the caller
  // (validate_weight). Returns whether the state changed (a verb with nothing
  // to do changes nothing and logs nothing).
  enum class Verb { pause, resume, promote, abort, retry, weight };
  bool operate(Verb verb, double weight = 0);
  // A reload: new steps/thresholds; the current state, step and weight stay.
  // A changed analysis.window swaps in new, empty windows (recorders on other
  // threads move over at their next record(); the old ones are kept alive).
  void reconfigure(const config::ExperimentConfig& experiment);
  void reconfigure(const config::Config& config) { reconfigure(config::default_experiment(config)); }
  const std::string& experiment() const { return name_; }
  std::size_t index() const { return index_; }
  // analysis.interval as last configured (RolloutSync sizes the lease from it).
  config::Duration analysis_interval() const;

  // ---- Shared state: called by RolloutSync (any thread; all take the mutex) ----

  // One compare-and-set the sync should attempt.
  struct SharedWrite {
    std::optional<std::uint64_t> expected;  // stored version it replaces; nullopt: the key must be absent
    std::uint64_t version = 0;              // the version being written
    std::string value;                      // rollout::encode(status)
    bool needs_lease = false;               // carries an analysis advance: only the lease holder may write it
    std::size_t ops = 0;                    // queued operations it covers
  };

  // Switches to shared mode: no canary traffic until shared_observed() has
  // been called once. `on_change` is called (without the mutex, from the
  // thread that made the change) after every local transition.
  void enable_shared(std::function<void()> on_change);
  // The local state the store has not confirmed yet, if any.
  std::optional<SharedWrite> shared_pending() const;
  // The compare-and-set of `write` succeeded.
  void shared_written(const SharedWrite& write);
  // The stored state as read (GET, or returned by a failed compare-and-set);
  // nullopt = no key. Adopts it and re-applies the queued local operations
  // (not analysis advances). `force`: adopt even when it is the version we are
  // based on (a write refused for want of the lease). False when the stored
  // text is malformed (nothing changes).
  bool shared_observed(const std::optional<std::string>& stored, bool force = false);
  // Whether this replica holds the advance lease (analysis advances need it).
  void set_lease(bool held);
  // The last round trip to the store worked (for status()).
  void set_shared_healthy(bool healthy);
  bool shared_loaded() const;

 private:
  friend class RolloutState;
  struct Op;       // one local transition, replayable on a newer stored state
  void publish();  // copies the state machine's weight/state into the atomics and metrics (mutex held)
  // Runs one operation on the state machine; logs and counts a transition
  // (not when replayed on a newer stored state: it was counted already). Mutex held.
  bool apply(const Op& op, bool replay);
  // After a transition or an adopted stored state: a new epoch out of a
  // rollback (retry, weight 0) restarts the windows empty (mutex held).
  void restart_judging_on_new_epoch(std::uint64_t epoch_before);
  // Keeps the latest verdict in the status without letting it move the state (mutex held).
  void record_verdict_only(const rollout::Verdict& verdict);
  void notify();

  std::string name_;       // the experiment's name (logs, status)
  std::size_t index_ = 0;  // its index in config.experiments (metric labels)
  std::unique_ptr<RolloutState> state_;
  mutable std::mutex mu_;
  metrics::Metrics* metrics_;
  const Clock& clock_;
  std::atomic<std::uint32_t> threshold_{0};
  std::atomic<bool> rolled_back_{false};
  std::atomic<bool> canary_off_{false};
  std::atomic<std::uint64_t> epoch_{0};

  // Shared mode, under mu_.
  bool shared_ = false;
  bool loaded_ = false;
  bool lease_ = false;
  bool shared_healthy_ = false;
  bool dirty_ = false;                      // local state differs from the confirmed stored one
  std::optional<std::uint64_t> confirmed_;  // the stored version we are based on; nullopt: no key
  std::function<void()> on_change_;
};

}  // namespace canaryd::rollout
