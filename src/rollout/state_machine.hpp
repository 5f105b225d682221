// The rollout state machine (SPEC §5): progressing -> paused -> promoted |
// aborted, the current step and the canary weight. The engine calls tick()
// every analysis interval with the latest verdict; operators call the verbs
// (pause, resume, promote, abort, retry, set_weight). Time comes from the
// injected Clock, so tests walk a whole rollout without sleeping.
//
// Not thread-safe: the owner serialises calls (one strand or a mutex) and
// publishes the weight to the request path itself.
//
// `epoch` counts rollbacks, aborts, retries and weights set to 0 by hand.
// Sticky pins are keyed by it,
// so bumping it invalidates every pin at once ("pins never survive a rollback").
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"
#include "rollout/analysis.hpp"

namespace canaryd::rollout {

enum class State { progressing, paused, promoted, aborted };

std::string_view state_name(State state);  // "progressing" | "paused" | "promoted" | "aborted"
std::optional<State> parse_state(std::string_view name);
constexpr State kAllStates[] = {State::progressing, State::paused, State::promoted, State::aborted};

struct Transition {
  State from;
  State to;
  std::size_t step;
  double weight;
  std::string reason;
  // Bounded, for metric labels (rollbacks_total{reason}): "analysis" (a step
  // advanced), "error_rate" | "latency" | "error_rate_and_latency" | "quality"
  // (a failing verdict), "srm" | "inconclusive" (paused by the judge),
  // "manual" (operator abort), "operator" (other verbs).
  std::string_view cause;
};

struct Status {
  State state = State::paused;
  std::size_t step = 0;
  double weight = 0;
  std::vector<config::RolloutStep> steps;
  std::string since;  // RFC 3339 wall time of the last transition
  std::string reason;
  std::optional<Verdict> verdict;  // the last verdict tick() saw; none before the first tick
  std::uint64_t version = 0;       // +1 on every transition (not on a mere verdict refresh)
  std::uint64_t epoch = 0;         // +1 on every rollback, abort, retry and weight 0
  // Wall time (ms since the Unix epoch) the current step began: lets a replica
  // that restores this status resume the step's pause timer where it was.
  std::int64_t step_started_unix_ms = 0;
};

// SPEC §6 shape: {"state","step","weight","steps":[{"weight","pause"}],"since",
// "reason","verdict":{...}|null,"version","epoch"}. The server adds "arms".
// Weights print as integers when whole ("weight": 10); pauses as durations ("10m").
nlohmann::json to_json(const Status& status);

// Compact, lossless form for the shared store (JSON with step_started_unix_ms).
std::string encode(const Status& status);
// nullopt on anything malformed; never throws.
std::optional<Status> decode(std::string_view text);

// "" when the weight is acceptable (0..100, at most two decimals), else why not.
std::string validate_weight(double weight);

class Rollout {
 public:
  Rollout(config::RolloutConfig config, const Clock& clock);

  // Every analysis interval. Records the verdict, then:
  //  - fail while progressing (or paused with traffic on the canary, under
  //    on_failure: rollback): on_failure (rollback = weight 0, aborted, epoch+1;
  //    pause = paused);
  //  - a hold (verdict.hold: sample-ratio mismatch, or inconclusive too long)
  //    while progressing: paused, weight kept, reason "paused by analysis: ...";
  //  - pass while progressing, auto_promote on, the step's pause elapsed: next
  //    step (from the last step: promoted);
  //  - inconclusive: nothing, ever.
  std::optional<Transition> tick(const Verdict& verdict);

  std::optional<Transition> pause(std::string reason = "paused by operator");
  // paused -> progressing; restarts the step's pause timer.
  std::optional<Transition> resume();
  // Advance one step now (from the last step: promoted); from progressing or paused.
  std::optional<Transition> promote();
  // weight 0, aborted, epoch+1; from any state but aborted.
  std::optional<Transition> abort(std::string reason);
  // aborted -> progressing at step 0, epoch+1.
  std::optional<Transition> retry();

  struct WeightResult {
    std::optional<Transition> transition;  // nullopt also when the weight was already that
    std::string error;                     // non-empty: invalid weight, nothing changed
  };
  // Operator override: the weight is set and the rollout paused, so the engine
  // does not move it until resume/promote.
  WeightResult set_weight(double weight);

  Status status() const;
  // Adopts a status (e.g. read from the shared store). The configured steps stay
  // this process's own; the step index is clamped to them.
  void restore(const Status& status);
  // Config reload: new steps/policy, current state kept, step index clamped.
  void reconfigure(config::RolloutConfig config);

  State state() const { return state_; }
  double weight() const { return weight_; }
  std::size_t step() const { return step_; }
  std::uint64_t epoch() const { return epoch_; }
  std::uint64_t version() const { return version_; }
  const config::RolloutConfig& config() const { return config_; }

 private:
  Transition change(State to, std::size_t step, double weight, std::string reason, std::string_view cause);
  std::optional<Transition> advance(std::string reason, std::string_view cause);
  std::optional<Transition> rollback(std::string reason, std::string_view cause);
  void start_step_timer();
  std::size_t aligned_step() const;

  config::RolloutConfig config_;
  const Clock& clock_;
  State state_ = State::paused;
  std::size_t step_ = 0;
  double weight_ = 0;
  std::string since_;
  Clock::Steady::time_point step_started_;
  Clock::Wall::time_point step_started_wall_;
  std::string reason_;
  std::optional<Verdict> verdict_;
  std::uint64_t version_ = 0;
  std::uint64_t epoch_ = 0;
};

}  // namespace canaryd::rollout
