#include "rollout/state_machine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {

namespace {

using nlohmann::json;

json weight_json(double w) {
  if (std::isfinite(w) && w == std::floor(w)) return json(static_cast<std::int64_t>(w));
  return json(w);
}

std::string weight_text(double w) {
  char buf[32];
  if (w == std::floor(w)) {
    std::snprintf(buf, sizeof buf, "%.0f", w);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", w);
  }
  return buf;
}

// Same units as the config ("10m", "30s", "500ms", "0").
std::string format_duration(config::Duration d) {
  const auto ms = d.count();
  if (ms == 0) return "0";
  if (ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::optional<config::Duration> parse_duration_text(std::string_view text) {
  if (text == "0") return config::Duration{0};
  std::size_t i = 0;
  std::int64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (n > (INT64_MAX / 10) - 10) return std::nullopt;
    n = n * 10 + (text[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  const std::string_view unit = text.substr(i);
  if (unit == "ms") return config::Duration{n};
  if (unit == "s") return config::Duration{n * 1000};
  if (unit == "m") return config::Duration{n * 60000};
  if (unit == "h") return config::Duration{n * 3600000};
  return std::nullopt;
}

std::int64_t unix_ms(Clock::Wall::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The bounded label for a rollback caused by a verdict (rollbacks_total{reason}).
std::string_view failure_cause(const Verdict& v) {
  if (v.error_rate_failed && v.latency_failed) return "error_rate_and_latency";
  if (v.latency_failed) return "latency";
  if (v.quality_failed && !v.error_rate_failed) return "quality";
  return "error_rate";
}

}  // namespace

std::string_view state_name(State state) {
  switch (state) {
    case State::progressing: return "progressing";
    case State::paused: return "paused";
    case State::promoted: return "promoted";
    case State::aborted: return "aborted";
  }
  return "paused";
}

std::optional<State> parse_state(std::string_view name) {
  for (State s : kAllStates) {
    if (state_name(s) == name) return s;
  }
  return std::nullopt;
}

std::string validate_weight(double weight) {
  if (!std::isfinite(weight) || weight < 0 || weight > 100) {
    return "weight must be a number from 0 to 100";
  }
  const double hundredths = weight * 100.0;
  if (std::fabs(hundredths - std::round(hundredths)) > 1e-6) {
    return "weight may have at most two decimals";
  }
  return "";
}

// ---- JSON -----------------------------------------------------------------

json to_json(const Status& s) {
  json steps = json::array();
  for (const auto& step : s.steps) {
    steps.push_back({{"weight", weight_json(step.weight)}, {"pause", format_duration(step.pause)}});
  }
  return json{{"state", state_name(s.state)},
              {"step", s.step},
              {"weight", weight_json(s.weight)},
              {"steps", std::move(steps)},
              {"since", s.since},
              {"reason", s.reason},
              {"verdict", s.verdict ? to_json(*s.verdict) : json(nullptr)},
              {"version", s.version},
              {"epoch", s.epoch}};
}

std::string encode(const Status& s) {
  json j = to_json(s);
  j["step_started_unix_ms"] = s.step_started_unix_ms;
  return j.dump();
}

std::optional<Status> decode(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  // Field access throws on a wrong type; keep that inside: callers are on the
  // request path's event loop.
  try {
    Status s;
    auto state = parse_state(j.at("state").get<std::string>());
    if (!state) return std::nullopt;
    s.state = *state;
    s.step = j.at("step").get<std::size_t>();
    s.weight = j.at("weight").get<double>();
    if (!validate_weight(s.weight).empty()) return std::nullopt;
    for (const auto& step : j.at("steps")) {
      config::RolloutStep rs;
      rs.weight = step.at("weight").get<double>();
      auto pause = parse_duration_text(step.at("pause").get<std::string>());
      if (!pause) return std::nullopt;
      rs.pause = *pause;
      s.steps.push_back(rs);
    }
    s.since = j.at("since").get<std::string>();
    s.reason = j.at("reason").get<std::string>();
    const json& v = j.at("verdict");
    if (!v.is_null()) {
      Verdict verdict;
      if (!verdict_from_json(v, verdict)) return std::nullopt;
      s.verdict = std::move(verdict);
    }
    s.version = j.at("version").get<std::uint64_t>();
    s.epoch = j.at("epoch").get<std::uint64_t>();
    s.step_started_unix_ms = j.value("step_started_unix_ms", std::int64_t{0});
    return s;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

// ---- Rollout --------------------------------------------------------------

Rollout::Rollout(config::RolloutConfig config, const Clock& clock) : config_(std::move(config)), clock_(clock) {
  since_ = rfc3339(clock_.wall());
  step_started_ = clock_.now();
  step_started_wall_ = clock_.wall();
  if (config_.steps.empty()) {
    state_ = State::paused;
    weight_ = 0;
    reason_ = "no rollout steps configured: weight 0 until set by hand";
  } else {
    state_ = State::progressing;
    weight_ = config_.steps.front().weight;
    reason_ = "rollout started";
  }
}

Transition Rollout::change(State to, std::size_t step, double weight, std::string reason, std::string_view cause) {
  Transition t{state_, to, step, weight, reason, cause};
  state_ = to;
  step_ = step;
  weight_ = weight;
  reason_ = std::move(reason);
  since_ = rfc3339(clock_.wall());
  ++version_;
  return t;
}

void Rollout::start_step_timer() {
  step_started_ = clock_.now();
  step_started_wall_ = clock_.wall();
}

std::size_t Rollout::aligned_step() const {
  const auto& steps = config_.steps;
  if (steps.empty()) return 0;
  if (step_ < steps.size() && steps[step_].weight == weight_) return step_;
  // The weight was set by hand: continue from the last step at or below it.
  std::size_t best = 0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].weight <= weight_) best = i;
  }
  return best;
}

std::optional<Transition> Rollout::advance(std::string reason, std::string_view cause) {
  const auto& steps = config_.steps;
  if (steps.empty()) return std::nullopt;
  const std::size_t from = aligned_step();
  if (from + 1 < steps.size()) {
    start_step_timer();
    return change(State::progressing, from + 1, steps[from + 1].weight, std::move(reason), cause);
  }
  return change(State::promoted, from, weight_, std::move(reason), cause);
}

std::optional<Transition> Rollout::rollback(std::string reason, std::string_view cause) {
  ++epoch_;
  return change(State::aborted, step_, 0, std::move(reason), cause);
}

std::optional<Transition> Rollout::tick(const Verdict& verdict) {
  verdict_ = verdict;
  if (verdict.kind == Verdict::Kind::fail) {
    const bool rollback_policy = config_.on_failure == config::OnFailure::rollback;
    // A paused canary still serving users is rolled back too: pausing holds the
    // weight, it does not switch off the safety net.
    if (state_ == State::progressing || (state_ == State::paused && rollback_policy && weight_ > 0)) {
      if (rollback_policy) return rollback("rollback: " + verdict.reason, failure_cause(verdict));
      return change(State::paused, step_, weight_, "paused by analysis: " + verdict.reason, failure_cause(verdict));
    }
    return std::nullopt;
  }
  // The judge asks to hold (a sample-ratio mismatch, or inconclusive for
  // inconclusive_limit looks): pause with its reason, whatever on_failure
  // says; the canary keeps its weight and the safety net above stays on.
  if (!verdict.hold.empty() && state_ == State::progressing) {
    return change(State::paused, step_, weight_, "paused by analysis: " + verdict.hold_reason,
                  verdict.hold == "srm" ? "srm" : "inconclusive");
  }
  if (state_ != State::progressing || verdict.kind != Verdict::Kind::pass || !config_.auto_promote ||
      config_.steps.empty()) {
    return std::nullopt;
  }
  const std::size_t step = std::min(step_, config_.steps.size() - 1);
  if (clock_.now() - step_started_ < config_.steps[step].pause) return std::nullopt;
  return advance(step + 1 < config_.steps.size() ? "step " + std::to_string(step) + " passed analysis, advancing"
                                                 : "last step passed analysis, promoted",
                 "analysis");
}

std::optional<Transition> Rollout::pause(std::string reason) {
  if (state_ != State::progressing) return std::nullopt;
  return change(State::paused, step_, weight_, std::move(reason), "operator");
}

std::optional<Transition> Rollout::resume() {
  if (state_ != State::paused || config_.steps.empty()) return std::nullopt;
  const std::size_t step = aligned_step();
  // Below the first step (e.g. a hand-set 0): resuming starts the plan proper.
  const double weight = std::max(weight_, config_.steps[step].weight);
  start_step_timer();
  return change(State::progressing, step, weight, "resumed by operator", "operator");
}

std::optional<Transition> Rollout::promote() {
  if (state_ != State::progressing && state_ != State::paused) return std::nullopt;
  return advance("promoted by operator", "operator");
}

std::optional<Transition> Rollout::abort(std::string reason) {
  if (state_ == State::aborted) return std::nullopt;
  return rollback(std::move(reason), "manual");
}

std::optional<Transition> Rollout::retry() {
  if (state_ != State::aborted) return std::nullopt;
  ++epoch_;
  start_step_timer();
  if (config_.steps.empty()) {
    return change(State::paused, 0, 0, "retried; no rollout steps configured", "operator");
  }
  return change(State::progressing, 0, config_.steps.front().weight, "retried by operator", "operator");
}

Rollout::WeightResult Rollout::set_weight(double weight) {
  WeightResult result;
  result.error = validate_weight(weight);
  if (!result.error.empty()) return result;
  weight = std::round(weight * 100.0) / 100.0;
  if (state_ == State::paused && weight_ == weight) return result;
  // Weight 0 is a rollback by hand (SPEC §4: pins never survive a rollback):
  // a new epoch, or old pins would come back when the weight is raised again.
  if (weight == 0) ++epoch_;
  result.transition =
      change(State::paused, step_, weight, "weight set to " + weight_text(weight) + " by operator", "operator");
  return result;
}

Status Rollout::status() const {
  Status s;
  s.state = state_;
  s.step = step_;
  s.weight = weight_;
  s.steps = config_.steps;
  s.since = since_;
  s.reason = reason_;
  s.verdict = verdict_;
  s.version = version_;
  s.epoch = epoch_;
  s.step_started_unix_ms = unix_ms(step_started_wall_);
  return s;
}

void Rollout::restore(const Status& s) {
  state_ = s.state;
  step_ = config_.steps.empty() ? 0 : std::min(s.step, config_.steps.size() - 1);
  weight_ = s.weight;
  since_ = s.since;
  reason_ = s.reason;
  verdict_ = s.verdict;
  version_ = s.version;
  epoch_ = s.epoch;
  // Carry the step's elapsed time over through the wall clock, the only clock
  // replicas share.
  const auto now_wall = clock_.wall();
  step_started_wall_ = Clock::Wall::time_point{} + std::chrono::duration_cast<Clock::Wall::duration>(
                                                       std::chrono::milliseconds(s.step_started_unix_ms));
  if (step_started_wall_ > now_wall) step_started_wall_ = now_wall;
  step_started_ = clock_.now() - std::chrono::duration_cast<Clock::Steady::duration>(now_wall - step_started_wall_);
}

void Rollout::reconfigure(config::RolloutConfig config) {
  config_ = std::move(config);
  if (config_.steps.empty()) {
    step_ = 0;
    if (state_ == State::progressing) change(State::paused, 0, weight_, "no rollout steps configured", "operator");
  } else {
    step_ = std::min(step_, config_.steps.size() - 1);
  }
}

}  // namespace canaryd::rollout
