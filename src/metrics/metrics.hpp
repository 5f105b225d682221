// canaryd's Prometheus metrics (SPEC §7): every family is declared here, once.
// All label combinations are resolved at construction (providers = the config's
// upstreams, models = Config::known_models() + "other", fixed reason/op/state
// sets), so the request path is an array index plus an atomic add: no map
// lookup, no Family::Add, no lock. Counters and gauges are prometheus-cpp's
// (std::atomic<double>); histograms are ShardedHistogram (see histogram.hpp for
// why not prometheus::Histogram). expose() renders the text format 0.0.4 for
// canaryd's own /metrics endpoint, process_* metrics included.
//
// A config reload cannot change the label sets (the request path holds plain
// indexes into them): reload_conflict() names the key a reload may not change,
// and set_pricing() applies new prices to the fixed set of priced models.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "canaryd/config.hpp"
#include "canaryd/quality.hpp"
#include "metrics/histogram.hpp"

namespace canaryd::metrics {

// The fixed label values (public so other components and tests share one list).
inline constexpr std::string_view kOtherLabel = "other";
inline constexpr std::string_view kStatusNames[] = {"success", "error", "timeout"};
inline constexpr std::string_view kFallbackReasons[] = {"connect_error", "tls_error", "timeout", "5xx", "429", "other"};
inline constexpr std::string_view kRolloutStates[] = {"progressing", "paused", "promoted", "aborted"};
inline constexpr std::string_view kRollbackReasons[] = {"error_rate", "latency", "quality", "manual", "other"};
inline constexpr std::string_view kRedisOps[] = {"pin", "get", "set", "publish", "connect", "rollout", "other"};

// The judge v2's label values (issue 14).
inline constexpr std::string_view kCheckOutcomes[] = {"pass", "fail", "inconclusive", "skipped"};
inline constexpr std::string_view kVerdictKinds[] = {"pass", "fail", "inconclusive"};
inline constexpr std::string_view kHoldReasons[] = {"srm", "inconclusive"};

inline const std::vector<double> kLatencyBuckets = {.005, .01, .025, .05, .1, .25, .5, .75, 1,  1.5, 2,
                                                    3,    5,   7.5,  10,  15, 20,  30, 45,  60, 90,  120};
inline const std::vector<double> kOverheadBuckets = {.00005, .0001, .00025, .0005, .001, .0025, .005,
                                                     .01,    .025,  .05,    .1,    .25,  1};

class Metrics {
 public:
  enum class Status { success, error, timeout };

  // What the constructor needs from a Config; lets a test build Metrics without one.
  struct Setup {
    std::string prefix = "ai_proxy";
    std::vector<std::string> providers;  // upstream names
    std::vector<std::string> models;     // known models; "other" is added
    std::map<std::string, config::Price> pricing;
    // The `experiment` label's values (issue 17): config.experiments' names;
    // empty = {"default"}.
    std::vector<std::string> experiments;

    static Setup from_config(const config::Config& config) {
      Setup setup;
      setup.prefix = config.metrics.prefix;
      for (const auto& [name, upstream] : config.upstreams) setup.providers.push_back(name);
      setup.models = config.known_models();
      setup.pricing = config.pricing;
      for (const auto& e : config.experiments) setup.experiments.push_back(e.name);
      return setup;
    }
  };

  // "" when `next` keeps every label set (metrics.prefix, the upstream names,
  // the priced models) of this Metrics; else why a reload must be refused,
  // naming the key and saying a restart is needed to change it.
  std::string reload_conflict(const config::Config& next) const;
  // New prices for the models priced at start-up (a model outside them is
  // ignored: reload_conflict() refuses such a config). Safe while requests run.
  void set_pricing(const std::map<std::string, config::Price>& pricing) noexcept;

  // Throws std::invalid_argument on a bad prefix (start-up only).
  explicit Metrics(const config::Config& config) : Metrics(Setup::from_config(config)) {}
  explicit Metrics(Setup setup);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  int provider_index(std::string_view upstream_name) const;  // -1 if unknown
  int model_index(std::string_view model) const;             // index of "other" for anything not configured
  int other_model_index() const { return static_cast<int>(models_.size()) - 1; }
  const std::vector<std::string>& providers() const { return providers_; }
  const std::vector<std::string>& models() const { return models_; }  // last is "other"
  const std::vector<std::string>& experiments() const { return experiments_; }

  // The rollout, fallback, judge and shadow families carry an `experiment`
  // label (issue 17): the `experiment` arguments below are indexes into
  // experiments() (config.experiments' order); one out of range is ignored.

  // One finished upstream call (one per attempt: a fallback records both attempts).
  // Out-of-range indexes are ignored (they cannot come from provider_index/model_index).
  void observe_request(int provider, int model, Status status, double duration_seconds) noexcept;
  void observe_ttfb(int provider, int model, double seconds) noexcept;
  // Also adds prompt/1e6*input + completion/1e6*output USD from the model's pricing.
  void add_tokens(int provider, int model, std::uint64_t prompt, std::uint64_t completion) noexcept;
  void observe_overhead(double seconds) noexcept;
  // Upstream names; an unknown name or from == to is ignored; a reason outside
  // kFallbackReasons counts as "other".
  void add_fallback(std::size_t experiment, std::string_view from, std::string_view to,
                    std::string_view reason) noexcept;
  void set_canary_weight(std::size_t experiment, double percent) noexcept;
  // progressing|paused|promoted|aborted: 1 for it, 0 for the others; unknown is ignored.
  void set_rollout_state(std::size_t experiment, std::string_view state);
  void add_rollback(std::size_t experiment,
                    std::string_view reason) noexcept;  // error_rate|latency|manual, else "other"
  void add_redis_error(std::string_view op) noexcept;   // pin|get|set|publish|connect|rollout, else "other"
  void inflight_add(int delta) noexcept;
  void add_random_key() noexcept;  // ai_proxy_sticky_random_keys_total (extension)

  // ---- The canary judge v2 (issue 14) ----
  // One judged answer's LLM quality signals on `provider` (an upstream index):
  // <prefix>_quality_answers_total{provider,signal} for each eligible signal,
  // <prefix>_quality_flagged_total{provider,signal} for each flagged one.
  void add_quality(int provider, const QualityFlags& flags) noexcept;
  // The last verdict: <prefix>_analysis_verdicts_total{kind} (kind: pass,
  // fail, inconclusive) +1; <prefix>_analysis_check{check,outcome} 1 for each
  // check's outcome (kCheckOutcomes index; -1: not judged, all 0);
  // <prefix>_analysis_srm_mismatch 0/1 and <prefix>_analysis_canary_user_share
  // (NaN: not checked).
  void observe_verdict(std::size_t experiment, std::string_view kind,
                       const std::array<int, config::kCheckCount>& outcomes, bool srm_mismatch,
                       double canary_user_share) noexcept;
  // A pause by the judge: <prefix>_analysis_holds_total{reason} (srm, inconclusive).
  void add_analysis_hold(std::size_t experiment, std::string_view reason) noexcept;

  // ---- Shadow mode (shadow/): comparisons of mirrored pairs ----
  static constexpr std::array<std::string_view, 4> kShadowResults{"both_succeeded", "status_differs", "shadow_failed",
                                                                  "both_failed"};
  static constexpr std::array<std::string_view, 4> kShadowDrops{"rate", "in_flight", "rolled_back",
                                                                "control_incomplete"};
  void add_shadow_result(std::size_t experiment,
                         std::size_t result) noexcept;  // _shadow_requests_total{result}: index into kShadowResults
  void add_shadow_drop(std::size_t experiment,
                       std::size_t reason) noexcept;  // _shadow_dropped_total{reason}: index into kShadowDrops
  void add_shadow_cost_delta(std::size_t experiment,
                             double canary_minus_control_usd) noexcept;  // _shadow_cost_delta_usd_total{direction}
  void observe_shadow_latency_delta(std::size_t experiment, double seconds) noexcept;  // _shadow_latency_delta_seconds

  // ---- Redis topology (issue 16: Sentinel and Cluster) ----
  void add_redis_failover() noexcept;                       // ai_proxy_redis_failovers_total
  void add_redis_redirect(std::string_view kind) noexcept;  // ai_proxy_redis_redirects_total{kind}: moved|ask
  void add_redis_discovery_error() noexcept;                // ai_proxy_redis_discovery_errors_total

  // Text format 0.0.4: every family of registry() plus the histograms, process_*
  // metrics and <prefix>_log_dropped_total (log lines spdlog's async queue
  // dropped because it was full: read from spdlog's global thread pool, the one
  // every canaryd logger writes through; 0 before logging starts).
  std::string expose() const;

 private:
  std::size_t pm(int provider, int model) const noexcept {
    return static_cast<std::size_t>(provider) * models_.size() + static_cast<std::size_t>(model);
  }
  bool valid(int provider, int model) const noexcept {
    return provider >= 0 && model >= 0 && static_cast<std::size_t>(provider) < providers_.size() &&
           static_cast<std::size_t>(model) < models_.size();
  }

  std::string prefix_;
  std::vector<std::string> providers_;
  std::vector<std::string> models_;
  std::vector<std::string> experiments_;
  std::map<std::string, int, std::less<>> model_lookup_;
  std::set<std::string> priced_;  // pricing keys at start-up: the set a reload may not change
  // By model index; "other" and unpriced models cost 0. Atomic so a reload can
  // change prices under running requests (a request may see input and output
  // prices of different generations for one instant).
  struct AtomicPrice {
    std::atomic<double> input{0};
    std::atomic<double> output{0};
  };
  std::vector<AtomicPrice> prices_;

  std::shared_ptr<prometheus::Registry> registry_;
  HistogramFamily duration_family_;
  HistogramFamily ttfb_family_;
  HistogramFamily overhead_family_;

  // Indexed by pm(provider, model) (× status / × token type).
  std::vector<prometheus::Counter*> requests_;  // [pm * 3 + status]
  std::vector<ShardedHistogram*> duration_;     // [pm]
  std::vector<ShardedHistogram*> ttfb_;         // [pm]
  std::vector<prometheus::Counter*> tokens_;    // [pm * 2 + (0 prompt | 1 completion)]
  std::vector<prometheus::Counter*> cost_;      // [pm]
  // [((experiment * P + from) * P + to) * reasons + reason], null for from == to
  std::vector<prometheus::Counter*> fallbacks_;
  std::vector<prometheus::Counter*> rollbacks_;     // [experiment * reasons + reason]
  std::vector<prometheus::Counter*> redis_errors_;  // by kRedisOps
  std::vector<prometheus::Gauge*> rollout_state_;   // [experiment * states + state]
  std::vector<prometheus::Gauge*> canary_weight_;   // by experiment
  prometheus::Gauge* inflight_ = nullptr;
  prometheus::Counter* random_keys_ = nullptr;
  // The judge v2's families (build_judge_families).
  void build_judge_families();
  std::vector<prometheus::Counter*> quality_answers_;  // [provider * kQualitySignals + signal]
  std::vector<prometheus::Counter*> quality_flagged_;
  std::vector<prometheus::Counter*> verdicts_;         // [experiment * kinds + kind]
  std::vector<prometheus::Gauge*> check_outcomes_;     // [(experiment * checks + check) * 4 + outcome]
  std::vector<prometheus::Counter*> holds_;            // [experiment * reasons + reason]
  std::vector<prometheus::Gauge*> srm_mismatch_;       // by experiment
  std::vector<prometheus::Gauge*> canary_user_share_;  // by experiment
  // Shadow mode, by experiment.
  struct ShadowSeries {
    std::array<prometheus::Counter*, 4> results{};
    std::array<prometheus::Counter*, 4> drops{};
    prometheus::Counter* cost_more = nullptr;
    prometheus::Counter* cost_less = nullptr;
    prometheus::Histogram* latency_delta = nullptr;
  };
  std::vector<ShadowSeries> shadow_;
  bool has_experiment(std::size_t e) const noexcept { return e < experiments_.size(); }
  // Redis topology (issue 16).
  prometheus::Counter* redis_failovers_ = nullptr;
  prometheus::Counter* redis_redirects_[2] = {nullptr, nullptr};  // moved, ask
  prometheus::Counter* redis_discovery_errors_ = nullptr;
  ShardedHistogram* overhead_ = nullptr;
  std::mutex rollout_state_mutex_;  // keeps "exactly one state is 1" (per experiment) under concurrent setters
};

}  // namespace canaryd::metrics
