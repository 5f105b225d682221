#include "server/rollout_controller.hpp"

#include <charconv>

#include "metrics/metrics.hpp"
#include "rollout/analysis.hpp"
#include "rollout/fallback_budget.hpp"
#include "rollout/state_machine.hpp"
#include "rollout/window.hpp"
#include "server/log.hpp"
#include "split/split.hpp"

namespace canaryd::server {

class RolloutState {
 public:
  RolloutState(const config::Config& cfg, const Clock& clock)
      : machine(cfg.rollout, clock),
        analysis(cfg.rollout.analysis),
        windows(std::chrono::duration_cast<std::chrono::nanoseconds>(cfg.rollout.analysis.window)),
        budget(cfg.fallback.budget) {}

  rollout::Rollout machine;             // under RolloutController::mu_
  config::AnalysisConfig analysis;      // under mu_
  rollout::Windows windows;             // lock-free
  rollout::FallbackBudget budget;       // has its own mutex (rare path)
};

namespace {

// rollout's causes -> the bounded ai_proxy_rollbacks_total{reason} values.
std::string_view rollback_reason(const rollout::Transition& t) {
  if (t.cause == "manual" || t.cause == "operator") return "manual";
  if (t.cause == "error_rate" || t.cause == "error_rate_and_latency") return "error_rate";
  if (t.cause == "latency") return "latency";
  return "other";
}

}  // namespace

RolloutController::RolloutController(const config::Config& config, metrics::Metrics* metrics, const Clock& clock)
    : state_(std::make_unique<RolloutState>(config, clock)), metrics_(metrics), clock_(clock) {
  std::lock_guard lock(mu_);
  publish();
}

RolloutController::~RolloutController() = default;

void RolloutController::publish() {
  const auto& m = state_->machine;
  const bool aborted = m.state() == rollout::State::aborted;
  threshold_.store(aborted ? 0 : split::weight_to_threshold(m.weight()), std::memory_order_relaxed);
  rolled_back_.store(aborted || m.weight() <= 0, std::memory_order_relaxed);
  epoch_.store(m.epoch(), std::memory_order_relaxed);
  if (metrics_) {
    metrics_->set_canary_weight(aborted ? 0 : m.weight());
    metrics_->set_rollout_state(rollout::state_name(m.state()));
  }
}

void RolloutController::record(Arm arm, bool error, std::chrono::nanoseconds latency) {
  state_->windows.record(arm, clock_.now(), error, latency);
}

bool RolloutController::take_fallback() {
  auto now = clock_.now();
  auto& w = state_->windows;
  std::uint64_t requests = w.snapshot(Arm::control, now).requests + w.snapshot(Arm::canary, now).requests;
  if (!state_->budget.allow(now, requests, w.fallbacks(now))) return false;
  w.record_fallback(now);
  return true;
}

void RolloutController::tick() {
  auto now = clock_.now();
  auto control = state_->windows.snapshot(Arm::control, now);
  auto canary = state_->windows.snapshot(Arm::canary, now);
  std::lock_guard lock(mu_);
  rollout::Verdict verdict = rollout::analyse(state_->analysis, control, canary);
  auto t = state_->machine.tick(verdict);
  if (t) {
    log::info("rollout transition", {{"from", rollout::state_name(t->from)},
                                      {"to", rollout::state_name(t->to)},
                                      {"step", t->step},
                                      {"weight", t->weight},
                                      {"reason", t->reason},
                                      {"cause", t->cause}});
    if (t->to == rollout::State::aborted && metrics_) metrics_->add_rollback(rollback_reason(*t));
  }
  publish();
}

nlohmann::json RolloutController::status() const {
  auto now = clock_.now();
  nlohmann::json j;
  {
    std::lock_guard lock(mu_);
    j = rollout::to_json(state_->machine.status());
  }
  j["arms"] = {{"control", rollout::to_json(state_->windows.snapshot(Arm::control, now))},
               {"canary", rollout::to_json(state_->windows.snapshot(Arm::canary, now))}};
  j["window_seconds"] = std::chrono::duration<double>(state_->windows.window()).count();
  return j;
}

AdminResult RolloutController::admin(std::string_view method, std::string_view path, std::string_view body) {
  AdminResult r;
  constexpr std::string_view kBase = "/admin/rollout";
  if (path == kBase) {
    if (method != "GET") {
      r.method_not_allowed = true;
      return r;
    }
    r.body = status();
    return r;
  }
  if (path.substr(0, kBase.size() + 1) != "/admin/rollout/") {
    r.not_found = true;
    return r;
  }
  std::string_view verb = path.substr(kBase.size() + 1);
  static constexpr std::string_view kVerbs[] = {"pause", "resume", "promote", "abort", "retry", "weight"};
  bool known = false;
  for (auto v : kVerbs) known |= (v == verb);
  if (!known) {
    r.not_found = true;
    return r;
  }
  if (method != "POST") {
    r.method_not_allowed = true;
    return r;
  }
  std::optional<rollout::Transition> t;
  {
    std::lock_guard lock(mu_);
    auto& m = state_->machine;
    if (verb == "pause") {
      t = m.pause();
    } else if (verb == "resume") {
      t = m.resume();
    } else if (verb == "promote") {
      t = m.promote();
    } else if (verb == "abort") {
      t = m.abort("aborted by operator");
    } else if (verb == "retry") {
      t = m.retry();
    } else {
      auto j = nlohmann::json::parse(body, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("weight") || !j["weight"].is_number()) {
        r.error = "the body must be JSON like {\"weight\": 25}";
        return r;
      }
      auto wr = m.set_weight(j["weight"].get<double>());
      if (!wr.error.empty()) {
        r.error = wr.error;
        return r;
      }
      t = wr.transition;
    }
    if (t) {
      log::info("rollout transition", {{"from", rollout::state_name(t->from)},
                                        {"to", rollout::state_name(t->to)},
                                        {"step", t->step},
                                        {"weight", t->weight},
                                        {"reason", t->reason},
                                        {"cause", "operator"}});
      if (t->to == rollout::State::aborted && metrics_) metrics_->add_rollback("manual");
    }
    publish();
  }
  r.body = status();
  return r;
}

void RolloutController::reconfigure(const config::Config& config) {
  std::lock_guard lock(mu_);
  state_->machine.reconfigure(config.rollout);
  state_->analysis = config.rollout.analysis;
  state_->budget.set_budget(config.fallback.budget);
  publish();
}

}  // namespace canaryd::server
