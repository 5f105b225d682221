#include "rollout/judge.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <boost/math/special_functions/erf.hpp>

namespace canaryd::rollout {

namespace {

using config::CheckId;

constexpr double kNaN = CheckResult::kNone;

std::string percent(double rate) {
  if (!std::isfinite(rate)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", rate * 100.0);
  return buf;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3gs", s);
  return buf;
}

std::string num(double v, const char* fmt = "%.3g") {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// An e-value for people: "e=3.2e+04 of 900".
std::string evidence(double log_e, double threshold) {
  return "e=" + num(std::exp(log_e)) + " of " + num(std::exp(threshold));
}

double rate(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? kNaN : static_cast<double>(part) / static_cast<double>(whole);
}

std::uint64_t delta(std::uint64_t now, std::uint64_t before) { return now >= before ? now - before : now; }

// z with 1 - Phi(z) = p (upper quantile), for the latency threshold shown.
double upper_z(double p) {
  if (!(p > 0 && p < 1)) return kNaN;
  return std::sqrt(2.0) * boost::math::erfc_inv(2 * p);
}

bool statistical(CheckId id) { return id != CheckId::p99_latency; }

std::string_view label(CheckId id) {
  switch (id) {
    case CheckId::error_rate: return "error rate";
    case CheckId::critical_error_rate: return "critical error rate";
    case CheckId::duration: return "duration";
    case CheckId::ttfb: return "time to first byte";
    case CheckId::p99_latency: return "p99 latency";
    case CheckId::truncated: return "truncated answers (finish_reason length)";
    case CheckId::content_filter: return "content-filtered answers";
    case CheckId::empty: return "empty answers";
    case CheckId::tool_call_json: return "tool calls whose arguments are not JSON";
    case CheckId::response_json: return "JSON-mode answers that are not JSON";
  }
  return "check";
}

std::array<stats::OddsRatioMonitor, kQualitySignals> quality_monitors(const config::AnalysisConfig& c) {
  std::array<stats::OddsRatioMonitor, kQualitySignals> out;
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    out[i] = stats::OddsRatioMonitor(1 + c.checks[config::kFirstQualityCheck + i].max_increase);
  }
  return out;
}

}  // namespace

Judge::Judge(const config::AnalysisConfig& config)
    : config_(config), errors_(1.0), quality_(quality_monitors(config)) {}

void Judge::reconfigure(const config::AnalysisConfig& config) {
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    const auto& before = config_.checks[config::kFirstQualityCheck + i];
    const auto& after = config.checks[config::kFirstQualityCheck + i];
    if (before.max_increase != after.max_increase || before.lower_is_worse != after.lower_is_worse) {
      quality_[i] = stats::OddsRatioMonitor(1 + after.max_increase);  // a new null: new evidence
    }
  }
  config_ = config;
}

void Judge::reset() {
  look_ = 0;
  last_canary_ = {};
  last_control_ = {};
  errors_.reset();
  quality_ = quality_monitors(config_);
  failing_.fill(0);
  inconclusive_looks_ = 0;
  srm_weight_.reset();
  srm_was_progressing_ = false;
  srm_weight_lowered_ = false;
}

double Judge::alpha_per_check() const {
  std::size_t k = 0;
  for (std::size_t i = 0; i < config::kCheckCount; ++i) {
    if (config_.checks[i].enabled && statistical(static_cast<CheckId>(i))) ++k;
  }
  return k == 0 ? config_.alpha : config_.alpha / static_cast<double>(k);
}

// ---- the checks ----------------------------------------------------------

CheckResult Judge::error_rate(const Snapshot& canary, const Snapshot& control, double alpha) const {
  CheckResult r;
  r.id = CheckId::error_rate;
  r.canary = rate(canary.errors, canary.requests);
  r.control = rate(control.errors, control.requests);
  r.bound = config_.max_error_rate;
  if (canary.requests == 0) {
    r.outcome = Outcome::inconclusive;
    r.detail = "no canary requests in the window";
    return r;
  }
  const bool relative = config_.relative_to_control && control.requests > 0;
  const bool above = canary.error_rate > config_.max_error_rate;
  const std::string rates = "canary error rate " + percent(canary.error_rate) + (above ? " above " : ", max ") +
                            percent(config_.max_error_rate);
  if (relative) {
    r.estimate = errors_.odds_ratio_estimate();
    r.statistic = errors_.log_e_value();
    r.threshold = -std::log(alpha);
    const bool worse = errors_.rejects(alpha);
    if (above && worse) {
      r.outcome = Outcome::fail;
      r.detail = rates + ", significantly worse than control " + percent(control.error_rate) + " (" +
                 evidence(r.statistic, r.threshold) + ")";
    } else {
      r.outcome = Outcome::pass;
      r.detail = rates + (above ? " but not significantly worse than control " : ", control ") +
                 percent(control.error_rate) + " (" + evidence(r.statistic, r.threshold) + ")";
    }
    return r;
  }
  // Absolute: nothing to compare with (or relative_to_control: false).
  r.threshold = -std::log(stats::alpha_spent(alpha, look_));
  bool fail = false;
  if (config_.max_error_rate <= 0) {
    fail = canary.errors > 0;
    r.statistic = fail ? std::numeric_limits<double>::infinity() : 0;
  } else if (config_.max_error_rate < 1) {
    r.statistic = stats::binomial_bound_log_e(canary.requests, canary.errors, config_.max_error_rate);
    fail = above && r.statistic >= r.threshold;
  }
  r.outcome = fail ? Outcome::fail : Outcome::pass;
  r.detail = rates + (fail ? ", significantly (" : " (") + evidence(r.statistic, r.threshold) + "; " +
             (config_.relative_to_control ? "no control traffic in the window" : "absolute") + ")";
  return r;
}

CheckResult Judge::critical_error_rate(const Snapshot& canary, const Snapshot& control, double alpha) const {
  CheckResult r;
  r.id = CheckId::critical_error_rate;
  r.critical = true;
  r.canary = rate(canary.errors, canary.requests);
  r.control = rate(control.errors, control.requests);
  r.bound = config_.critical_error_rate;
  if (canary.requests == 0) {
    r.outcome = Outcome::inconclusive;
    r.detail = "no canary requests in the window";
    return r;
  }
  r.threshold = -std::log(stats::alpha_spent(alpha, look_));
  const double p0 = config_.critical_error_rate;
  r.statistic = p0 < 1 ? stats::binomial_bound_log_e(canary.requests, canary.errors, p0) : 0;
  const bool far_above = p0 < 1 && canary.error_rate > p0 && r.statistic >= r.threshold;
  // The provider is down for both arms: moving users to control helps nobody.
  const bool both_down = control.requests > 0 && control.error_rate >= p0;
  if (far_above && !both_down) {
    r.outcome = Outcome::fail;
    r.detail = "canary error rate " + percent(canary.error_rate) + " above " + percent(config_.max_error_rate) +
               ", far above the critical " + percent(p0) + " (" + evidence(r.statistic, r.threshold) + ")";
  } else {
    r.outcome = Outcome::pass;
    r.detail = "canary error rate " + percent(canary.error_rate) + ", critical " + percent(p0) +
               (far_above ? " (control " + percent(control.error_rate) + " as high: not the canary's fault)"
                          : " (" + evidence(r.statistic, r.threshold) + ")");
  }
  return r;
}

CheckResult Judge::latency(CheckId id, const Windows& windows, TimePoint now, double alpha) const {
  CheckResult r;
  r.id = id;
  const auto metric = id == CheckId::ttfb ? LatencyMetric::ttfb : LatencyMetric::duration;
  const auto canary = windows.arm_window(Arm::canary).latency(now, metric);
  const auto control = windows.arm_window(Arm::control).latency(now, metric);
  // Pair the slices by time: each is a stratum.
  std::vector<stats::LatencyStratum> strata;
  std::size_t i = 0, j = 0;
  while (i < canary.size() && j < control.size()) {
    if (canary[i].epoch < control[j].epoch) {
      ++i;
    } else if (control[j].epoch < canary[i].epoch) {
      ++j;
    } else {
      strata.push_back({canary[i].values, control[j].values});
      ++i;
      ++j;
    }
  }
  const double max_increase = config_.max_latency_increase;
  r.bound = 1 + max_increase;
  const double tolerance = std::chrono::duration<double>(config_.latency_tolerance).count();
  const auto cmp =
      stats::compare_latency_stratified(strata, max_increase, kLatencyConfidence, 200, estimates_, tolerance);
  auto median_of = [this](const std::vector<LatencySlice>& slices) {
    if (!estimates_) return kNaN;
    std::vector<double> all;
    for (const auto& s : slices) all.insert(all.end(), s.values.begin(), s.values.end());
    if (all.empty()) return kNaN;
    auto mid = all.begin() + static_cast<std::ptrdiff_t>(all.size() / 2);
    std::nth_element(all.begin(), mid, all.end());
    return *mid;
  };
  r.canary = median_of(canary);
  r.control = median_of(control);
  r.estimate = cmp.ratio;
  const double level = stats::alpha_spent(alpha, look_);
  r.threshold = upper_z(level);
  r.statistic = cmp.z;
  const std::string name(label(id));
  if (cmp.canary_samples < kMinLatencySamples || cmp.control_samples < kMinLatencySamples) {
    r.outcome = Outcome::inconclusive;
    r.detail = name + ": " + std::to_string(cmp.canary_samples) + " canary and " + std::to_string(cmp.control_samples) +
               " control samples in the window's common slices, " + std::to_string(kMinLatencySamples) + " each needed";
    return r;
  }
  const bool slower = cmp.p < level;
  r.outcome = slower ? Outcome::fail : Outcome::pass;
  r.detail = name + " " + num(cmp.ratio, "%.2f") + "x control's (95% " + num(cmp.ratio_lower, "%.2f") + ".." +
             num(cmp.ratio_upper, "%.2f") + "; median " + seconds(r.canary) + " vs " + seconds(r.control) + ")" +
             (slower ? ", significantly above " : ", allowed ") + num(r.bound, "%.2f") + "x + " + seconds(tolerance) +
             " (z=" + num(cmp.z, "%.2f") + " of " + num(r.threshold, "%.2f") + ")";
  return r;
}

CheckResult Judge::p99_latency(const Snapshot& canary) const {
  CheckResult r;
  r.id = CheckId::p99_latency;
  const double max_p99 = std::chrono::duration<double>(config_.max_p99_latency).count();
  r.bound = max_p99;
  r.canary = canary.requests > 0 ? canary.p99_seconds() : kNaN;
  if (canary.requests < config_.min_requests) {
    r.outcome = Outcome::inconclusive;
    r.detail = "canary p99 latency needs " + std::to_string(config_.min_requests) + " canary requests";
    return r;
  }
  const bool above = canary.p99_seconds() > max_p99;
  r.outcome = above ? Outcome::fail : Outcome::pass;
  r.detail = "canary p99 latency " + seconds(canary.p99_seconds()) + (above ? " above " : ", max ") + seconds(max_p99);
  return r;
}

CheckResult Judge::quality(std::size_t signal, const Snapshot& canary, const Snapshot& control, double alpha) const {
  const auto id = static_cast<CheckId>(config::kFirstQualityCheck + signal);
  const auto& cfg = config_.checks[config::kFirstQualityCheck + signal];
  const auto& monitor = quality_[signal];
  CheckResult r;
  r.id = id;
  r.canary = rate(canary.flagged[signal], canary.eligible[signal]);
  r.control = rate(control.flagged[signal], control.eligible[signal]);
  r.bound = 1 + cfg.max_increase;
  r.estimate = monitor.odds_ratio_estimate();
  if (cfg.lower_is_worse && std::isfinite(r.estimate) && r.estimate > 0) r.estimate = 1 / r.estimate;
  r.statistic = monitor.log_e_value();
  r.threshold = -std::log(alpha);
  const std::string name(label(id));
  const std::string shares = name + ": canary " + percent(r.canary) + " of " + std::to_string(canary.eligible[signal]) +
                             ", control " + percent(r.control) + " of " + std::to_string(control.eligible[signal]);
  const std::string allowed = cfg.lower_is_worse ? "odds at least control's / " + num(r.bound, "%.2f")
                                                 : "odds up to " + num(r.bound, "%.2f") + "x control's";
  if (monitor.rejects(alpha)) {
    r.outcome = Outcome::fail;
    r.detail = shares + (cfg.lower_is_worse ? ", significantly below " : ", significantly above ") + allowed + " (" +
               evidence(r.statistic, r.threshold) + ")";
  } else if (canary.eligible[signal] == 0 && control.eligible[signal] == 0) {
    r.outcome = Outcome::skipped;
    r.detail = name + ": no such answers in the window";
  } else {
    r.outcome = Outcome::pass;
    r.detail = shares + ", " + allowed + " (" + evidence(r.statistic, r.threshold) + ")";
  }
  return r;
}

SrmResult Judge::srm(Windows& windows, const Snapshot& canary, const Snapshot& control, const LookContext& ctx) {
  SrmResult r;
  auto& users = windows.users();
  // The counts are for one weight: a new weight (or a resume) starts them anew.
  const bool resumed = ctx.progressing && !srm_was_progressing_;
  srm_was_progressing_ = ctx.progressing;
  if (!srm_weight_ || *srm_weight_ != ctx.weight || resumed) {
    if (srm_weight_ && ctx.weight < *srm_weight_ && ctx.pins) srm_weight_lowered_ = true;
    srm_weight_ = ctx.weight;
    users.restart();
  }
  const double w = ctx.weight / 100.0;
  r.expected_share = w;
  const std::uint64_t split_requests = canary.requests + control.requests;
  r.request_share = rate(canary.requests, split_requests);
  const auto counts = users.counts();
  r.canary_users = counts.canary;
  r.control_users = counts.control;
  r.sampled = counts.sampled;
  r.user_share = rate(counts.canary, counts.canary + counts.control);
  r.threshold = -std::log(config_.srm.alpha);
  if (!(w > 0 && w < 1)) {
    r.outcome = Outcome::skipped;
    r.detail = "sample ratio: nothing to check at weight " + num(ctx.weight, "%g") + "%";
    return r;
  }
  if (srm_weight_lowered_) {
    r.outcome = Outcome::skipped;
    r.detail = "sample ratio: not checked after the weight was lowered (pinned users stay on the canary)";
    return r;
  }
  r.log_e = stats::srm_log_e(counts.canary, counts.control, w);
  const std::string figures = "canary " + percent(r.user_share) + " of " +
                              std::to_string(counts.canary + counts.control) + " users" +
                              (counts.sampled < 1 ? " (a " + num(counts.sampled * 100, "%.3g") + "% sample)" : "") +
                              " at weight " + num(ctx.weight, "%g") + "%, " + percent(r.request_share) + " of requests";
  if (r.log_e >= r.threshold) {
    r.outcome = Outcome::fail;
    r.detail = "sample ratio mismatch: " + figures + " (" + evidence(r.log_e, r.threshold) + ")";
  } else {
    r.outcome = Outcome::pass;
    r.detail = "sample ratio: " + figures + " (" + evidence(r.log_e, r.threshold) + ")";
  }
  return r;
}

// ---- a look ----------------------------------------------------------------

Verdict Judge::look(Windows& windows, TimePoint now, const LookContext& ctx) {
  if (windows.id() != windows_id_) {
    reset();
    windows_id_ = windows.id();
  }
  ++look_;
  const Snapshot canary = windows.snapshot(Arm::canary, now);
  const Snapshot control = windows.snapshot(Arm::control, now);
  feed_sequential_tests(windows);

  Verdict v;
  v.look = look_;
  v.canary_requests = canary.requests;
  v.control_requests = control.requests;
  v.canary_error_rate = canary.error_rate;
  v.control_error_rate = control.error_rate;
  v.canary_p99_seconds = canary.p99_seconds();
  v.z = two_proportion_z(canary.errors, canary.requests, control.errors, control.requests);
  v.alpha_per_check = alpha_per_check();
  run_checks(v, windows, now, canary, control);
  if (config_.srm.enabled) v.srm = srm(windows, canary, control, ctx);
  settle(v, canary, control);
  apply_holds(v, ctx);
  return v;
}

// The sequential tests take the look's new requests (the totals' growth since
// the last look).
void Judge::feed_sequential_tests(const Windows& windows) {
  const ArmTotals tc = windows.arm_window(Arm::canary).totals();
  const ArmTotals tk = windows.arm_window(Arm::control).totals();
  errors_.look(delta(tc.requests, last_canary_.requests), delta(tc.errors, last_canary_.errors),
               delta(tk.requests, last_control_.requests), delta(tk.errors, last_control_.errors));
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    const std::uint64_t ce = delta(tc.eligible[i], last_canary_.eligible[i]);
    const std::uint64_t cf = std::min(ce, delta(tc.flagged[i], last_canary_.flagged[i]));
    const std::uint64_t ke = delta(tk.eligible[i], last_control_.eligible[i]);
    const std::uint64_t kf = std::min(ke, delta(tk.flagged[i], last_control_.flagged[i]));
    // direction: decrease tests the complement (the share of answers not flagged).
    if (config_.checks[config::kFirstQualityCheck + i].lower_is_worse) {
      quality_[i].look(ce, ce - cf, ke, ke - kf);
    } else {
      quality_[i].look(ce, cf, ke, kf);
    }
  }
  last_canary_ = tc;
  last_control_ = tk;
}

// Every enabled check on the window, with its failing-looks count.
void Judge::run_checks(Verdict& v, const Windows& windows, TimePoint now, const Snapshot& canary,
                       const Snapshot& control) {
  const double alpha = v.alpha_per_check;
  for (std::size_t i = 0; i < config::kCheckCount; ++i) {
    const auto id = static_cast<CheckId>(i);
    const auto& cfg = config_.checks[i];
    if (!cfg.enabled) continue;
    if (id == CheckId::p99_latency && config_.max_p99_latency.count() == 0) continue;
    CheckResult r;
    switch (id) {
      case CheckId::error_rate: r = error_rate(canary, control, alpha); break;
      case CheckId::critical_error_rate: r = critical_error_rate(canary, control, alpha); break;
      case CheckId::duration:
      case CheckId::ttfb: r = latency(id, windows, now, alpha); break;
      case CheckId::p99_latency: r = p99_latency(canary); break;
      default: r = quality(i - config::kFirstQualityCheck, canary, control, alpha); break;
    }
    r.dry_run = cfg.dry_run;
    r.acting = !cfg.dry_run;
    r.critical = r.critical || cfg.critical;
    r.failure_limit = r.critical ? 1 : config_.failure_limit;
    failing_[i] = r.outcome == Outcome::fail ? failing_[i] + 1 : 0;
    r.failing_looks = failing_[i];
    v.checks.push_back(std::move(r));
  }
}

void Judge::settle(Verdict& v, const Snapshot& canary, const Snapshot& control) const {
  // The outcome: a failing acting check at its limit fails; any other doubt
  // (too few requests, a check's data missing, a check failing below its
  // limit, a sample-ratio mismatch) is inconclusive; else pass.
  std::string failures;
  std::string doubt;
  auto add = [](std::string& to, const std::string& what) {
    if (!to.empty()) to += "; ";
    to += what;
  };
  for (const auto& r : v.checks) {
    if (!r.acting) continue;
    if (r.outcome == Outcome::fail && r.failing_looks >= r.failure_limit) {
      add(failures, r.detail);
      if (r.id == CheckId::error_rate || r.id == CheckId::critical_error_rate)
        v.error_rate_failed = true;
      else if (r.id == CheckId::duration || r.id == CheckId::ttfb || r.id == CheckId::p99_latency)
        v.latency_failed = true;
      else
        v.quality_failed = true;
    } else if (r.outcome == Outcome::fail) {
      add(doubt, std::string(config::check_name(r.id)) + " failing (" + std::to_string(r.failing_looks) + " of " +
                     std::to_string(r.failure_limit) + " looks): " + r.detail);
    } else if (r.outcome == Outcome::inconclusive) {
      add(doubt, r.detail);
    }
  }
  const bool enough = canary.requests >= config_.min_requests;
  const bool mismatch = v.srm && v.srm->outcome == Outcome::fail;
  if (!failures.empty()) {
    v.kind = Verdict::Kind::fail;
    v.reason = failures;
  } else if (!enough || !doubt.empty() || mismatch) {
    v.kind = Verdict::Kind::inconclusive;
    std::string why;
    if (!enough) {
      why = "insufficient data: " + std::to_string(canary.requests) + " of " + std::to_string(config_.min_requests) +
            " canary requests";
    }
    if (mismatch) add(why, v.srm->detail);
    if (!doubt.empty() && enough) add(why, doubt);
    v.reason = why;
  } else {
    v.kind = Verdict::Kind::pass;
    v.reason = "canary error rate " + percent(canary.error_rate) + " (control " + percent(control.error_rate) +
               "), p99 " + seconds(v.canary_p99_seconds) + " over " + std::to_string(canary.requests) +
               " requests; every check passed";
  }
}

void Judge::apply_holds(Verdict& v, const LookContext& ctx) {
  // Holds: a mismatch invalidates every comparison; a judge that cannot make
  // up its mind for inconclusive_limit looks hands over to the operator.
  if (ctx.progressing && v.kind == Verdict::Kind::inconclusive) {
    ++inconclusive_looks_;
  } else {
    inconclusive_looks_ = 0;
  }
  v.inconclusive_looks = inconclusive_looks_;
  if (v.kind != Verdict::Kind::fail) {
    if (v.srm && v.srm->outcome == Outcome::fail) {  // a sample-ratio mismatch
      v.hold = "srm";
      v.hold_reason = v.srm->detail;
    } else if (config_.inconclusive_limit > 0 && inconclusive_looks_ >= config_.inconclusive_limit) {
      v.hold = "inconclusive";
      v.hold_reason = "inconclusive for " + std::to_string(inconclusive_looks_) + " looks: " + v.reason;
    }
  }
}

}  // namespace canaryd::rollout
