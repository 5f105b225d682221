#include "metrics/metrics.hpp"

#include "common/access_log.hpp"

#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <spdlog/async.h>

#include <prometheus/check_names.h>
#include <prometheus/histogram.h>
#include <prometheus/text_serializer.h>

#include "metrics/process_metrics.hpp"

namespace canaryd::metrics {

namespace {

template <std::size_t N>
std::size_t index_or_last(const std::string_view (&names)[N], std::string_view value) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == value) return i;
  }
  return N - 1;  // every such set ends with "other"
}

template <std::size_t N>
int index_of(const std::string_view (&names)[N], std::string_view value) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == value) return static_cast<int>(i);
  }
  return -1;
}

std::string validated_prefix(std::string prefix) {
  // The prefix becomes part of every name; check it once so a bad config fails at start-up.
  if (prefix.empty() || !prometheus::CheckMetricName(prefix + "_x")) {
    throw std::invalid_argument("metrics.prefix: not a valid Prometheus metric name prefix: '" + prefix + "'");
  }
  return prefix;
}

std::vector<std::string> unique_in_order(std::vector<std::string> names, std::string_view drop) {
  std::vector<std::string> out;
  for (auto& name : names) {
    if (name == drop || std::find(out.begin(), out.end(), name) != out.end()) continue;
    out.push_back(std::move(name));
  }
  return out;
}

}  // namespace

// Every metric family, declared in one place (metrics.hpp's promise): a long
// list on purpose, one entry per family.
Metrics::Metrics(Setup setup)
    : prefix_(validated_prefix(std::move(setup.prefix))),
      providers_(unique_in_order(std::move(setup.providers), {})),
      models_(unique_in_order(std::move(setup.models), kOtherLabel)),
      experiments_(setup.experiments.empty() ? std::vector<std::string>{std::string(config::kDefaultExperiment)}
                                             : unique_in_order(std::move(setup.experiments), {})),
      registry_(std::make_shared<prometheus::Registry>()),
      duration_family_(prefix_ + "_request_duration_seconds",
                       "Duration of one upstream call (each attempt, including a fallback's), in seconds.",
                       kLatencyBuckets),
      ttfb_family_(prefix_ + "_time_to_first_byte_seconds",
                   "Time from sending an upstream request to its first response byte, in seconds.", kLatencyBuckets),
      overhead_family_(prefix_ + "_overhead_seconds",
                       "Time spent in canaryd itself per request (excluding the upstream call), in seconds.",
                       kOverheadBuckets) {
  models_.emplace_back(kOtherLabel);
  for (std::size_t m = 0; m < models_.size(); ++m) model_lookup_.emplace(models_[m], static_cast<int>(m));
  for (const auto& [model, price] : setup.pricing) priced_.insert(model);
  prices_ = std::vector<AtomicPrice>(models_.size());
  set_pricing(setup.pricing);

  auto& requests = prometheus::BuildCounter()
                       .Name(prefix_ + "_requests_total")
                       .Help("Upstream calls by provider, model and outcome (success, error, timeout).")
                       .Register(*registry_);
  auto& tokens = prometheus::BuildCounter()
                     .Name(prefix_ + "_tokens_total")
                     .Help("Tokens reported in upstream responses' usage, by type (prompt, completion).")
                     .Register(*registry_);
  auto& cost = prometheus::BuildCounter()
                   .Name(prefix_ + "_cost_usd_total")
                   .Help("Estimated spend in USD from token usage and the configured pricing.")
                   .Register(*registry_);

  const std::size_t pm_count = providers_.size() * models_.size();
  requests_.resize(pm_count * std::size(kStatusNames));
  duration_.resize(pm_count);
  ttfb_.resize(pm_count);
  tokens_.resize(pm_count * 2);
  cost_.resize(pm_count);
  for (std::size_t p = 0; p < providers_.size(); ++p) {
    for (std::size_t m = 0; m < models_.size(); ++m) {
      const std::size_t i = p * models_.size() + m;
      const std::string& provider = providers_[p];
      const std::string& model = models_[m];
      for (std::size_t s = 0; s < std::size(kStatusNames); ++s) {
        requests_[i * std::size(kStatusNames) + s] =
            &requests.Add({{"provider", provider}, {"model", model}, {"status", std::string(kStatusNames[s])}});
      }
      duration_[i] = &duration_family_.add({{"provider", provider}, {"model", model}});
      ttfb_[i] = &ttfb_family_.add({{"provider", provider}, {"model", model}});
      tokens_[i * 2] = &tokens.Add({{"provider", provider}, {"model", model}, {"type", "prompt"}});
      tokens_[i * 2 + 1] = &tokens.Add({{"provider", provider}, {"model", model}, {"type", "completion"}});
      cost_[i] = &cost.Add({{"provider", provider}, {"model", model}});
    }
  }

  auto& fallbacks = prometheus::BuildCounter()
                        .Name(prefix_ + "_fallbacks_total")
                        .Help("Failed upstream calls retried on another upstream, by from, to and reason.")
                        .Register(*registry_);
  const std::size_t reasons = std::size(kFallbackReasons);
  const std::size_t np = providers_.size();
  fallbacks_.assign(experiments_.size() * np * np * reasons, nullptr);
  for (std::size_t x = 0; x < experiments_.size(); ++x) {
    for (std::size_t from = 0; from < np; ++from) {
      for (std::size_t to = 0; to < np; ++to) {
        if (from == to) continue;
        for (std::size_t r = 0; r < reasons; ++r) {
          fallbacks_[((x * np + from) * np + to) * reasons + r] =
              &fallbacks.Add({{"experiment", experiments_[x]},
                              {"from", providers_[from]},
                              {"to", providers_[to]},
                              {"reason", std::string(kFallbackReasons[r])}});
        }
      }
    }
  }

  auto& rollbacks = prometheus::BuildCounter()
                        .Name(prefix_ + "_rollbacks_total")
                        .Help("Canary rollbacks, by reason (error_rate, latency, manual, other).")
                        .Register(*registry_);
  for (const auto& x : experiments_) {
    for (auto reason : kRollbackReasons) {
      rollbacks_.push_back(&rollbacks.Add({{"experiment", x}, {"reason", std::string(reason)}}));
    }
  }

  auto& redis_errors = prometheus::BuildCounter()
                           .Name(prefix_ + "_redis_errors_total")
                           .Help("Failed or timed-out Redis operations (the request went on without Redis), by op.")
                           .Register(*registry_);
  for (auto op : kRedisOps) redis_errors_.push_back(&redis_errors.Add({{"op", std::string(op)}}));

  auto& rollout_state = prometheus::BuildGauge()
                            .Name(prefix_ + "_rollout_state")
                            .Help("Current rollout state: 1 for the current state, 0 for the others.")
                            .Register(*registry_);
  for (const auto& x : experiments_) {
    for (auto state : kRolloutStates) {
      rollout_state_.push_back(&rollout_state.Add({{"experiment", x}, {"state", std::string(state)}}));
    }
  }

  auto& canary_weight = prometheus::BuildGauge()
                            .Name(prefix_ + "_canary_weight")
                            .Help("Percent of users currently routed to the canary upstream, per experiment.")
                            .Register(*registry_);
  for (const auto& x : experiments_) canary_weight_.push_back(&canary_weight.Add({{"experiment", x}}));
  inflight_ = &prometheus::BuildGauge()
                   .Name(prefix_ + "_inflight_requests")
                   .Help("Client requests currently being served.")
                   .Register(*registry_)
                   .Add({});
  random_keys_ = &prometheus::BuildCounter()
                      .Name(prefix_ + "_sticky_random_keys_total")
                      .Help("Requests with none of split.sticky_key's sources, assigned by a random key.")
                      .Register(*registry_)
                      .Add({});
  overhead_ = &overhead_family_.add({});
  build_judge_families();

  // ---- Shadow mode: comparisons of mirrored pairs ----
  auto& shadow_results = prometheus::BuildCounter()
                             .Name(prefix_ + "_shadow_requests_total")
                             .Help(
                                 "Shadow comparisons by result (both_succeeded, status_differs, shadow_failed, "
                                 "both_failed).")
                             .Register(*registry_);
  auto& shadow_drops =
      prometheus::BuildCounter()
          .Name(prefix_ + "_shadow_dropped_total")
          .Help("Shadows not sent (rate, in_flight, rolled_back) or not compared (control_incomplete).")
          .Register(*registry_);
  auto& shadow_cost = prometheus::BuildCounter()
                          .Name(prefix_ + "_shadow_cost_delta_usd_total")
                          .Help(
                              "USD by which the canary's answer cost more (canary_more) or less (canary_less) than "
                              "control's, summed over shadow pairs; the net delta is canary_more - canary_less.")
                          .Register(*registry_);
  auto& shadow_latency = prometheus::BuildHistogram()
                             .Name(prefix_ + "_shadow_latency_delta_seconds")
                             .Help(
                                 "Shadow (canary) latency minus control latency per pair, in seconds (negative: "
                                 "the canary was faster).")
                             .Register(*registry_);
  for (const auto& x : experiments_) {
    ShadowSeries sh;
    for (std::size_t i = 0; i < kShadowResults.size(); ++i) {
      sh.results[i] = &shadow_results.Add({{"experiment", x}, {"result", std::string(kShadowResults[i])}});
    }
    for (std::size_t i = 0; i < kShadowDrops.size(); ++i) {
      sh.drops[i] = &shadow_drops.Add({{"experiment", x}, {"reason", std::string(kShadowDrops[i])}});
    }
    sh.cost_more = &shadow_cost.Add({{"experiment", x}, {"direction", "canary_more"}});
    sh.cost_less = &shadow_cost.Add({{"experiment", x}, {"direction", "canary_less"}});
    sh.latency_delta = &shadow_latency.Add(
        {{"experiment", x}},
        prometheus::Histogram::BucketBoundaries{-10,  -5,    -2.5, -1,  -0.5, -0.25, -0.1, -0.05, -0.025, -0.01, 0,
                                                0.01, 0.025, 0.05, 0.1, 0.25, 0.5,   1,    2.5,   5,      10});
    shadow_.push_back(sh);
  }

  // ---- Redis topology (issue 16): what canaryd followed, per process ----
  redis_failovers_ = &prometheus::BuildCounter()
                          .Name(prefix_ + "_redis_failovers_total")
                          .Help("Times canaryd followed Redis to a new primary (a Sentinel failover or switch-over).")
                          .Register(*registry_)
                          .Add({});
  auto& redirects = prometheus::BuildCounter()
                        .Name(prefix_ + "_redis_redirects_total")
                        .Help(
                            "Redis Cluster redirections followed, by kind: moved (the slot has moved), ask (it is "
                            "moving).")
                        .Register(*registry_);
  redis_redirects_[0] = &redirects.Add({{"kind", "moved"}});
  redis_redirects_[1] = &redirects.Add({{"kind", "ask"}});
  redis_discovery_errors_ = &prometheus::BuildCounter()
                                 .Name(prefix_ + "_redis_discovery_errors_total")
                                 .Help(
                                     "Failed queries of (and connections to) the sentinels or cluster nodes asked "
                                     "where the primaries are.")
                                 .Register(*registry_)
                                 .Add({});
}

std::string Metrics::reload_conflict(const config::Config& next) const {
  const char* restart = "; restart canaryd to change it";
  if (next.metrics.prefix != prefix_) {
    return "metrics.prefix: changed from '" + prefix_ + "' to '" + next.metrics.prefix +
           "' (every metric name is fixed at start-up)" + restart;
  }
  std::set<std::string> upstreams;
  for (const auto& [name, upstream] : next.upstreams) upstreams.insert(name);
  if (upstreams != std::set<std::string>(providers_.begin(), providers_.end())) {
    return std::string(
               "upstreams: the set of upstream names changed (the metrics' provider labels are fixed at "
               "start-up)") +
           restart;
  }
  std::set<std::string> priced;
  for (const auto& [model, price] : next.pricing) priced.insert(model);
  if (priced != priced_) {
    return std::string(
               "pricing: the set of priced models changed (the metrics' model labels are fixed at "
               "start-up; changing a price is fine)") +
           restart;
  }
  return {};
}

void Metrics::set_pricing(const std::map<std::string, config::Price>& pricing) noexcept {
  for (std::size_t m = 0; m + 1 < models_.size(); ++m) {  // the last, "other", always costs 0
    if (!priced_.count(models_[m])) continue;
    const auto price = pricing.find(models_[m]);
    if (price == pricing.end()) continue;
    prices_[m].input.store(price->second.input, std::memory_order_relaxed);
    prices_[m].output.store(price->second.output, std::memory_order_relaxed);
  }
}

int Metrics::provider_index(std::string_view upstream_name) const {
  for (std::size_t p = 0; p < providers_.size(); ++p) {
    if (providers_[p] == upstream_name) return static_cast<int>(p);
  }
  return -1;
}

int Metrics::model_index(std::string_view model) const {
  const auto it = model_lookup_.find(model);
  return it == model_lookup_.end() ? other_model_index() : it->second;
}

void Metrics::observe_request(int provider, int model, Status status, double duration_seconds) noexcept {
  if (!valid(provider, model)) return;
  const std::size_t i = pm(provider, model);
  requests_[i * std::size(kStatusNames) + static_cast<std::size_t>(status)]->Increment();
  duration_[i]->observe(duration_seconds);
}

void Metrics::observe_ttfb(int provider, int model, double seconds) noexcept {
  if (!valid(provider, model)) return;
  ttfb_[pm(provider, model)]->observe(seconds);
}

void Metrics::add_tokens(int provider, int model, std::uint64_t prompt, std::uint64_t completion) noexcept {
  if (!valid(provider, model)) return;
  const std::size_t i = pm(provider, model);
  if (prompt > 0) tokens_[i * 2]->Increment(static_cast<double>(prompt));
  if (completion > 0) tokens_[i * 2 + 1]->Increment(static_cast<double>(completion));
  const AtomicPrice& price = prices_[static_cast<std::size_t>(model)];
  const double usd = static_cast<double>(prompt) / 1e6 * price.input.load(std::memory_order_relaxed) +
                     static_cast<double>(completion) / 1e6 * price.output.load(std::memory_order_relaxed);
  if (usd > 0) cost_[i]->Increment(usd);
}

void Metrics::observe_overhead(double seconds) noexcept { overhead_->observe(seconds); }

void Metrics::add_fallback(std::size_t experiment, std::string_view from, std::string_view to,
                           std::string_view reason) noexcept {
  const int f = provider_index(from);
  const int t = provider_index(to);
  if (f < 0 || t < 0 || f == t || !has_experiment(experiment)) return;
  const std::size_t np = providers_.size();
  const std::size_t r = index_or_last(kFallbackReasons, reason);
  fallbacks_[((experiment * np + static_cast<std::size_t>(f)) * np + static_cast<std::size_t>(t)) *
                 std::size(kFallbackReasons) +
             r]
      ->Increment();
}

void Metrics::set_canary_weight(std::size_t experiment, double percent) noexcept {
  if (has_experiment(experiment)) canary_weight_[experiment]->Set(percent);
}

void Metrics::set_rollout_state(std::size_t experiment, std::string_view state) {
  const int current = index_of(kRolloutStates, state);
  if (current < 0 || !has_experiment(experiment)) return;
  constexpr std::size_t kStates = std::size(kRolloutStates);
  std::lock_guard lock(rollout_state_mutex_);
  for (std::size_t s = 0; s < kStates; ++s) {
    rollout_state_[experiment * kStates + s]->Set(static_cast<int>(s) == current ? 1.0 : 0.0);
  }
}

void Metrics::add_rollback(std::size_t experiment, std::string_view reason) noexcept {
  if (!has_experiment(experiment)) return;
  rollbacks_[experiment * std::size(kRollbackReasons) + index_or_last(kRollbackReasons, reason)]->Increment();
}

void Metrics::add_redis_error(std::string_view op) noexcept {
  redis_errors_[index_or_last(kRedisOps, op)]->Increment();
}

void Metrics::add_random_key() noexcept { random_keys_->Increment(); }

void Metrics::add_shadow_result(std::size_t experiment, std::size_t result) noexcept {
  if (has_experiment(experiment) && result < kShadowResults.size()) shadow_[experiment].results[result]->Increment();
}
void Metrics::add_shadow_drop(std::size_t experiment, std::size_t reason) noexcept {
  if (has_experiment(experiment) && reason < kShadowDrops.size()) shadow_[experiment].drops[reason]->Increment();
}
void Metrics::add_shadow_cost_delta(std::size_t experiment, double canary_minus_control_usd) noexcept {
  if (!has_experiment(experiment)) return;
  if (canary_minus_control_usd > 0) shadow_[experiment].cost_more->Increment(canary_minus_control_usd);
  if (canary_minus_control_usd < 0) shadow_[experiment].cost_less->Increment(-canary_minus_control_usd);
}
void Metrics::observe_shadow_latency_delta(std::size_t experiment, double seconds) noexcept {
  if (has_experiment(experiment)) shadow_[experiment].latency_delta->Observe(seconds);
}

// ---- Redis topology (issue 16) ----
void Metrics::add_redis_failover() noexcept { redis_failovers_->Increment(); }
void Metrics::add_redis_redirect(std::string_view kind) noexcept {
  redis_redirects_[kind == "ask" ? 1 : 0]->Increment();
}
void Metrics::add_redis_discovery_error() noexcept { redis_discovery_errors_->Increment(); }

void Metrics::inflight_add(int delta) noexcept { inflight_->Increment(static_cast<double>(delta)); }

std::string Metrics::expose() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  families.push_back(duration_family_.collect());
  families.push_back(ttfb_family_.collect());
  families.push_back(overhead_family_.collect());
  for (auto& family : collect_process_metrics()) families.push_back(std::move(family));
  prometheus::MetricFamily dropped;
  dropped.name = prefix_ + "_log_dropped_total";
  dropped.help =
      "Log lines (access and application) dropped because a log queue was full: stdout did "
      "not keep up, and a request never waits for it.";
  dropped.type = prometheus::MetricType::Counter;
  dropped.metric.emplace_back();
  const auto pool = spdlog::thread_pool();
  dropped.metric.back().counter.value = (pool ? static_cast<double>(pool->overrun_counter()) : 0.0) +
                                        static_cast<double>(log::AccessLog::dropped_lines());
  families.push_back(std::move(dropped));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

// ---- The canary judge v2 (issue 14) ----------------------------------------

void Metrics::build_judge_families() {
  auto& answers = prometheus::BuildCounter()
                      .Name(prefix_ + "_quality_answers_total")
                      .Help(
                          "Judged answers (split routes) each LLM quality signal applies to, by provider and signal "
                          "(truncated, content_filter, empty, tool_call_json, response_json).")
                      .Register(*registry_);
  auto& flagged = prometheus::BuildCounter()
                      .Name(prefix_ + "_quality_flagged_total")
                      .Help(
                          "Judged answers showing the signal (finish_reason length or content_filter, empty, tool-call "
                          "arguments or a JSON-mode answer that are not JSON), by provider and signal.")
                      .Register(*registry_);
  for (const auto& provider : providers_) {
    for (auto signal : kQualitySignalNames) {
      const prometheus::Labels labels{{"provider", provider}, {"signal", std::string(signal)}};
      quality_answers_.push_back(&answers.Add(labels));
      quality_flagged_.push_back(&flagged.Add(labels));
    }
  }
  auto& verdicts = prometheus::BuildCounter()
                       .Name(prefix_ + "_analysis_verdicts_total")
                       .Help("Canary analysis verdicts by kind (pass, fail, inconclusive), one per analysis interval.")
                       .Register(*registry_);
  for (const auto& x : experiments_) {
    for (auto kind : kVerdictKinds)
      verdicts_.push_back(&verdicts.Add({{"experiment", x}, {"kind", std::string(kind)}}));
  }
  auto& checks = prometheus::BuildGauge()
                     .Name(prefix_ + "_analysis_check")
                     .Help(
                         "1 for each analysis check's outcome at the last verdict (pass, fail, inconclusive, "
                         "skipped); 0 for the others, and for all of a check that is off.")
                     .Register(*registry_);
  for (const auto& x : experiments_) {
    for (auto check : config::kCheckNames) {
      for (auto outcome : kCheckOutcomes) {
        check_outcomes_.push_back(
            &checks.Add({{"experiment", x}, {"check", std::string(check)}, {"outcome", std::string(outcome)}}));
      }
    }
  }
  auto& holds = prometheus::BuildCounter()
                    .Name(prefix_ + "_analysis_holds_total")
                    .Help(
                        "Rollouts paused by the analysis, by reason: srm (sample-ratio mismatch), inconclusive "
                        "(inconclusive_limit looks without a verdict).")
                    .Register(*registry_);
  for (const auto& x : experiments_) {
    for (auto reason : kHoldReasons) holds_.push_back(&holds.Add({{"experiment", x}, {"reason", std::string(reason)}}));
  }
  auto& srm_mismatch = prometheus::BuildGauge()
                           .Name(prefix_ + "_analysis_srm_mismatch")
                           .Help(
                               "1 when the last verdict found a sample-ratio mismatch (users on the canary against the "
                               "weight), else 0.")
                           .Register(*registry_);
  auto& user_share = prometheus::BuildGauge()
                         .Name(prefix_ + "_analysis_canary_user_share")
                         .Help(
                             "Share of the users seen since the weight took effect that the split put on the "
                             "canary (NaN when not checked); compare with the weight.")
                         .Register(*registry_);
  for (const auto& x : experiments_) {
    srm_mismatch_.push_back(&srm_mismatch.Add({{"experiment", x}}));
    canary_user_share_.push_back(&user_share.Add({{"experiment", x}}));
    canary_user_share_.back()->Set(std::numeric_limits<double>::quiet_NaN());
  }
}

void Metrics::add_quality(int provider, const QualityFlags& flags) noexcept {
  if (provider < 0 || static_cast<std::size_t>(provider) >= providers_.size()) return;
  const std::size_t base = static_cast<std::size_t>(provider) * kQualitySignals;
  for (std::size_t s = 0; s < kQualitySignals; ++s) {
    const auto signal = static_cast<QualitySignal>(s);
    if (!flags.is_eligible(signal)) continue;
    quality_answers_[base + s]->Increment();
    if (flags.is_flagged(signal)) quality_flagged_[base + s]->Increment();
  }
}

void Metrics::observe_verdict(std::size_t experiment, std::string_view kind,
                              const std::array<int, config::kCheckCount>& outcomes, bool srm_mismatch,
                              double canary_user_share) noexcept {
  if (!has_experiment(experiment)) return;
  if (const int k = index_of(kVerdictKinds, kind); k >= 0) {
    verdicts_[experiment * std::size(kVerdictKinds) + static_cast<std::size_t>(k)]->Increment();
  }
  constexpr std::size_t kOutcomes = std::size(kCheckOutcomes);
  const std::size_t base = experiment * config::kCheckCount * kOutcomes;
  for (std::size_t c = 0; c < config::kCheckCount; ++c) {
    for (std::size_t o = 0; o < kOutcomes; ++o) {
      check_outcomes_[base + c * kOutcomes + o]->Set(outcomes[c] == static_cast<int>(o) ? 1 : 0);
    }
  }
  srm_mismatch_[experiment]->Set(srm_mismatch ? 1 : 0);
  canary_user_share_[experiment]->Set(canary_user_share);
}

void Metrics::add_analysis_hold(std::size_t experiment, std::string_view reason) noexcept {
  if (!has_experiment(experiment)) return;
  if (const int k = index_of(kHoldReasons, reason); k >= 0) {
    holds_[experiment * std::size(kHoldReasons) + static_cast<std::size_t>(k)]->Increment();
  }
}

}  // namespace canaryd::metrics
