#include "rollout/controller.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>

#include "common/log.hpp"
#include "metrics/metrics.hpp"
#include "rollout/analysis.hpp"
#include "rollout/fallback_budget.hpp"
#include "rollout/judge.hpp"
#include "rollout/state_machine.hpp"
#include "rollout/window.hpp"
#include "split/split.hpp"

namespace canaryd::rollout {

struct RolloutController::Op {
  enum class Kind { tick, pause, resume, promote, abort, retry, weight };
  Kind kind = Kind::tick;
  rollout::Verdict verdict;  // tick
  double weight = 0;         // weight
  bool advance = false;      // a tick that advanced a step: never replayed on a newer stored state
};

class RolloutState {
 public:
  RolloutState(const config::ExperimentConfig& cfg, const Clock& clock)
      : machine(cfg.rollout, clock),
        analysis(cfg.rollout.analysis),
        budget(cfg.fallback.budget),
        judge(cfg.rollout.analysis),
        pins(cfg.split.pin_ttl.count() > 0) {
    replace_windows(cfg.rollout.analysis.window);
  }

  // The windows in use. Every reader loads the pointer once and uses that one
  // object, so a reload that swaps it never splits a read across two windows.
  rollout::Windows& windows() const { return *current.load(std::memory_order_acquire); }

  // A new, empty Windows over `window` (mutex held, or the constructor). An I/O
  // thread may still be inside record() on the old one, and nothing tells when
  // the last one leaves, so old windows stay allocated until the controller
  // goes (at most ~160 KB each; one per reload that changes analysis.window
  // and per retry: operator actions, rare).
  void replace_windows(config::Duration window) {
    built.push_back(std::make_unique<rollout::Windows>(std::chrono::duration_cast<std::chrono::nanoseconds>(window)));
    current.store(built.back().get(), std::memory_order_release);
  }

  rollout::Rollout machine;                              // under RolloutController::mu_
  config::AnalysisConfig analysis;                       // under mu_
  std::atomic<rollout::Windows*> current{nullptr};       // lock-free: the recorders' entry
  std::vector<std::unique_ptr<rollout::Windows>> built;  // under mu_: every Windows made, current last
  rollout::FallbackBudget budget;                        // has its own mutex (rare path)
  rollout::Judge judge;                                  // under mu_: the judge v2 (issue 14)
  bool pins;                                             // under mu_: split.pin_ttl > 0
  std::vector<RolloutController::Op> pending;            // under mu_: local operations the store has not confirmed
};

namespace {

// rollout's causes -> the bounded ai_proxy_rollbacks_total{reason} values.
std::string_view rollback_reason(const rollout::Transition& t) {
  if (t.cause == "manual" || t.cause == "operator") return "manual";
  if (t.cause == "error_rate" || t.cause == "error_rate_and_latency") return "error_rate";
  if (t.cause == "latency") return "latency";
  if (t.cause == "quality") return "quality";
  return "other";
}

// The verdict's metrics: per check its outcome (ai_proxy_analysis_check), the
// kind, the sample-ratio check.
void observe_verdict(metrics::Metrics& m, std::size_t experiment, const rollout::Verdict& v) {
  std::array<int, config::kCheckCount> outcomes;
  outcomes.fill(-1);
  for (const auto& c : v.checks) outcomes[static_cast<std::size_t>(c.id)] = static_cast<int>(c.outcome);
  const bool mismatch = v.srm && v.srm->outcome == rollout::Outcome::fail;
  const double share = v.srm && v.srm->outcome != rollout::Outcome::skipped ? v.srm->user_share
                                                                            : std::numeric_limits<double>::quiet_NaN();
  m.observe_verdict(experiment, rollout::verdict_kind_name(v.kind), outcomes, mismatch, share);
}

}  // namespace

RolloutController::RolloutController(const config::ExperimentConfig& experiment, metrics::Metrics* metrics,
                                     const Clock& clock, std::size_t index)
    : name_(experiment.name),
      index_(index),
      state_(std::make_unique<RolloutState>(experiment, clock)),
      metrics_(metrics),
      clock_(clock) {
  std::lock_guard lock(mu_);
  publish();
}

RolloutController::~RolloutController() = default;

void RolloutController::publish() {
  const auto& m = state_->machine;
  // Shared but not read yet: this replica may be restarting into an aborted
  // rollout, so the canary waits for the stored state.
  const bool off = m.state() == rollout::State::aborted || (shared_ && !loaded_);
  threshold_.store(off ? 0 : split::weight_to_threshold(m.weight()), std::memory_order_relaxed);
  rolled_back_.store(off || m.weight() <= 0, std::memory_order_relaxed);
  canary_off_.store(off, std::memory_order_relaxed);
  epoch_.store(m.epoch(), std::memory_order_relaxed);
  if (metrics_) {
    metrics_->set_canary_weight(index_, off ? 0 : m.weight());
    metrics_->set_rollout_state(index_, rollout::state_name(m.state()));
  }
}

void RolloutController::record(Arm arm, bool error, std::chrono::nanoseconds latency,
                               std::optional<std::uint64_t> epoch) {
  Observation o;
  o.error = error;
  o.duration = latency;
  o.ttfb = latency;
  record(arm, o, epoch);
}

void RolloutController::record(Arm arm, const Observation& observation, std::optional<std::uint64_t> epoch) {
  // An attempt decided under an older epoch (before a rollback, retry or
  // weight 0) belongs to a judgement that is over: a canary call that hung
  // through a rollback and times out after a retry must not count against
  // the retried canary.
  if (epoch && *epoch != epoch_.load(std::memory_order_relaxed)) return;
  state_->windows().record(arm, clock_.now(), observation);
}

void RolloutController::record_user(Arm arm, std::uint64_t user_hash, std::optional<std::uint64_t> epoch) {
  if (epoch && *epoch != epoch_.load(std::memory_order_relaxed)) return;
  state_->windows().record_user(arm, user_hash);
}

bool RolloutController::take_fallback() {
  auto now = clock_.now();
  auto& w = state_->windows();
  // The budget is a share of all requests in the analysis window: both arms'
  // attempts recorded so far (a fallen-back request counts twice, its canary
  // and its control attempt), not the one failing now: it is recorded after
  // this decision.
  std::uint64_t requests = w.snapshot(Arm::control, now).requests + w.snapshot(Arm::canary, now).requests;
  if (!state_->budget.allow(now, requests, w.fallbacks(now))) return false;
  w.record_fallback(now);
  return true;
}

bool RolloutController::apply(const Op& op, bool replay) {
  auto& m = state_->machine;
  const auto epoch_before = m.epoch();
  std::optional<rollout::Transition> t;
  switch (op.kind) {
    case Op::Kind::tick: t = m.tick(op.verdict); break;
    case Op::Kind::pause: t = m.pause(); break;
    case Op::Kind::resume: t = m.resume(); break;
    case Op::Kind::promote: t = m.promote(); break;
    case Op::Kind::abort: t = m.abort("aborted by operator"); break;
    case Op::Kind::retry: t = m.retry(); break;
    case Op::Kind::weight: t = m.set_weight(op.weight).transition; break;
  }
  if (!t) return false;
  restart_judging_on_new_epoch(epoch_before);
  log::info(replay ? "rollout transition re-applied on the shared state" : "rollout transition",
            {{"experiment", name_},
             {"from", rollout::state_name(t->from)},
             {"to", rollout::state_name(t->to)},
             {"step", t->step},
             {"weight", t->weight},
             {"reason", t->reason},
             {"cause", t->cause},
             {"version", m.version()},
             {"epoch", m.epoch()}});
  if (!replay && t->to == rollout::State::aborted && metrics_) metrics_->add_rollback(index_, rollback_reason(*t));
  if (!replay && t->to == rollout::State::paused && (t->cause == "srm" || t->cause == "inconclusive") && metrics_) {
    metrics_->add_analysis_hold(index_, t->cause);
  }
  return true;
}

void RolloutController::restart_judging_on_new_epoch(std::uint64_t epoch_before) {
  const auto& m = state_->machine;
  // A new epoch that is not a rollback (retry, or a weight set to 0) starts a
  // new judgement: the failures that caused the rollback are still in the
  // window, and would roll the retried canary back at the next tick. After a
  // rollback the windows stay, so the status still shows why.
  if (m.epoch() == epoch_before || m.state() == rollout::State::aborted) return;
  state_->replace_windows(state_->analysis.window);
}

void RolloutController::record_verdict_only(const rollout::Verdict& verdict) {
  auto s = state_->machine.status();
  s.verdict = verdict;
  state_->machine.restore(s);
}

void RolloutController::notify() {
  // on_change_ is set once, before the server starts, and never again.
  if (on_change_) on_change_();
}

void RolloutController::tick() {
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    // Under the mutex: the windows are replaced only under it (retry, weight
    // 0, a reload), so the judge sees one judgement's windows whole. The
    // recorders never take it: this holds up only the admin API (a look is
    // ~1 ms).
    auto& m = state_->machine;
    rollout::LookContext ctx;
    ctx.weight = m.state() == rollout::State::aborted ? 0 : m.weight();
    ctx.progressing = m.state() == rollout::State::progressing;
    ctx.pins = state_->pins;
    rollout::Verdict verdict = state_->judge.look(state_->windows(), clock_.now(), ctx);
    if (metrics_) observe_verdict(*metrics_, index_, verdict);
    // Shared: nothing moves before the stored state is known, and only the
    // lease holder advances (anyone may roll back or pause).
    if (shared_ && (!loaded_ || (verdict.kind == rollout::Verdict::Kind::pass && !lease_))) {
      record_verdict_only(verdict);
    } else {
      Op op;
      op.kind = Op::Kind::tick;
      op.verdict = std::move(verdict);
      const auto before = state_->machine.state();
      changed = apply(op, false);
      if (changed) {
        op.advance = op.verdict.kind == rollout::Verdict::Kind::pass && before == rollout::State::progressing;
        if (shared_) state_->pending.push_back(std::move(op));
      }
    }
    publish();
  }
  if (changed) notify();
}

nlohmann::json RolloutController::verdict() const {
  std::lock_guard lock(mu_);
  const auto status = state_->machine.status();
  if (!status.verdict) return {{"kind", "inconclusive"}, {"reason", "no analysis has run yet"}};
  return rollout::to_json(*status.verdict);
}

nlohmann::json RolloutController::status() const {
  auto now = clock_.now();
  nlohmann::json j;
  {
    std::lock_guard lock(mu_);
    j = rollout::to_json(state_->machine.status());
    j["experiment"] = name_;
    if (shared_) {
      j["sync"] = {{"store", "redis"},
                   {"loaded", loaded_},
                   {"healthy", shared_healthy_},
                   {"lease", lease_},
                   {"pending", state_->pending.size()},
                   {"confirmed_version", confirmed_ ? nlohmann::json(*confirmed_) : nlohmann::json(nullptr)}};
    } else {
      j["sync"] = {{"store", "memory"}};
    }
  }
  const auto& windows = state_->windows();
  j["arms"] = {{"control", rollout::to_json(windows.snapshot(Arm::control, now))},
               {"canary", rollout::to_json(windows.snapshot(Arm::canary, now))}};
  j["window_seconds"] = std::chrono::duration<double>(windows.window()).count();
  return j;
}

bool RolloutController::operate(Verb verb, double weight) {
  Op op;
  switch (verb) {
    case Verb::pause: op.kind = Op::Kind::pause; break;
    case Verb::resume: op.kind = Op::Kind::resume; break;
    case Verb::promote: op.kind = Op::Kind::promote; break;
    case Verb::abort: op.kind = Op::Kind::abort; break;
    case Verb::retry: op.kind = Op::Kind::retry; break;
    case Verb::weight:
      op.kind = Op::Kind::weight;
      op.weight = weight;
      break;
  }
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    changed = apply(op, false);
    if (changed && shared_) state_->pending.push_back(std::move(op));
    publish();
  }
  if (changed) notify();
  return changed;
}

void RolloutController::reconfigure(const config::ExperimentConfig& config) {
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    const auto version = state_->machine.version();
    state_->machine.reconfigure(config.rollout);
    const auto old_window = state_->analysis.window;
    state_->analysis = config.rollout.analysis;
    state_->judge.reconfigure(config.rollout.analysis);
    state_->pins = config.split.pin_ttl.count() > 0;
    if (config.rollout.analysis.window != old_window) {
      // Slices of the old length cannot be cut to the new one: judging restarts
      // on empty windows (insufficient data until min_requests again).
      state_->replace_windows(config.rollout.analysis.window);
      log::info("analysis window changed: the rollout windows restart empty",
                {{"experiment", name_},
                 {"key", "rollout.analysis.window"},
                 {"from_seconds", std::chrono::duration<double>(old_window).count()},
                 {"to_seconds", std::chrono::duration<double>(config.rollout.analysis.window).count()}});
    }
    state_->budget.set_budget(config.fallback.budget);
    changed = state_->machine.version() != version;
    publish();
  }
  if (changed) notify();
}

config::Duration RolloutController::analysis_interval() const {
  std::lock_guard lock(mu_);
  return state_->analysis.interval;
}

// ---- Shared state -----------------------------------------------------------

void RolloutController::enable_shared(std::function<void()> on_change) {
  std::lock_guard lock(mu_);
  shared_ = true;
  loaded_ = false;
  on_change_ = std::move(on_change);
  publish();
}

std::optional<RolloutController::SharedWrite> RolloutController::shared_pending() const {
  std::lock_guard lock(mu_);
  const auto& m = state_->machine;
  if (!shared_ || !loaded_) return std::nullopt;
  // Nothing to write while we stand on the stored version. A status write
  // needs no version bump when the key is missing (first start, Redis flushed).
  if (confirmed_ && *confirmed_ == m.version()) return std::nullopt;
  SharedWrite w;
  w.expected = confirmed_;
  auto status = m.status();
  w.version = status.version;
  w.value = rollout::encode(status);
  w.ops = state_->pending.size();
  for (const auto& op : state_->pending) w.needs_lease |= op.advance;
  return w;
}

void RolloutController::shared_written(const SharedWrite& write) {
  std::lock_guard lock(mu_);
  confirmed_ = write.version;
  auto& pending = state_->pending;
  pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(std::min(write.ops, pending.size())));
  shared_healthy_ = true;
}

bool RolloutController::shared_observed(const std::optional<std::string>& stored_text, bool force) {
  std::optional<rollout::Status> stored;
  if (stored_text) {
    stored = rollout::decode(*stored_text);
    if (!stored) return false;
  }
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    auto& m = state_->machine;
    const bool first = !loaded_;
    loaded_ = true;
    shared_healthy_ = true;
    if (!stored) {
      // No key (first replica ever, or Redis lost it): our state is the last
      // known one and gets written as is.
      confirmed_.reset();
      if (first) {
        log::info("no shared rollout state yet: this replica writes its own",
                  {{"experiment", name_}, {"version", m.version()}});
      }
      publish();
      return true;
    }
    if (!force && confirmed_ && *confirmed_ == stored->version) {
      // Our base is current: queued local operations apply on top of it as they are.
      if (first) publish();
      return true;
    }
    const auto before = m.status();
    rollout::Status adopted = *stored;
    adopted.verdict = before.verdict;  // each replica judges its own traffic
    m.restore(adopted);
    restart_judging_on_new_epoch(before.epoch);
    confirmed_ = stored->version;
    std::vector<Op> kept;
    for (auto& op : state_->pending) {
      if (op.advance) continue;  // judged on an older state; the next tick judges again
      if (apply(op, true)) kept.push_back(op);
    }
    state_->pending.swap(kept);
    changed = !state_->pending.empty();
    if (first || before.state != adopted.state || before.weight != adopted.weight || before.step != adopted.step ||
        before.epoch != adopted.epoch) {
      log::info(first ? "rollout state loaded from the shared store" : "rollout state changed by another replica",
                {{"experiment", name_},
                 {"state", rollout::state_name(adopted.state)},
                 {"step", adopted.step},
                 {"weight", adopted.weight},
                 {"reason", adopted.reason},
                 {"version", adopted.version},
                 {"epoch", adopted.epoch}});
    }
    publish();
  }
  if (changed) notify();
  return true;
}

void RolloutController::set_lease(bool held) {
  std::lock_guard lock(mu_);
  if (held != lease_) log::info(held ? "rollout lease acquired" : "rollout lease lost", {{"experiment", name_}});
  lease_ = held;
}

void RolloutController::set_shared_healthy(bool healthy) {
  std::lock_guard lock(mu_);
  shared_healthy_ = healthy;
}

bool RolloutController::shared_loaded() const {
  std::lock_guard lock(mu_);
  return loaded_;
}

}  // namespace canaryd::rollout
