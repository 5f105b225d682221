// canaryd's configuration as plain structs with in-class defaults (SPEC §2).
// Loaded from YAML by config::load(); a reload builds a new Config and swaps a
// std::shared_ptr<const Config>. Secrets are resolved from the environment at
// load time into the `*_value` fields and never printed (see to_yaml_redacted).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace canaryd::config {

using Duration = std::chrono::milliseconds;
using namespace std::chrono_literals;

struct ServerConfig {
  std::string listen = "0.0.0.0:8080";
  std::string listen_host = "0.0.0.0";  // resolved from listen
  std::uint16_t listen_port = 8080;     // resolved from listen (0 = any free port)
  int threads = 0;                      // 0 = one per core
  std::uint64_t max_body_bytes = 10 * 1024 * 1024;
  std::uint32_t max_header_bytes = 16 * 1024;  // 431 above
  std::uint32_t max_connections = 10000;       // accepted and closed above
  Duration header_timeout = 10s;
  Duration idle_timeout = 60s;
  Duration drain_delay = 5s;
  Duration shutdown_grace = 30s;
  std::string client_keys_env;                 // optional
  std::vector<std::string> client_keys_value;  // secret, from the env var (comma-separated)
  std::string admin_token_env;                 // optional; unset = /admin/* off
  std::string admin_token_value;               // secret
  std::vector<std::string> trusted_proxies;    // CIDRs whose X-Forwarded-For is believed
  bool access_log = true;                      // one JSON line per request
};

struct UpstreamConfig {
  std::string name;      // the map key; the `provider` metric label
  std::string base_url;  // "https://api.openai.com/v1"
  // resolved from base_url
  bool tls = true;
  std::string host;
  std::uint16_t port = 443;
  std::string base_path;  // "/v1" (no trailing slash; may be empty)
  std::string api_key_env;
  std::string api_key_value;  // secret
  Duration connect_timeout = 3s;
  Duration timeout = 30s;              // whole non-streaming call; first byte of a stream
  Duration stream_idle_timeout = 60s;  // max gap between two chunks of a relayed stream
  std::uint32_t max_connections = 256;
  std::uint32_t max_idle_connections = 64;              // idle pooled connections kept (the rest close)
  Duration pool_wait = 1s;                              // wait for a free connection, then 503
  std::uint64_t max_response_bytes = 64 * 1024 * 1024;  // non-streaming bodies
  bool tls_verify = true;
  std::string ca_file;
  std::string proxy;  // "http://host:3128" (HTTP CONNECT), "" = direct
  // resolved from proxy
  std::string proxy_host;
  std::uint16_t proxy_port = 0;
  std::map<std::string, std::string> models;  // requested model -> model sent
};

struct SplitConfig {
  std::string control;
  std::string canary;
  std::vector<std::string> sticky_key = {"header:X-User-ID", "body:user", "client_ip"};
  std::string salt;
  Duration pin_ttl = 1h;  // 0 = hash only
  std::string override_header = "X-Canary";
};

struct RolloutStep {
  double weight = 0;     // percent of users on the canary, two decimals
  Duration pause = 0ms;  // 0 = no pause (the last step has none)
};

// The judge's checks (docs/rollout.md, "The judge"). The names are config keys
// (rollout.analysis.checks.<name>) and metric label values; the last five are
// the LLM quality signals, in canaryd::QualitySignal's order.
enum class CheckId : std::uint8_t {
  error_rate,
  critical_error_rate,
  duration,
  ttfb,
  p99_latency,
  truncated,
  content_filter,
  empty,
  tool_call_json,
  response_json,
};
inline constexpr std::size_t kCheckCount = 10;
inline constexpr std::size_t kFirstQualityCheck = 5;
inline constexpr std::string_view kCheckNames[kCheckCount] = {
    "error_rate", "critical_error_rate", "duration", "ttfb",           "p99_latency",
    "truncated",  "content_filter",      "empty",    "tool_call_json", "response_json"};
constexpr std::string_view check_name(CheckId id) { return kCheckNames[static_cast<std::size_t>(id)]; }
constexpr bool is_quality_check(CheckId id) { return static_cast<std::size_t>(id) >= kFirstQualityCheck; }

// rollout.analysis.checks.<name>.
struct CheckConfig {
  bool enabled = true;
  bool dry_run = false;   // judged and shown, never acts
  bool critical = false;  // acts on its first failing look, not after failure_limit
  // Quality checks: H0 "canary odds <= (1 + max_increase) x control's".
  double max_increase = 0.5;
  bool lower_is_worse = false;  // direction: decrease (the share falling is the failure)
};

struct SrmConfig {
  bool enabled = true;
  double alpha = 0.001;  // per rollout step
};

struct AnalysisConfig {
  Duration interval = 10s;
  Duration window = 5min;
  std::uint64_t min_requests = 100;  // no pass below this many canary requests in the window
  double alpha = 0.01;               // false-rollback budget over a whole rollout, split among the checks
  double max_error_rate = 0.01;
  double critical_error_rate = 0.2;  // far above it: fails at once
  Duration max_p99_latency = 0ms;    // 0 = no absolute ceiling
  bool relative_to_control = true;
  double max_latency_increase = 0.25;     // duration and TTFB against control's
  Duration latency_tolerance = 10ms;      // ... plus this: a slower canary by less is never a failure
  std::uint32_t failure_limit = 2;        // consecutive failing looks before acting (critical checks: 1)
  std::uint32_t inconclusive_limit = 60;  // consecutive inconclusive looks before pausing; 0 = never
  std::array<CheckConfig, kCheckCount> checks{};
  SrmConfig srm;

  CheckConfig& check(CheckId id) { return checks[static_cast<std::size_t>(id)]; }
  const CheckConfig& check(CheckId id) const { return checks[static_cast<std::size_t>(id)]; }
};

enum class OnFailure { rollback, pause };

struct RolloutConfig {
  std::vector<RolloutStep> steps;  // empty: no automatic rollout, weight 0 until set by hand
  AnalysisConfig analysis;
  OnFailure on_failure = OnFailure::rollback;
  bool auto_promote = true;
};

struct FallbackConfig {
  bool enabled = true;
  // any of: connect_error, tls_error, timeout, 5xx, 429
  std::vector<std::string> on = {"connect_error", "tls_error", "timeout", "5xx", "429"};
  std::map<std::string, std::string> models;
  double budget = 0.2;
};

// experiments[].match (issue 17): which requests an experiment decides. Every
// part given must match; a part left out matches anything. At least one part
// is given, except for the catch-all experiment `default` (the top-level split).
struct ExperimentMatch {
  std::vector<std::string> models;  // globs ('*', '?') on the requested model; any of them
  std::vector<std::string> routes;  // split routes ("/v1/chat/completions", ...); any of them
  std::string header;               // a request header's name ("" = none) ...
  std::string header_value;         // ... and the value it must have, exactly
  bool any = false;                 // the catch-all: what no other experiment matches
};

// One migration: its own arms, split, rollout (state machine, windows, judge,
// epoch, pins, Redis keys) and fallback. Today's top-level split + rollout +
// fallback are the experiment named "default".
struct ExperimentConfig {
  std::string name;
  ExperimentMatch match;
  SplitConfig split;
  RolloutConfig rollout;
  FallbackConfig fallback;
};

// The top-level split's experiment, and the name unmatched requests carry
// (metrics, X-Canaryd-Experiment, the access log); neither is a name an
// experiments[] entry may take.
inline constexpr std::string_view kDefaultExperiment = "default";
inline constexpr std::string_view kNoExperiment = "none";

// Shadow mode: a share of the split requests control serves is mirrored to the
// canary in the background and the two answers compared. Off by default, and
// capped (per replica) because every shadow is a paid call.
struct ShadowConfig {
  bool enabled = false;
  double percent = 0;               // of control-served split requests, two decimals
  double max_per_second = 1;        // token bucket (burst = one second's worth, at least 1)
  std::uint32_t max_in_flight = 4;  // shadows waiting on the canary at once
  bool log_bodies = false;          // prompts and both answers to bodies_file (never to stdout)
  std::string bodies_file;          // required when log_bodies
};

// How canaryd finds its Redis (redis.url's scheme, redis.sentinels, redis.cluster).
enum class RedisMode { standalone, sentinel, cluster };

struct RedisNode {
  std::string host;  // IPv6 without brackets
  std::uint16_t port = 0;
};

struct RedisConfig {
  // The whole topology as one URL: as written, or (when redis.sentinels,
  // redis.master_name, redis.cluster or redis.username are used) the canonical
  // URL they amount to, so comparing two urls compares two topologies.
  std::string url = "redis://127.0.0.1:6379/0";
  // resolved from url (and the keys above)
  RedisMode mode = RedisMode::standalone;
  bool tls = false;
  std::string host = "127.0.0.1";  // standalone: the server; else the first of `nodes`
  std::uint16_t port = 6379;
  // sentinel: the sentinels; cluster: the seed nodes; standalone: empty (host:port).
  std::vector<RedisNode> nodes;
  std::string master_name;  // sentinel: the name the sentinels monitor the primary under
  int db = 0;
  std::string username;  // ACL user; "" = AUTH <password> (the default user)
  std::string password_env;
  std::string password_value;           // secret
  std::string sentinel_password_env;    // sentinel: AUTH <password> to the sentinels themselves
  std::string sentinel_password_value;  // secret
  Duration timeout = 20ms;
  std::string ns = "canaryd";  // YAML key: namespace
  bool tls_verify = true;
  std::string ca_file;
};

struct Price {
  double input = 0;   // USD per million prompt tokens
  double output = 0;  // USD per million completion tokens

  // USD for one call: prompt/1e6 × input + completion/1e6 × output.
  double cost(std::uint64_t prompt_tokens, std::uint64_t completion_tokens) const {
    return static_cast<double>(prompt_tokens) / 1e6 * input + static_cast<double>(completion_tokens) / 1e6 * output;
  }
};

// The one cost rule (metrics, the report, the access log, the shadow's
// comparison): the model's Price::cost, 0 for an unpriced model.
double cost_usd(const std::map<std::string, Price>& pricing, std::string_view model, std::uint64_t prompt_tokens,
                std::uint64_t completion_tokens);

struct MetricsConfig {
  std::string prefix = "ai_proxy";
};

struct LogConfig {
  std::string level = "info";  // trace|debug|info|warn|error|off; --log-level overrides
};

struct Config {
  std::string source_path;
  ServerConfig server;
  std::map<std::string, UpstreamConfig> upstreams;
  SplitConfig split;  // the top-level split (experiment "default"), when given
  RolloutConfig rollout;
  FallbackConfig fallback;
  // Resolved by the loader (issue 17): the experiments[] entries in order,
  // then "default" (the top-level split, matching what no other does) when
  // there is a top-level split. A config without experiments: is just "default".
  std::vector<ExperimentConfig> experiments;
  // The upstream of requests no experiment matches (no top-level split), and
  // of the routes that are not split. "" = the default experiment's control.
  std::string default_upstream;
  ShadowConfig shadow;
  std::optional<RedisConfig> redis;  // absent: in-process store, one replica
  std::map<std::string, Price> pricing;
  MetricsConfig metrics;
  LogConfig log;

  const UpstreamConfig& control() const { return upstreams.at(split.control); }
  const UpstreamConfig& canary() const { return upstreams.at(split.canary); }
  // Where requests outside every experiment go: default_upstream, else the
  // default experiment's control.
  const UpstreamConfig& unmatched_upstream() const {
    return upstreams.at(default_upstream.empty() ? split.control : default_upstream);
  }
  // The index of the experiment named `name`, or -1.
  int experiment_index(std::string_view name) const;
  // Every model name the config mentions (pricing, upstream models, fallback
  // models): the values the `model` metric label may take besides "other".
  std::vector<std::string> known_models() const;
};

// The top-level split + rollout + fallback as the experiment "default" that
// matches everything (what load() puts last in experiments; tests that build a
// Config by hand use it directly).
ExperimentConfig default_experiment(const Config& config);

// Thrown only at start-up / reload. what() is "FILE:LINE: key.path: what is wrong".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads the file, resolves *_env secrets from the environment, validates.
// Throws ConfigError naming the file, line and key.
Config load_file(const std::string& path);
// Same from a string (tests); `name` stands for the file name in messages.
Config load_string(const std::string& yaml, const std::string& name = "<string>");

// The resolved config as YAML, secrets shown as "<redacted: set from ENV>" or
// "<unset: ENV>", for --check-config.
std::string to_yaml_redacted(const Config& config);

// "500ms", "30s", "10m", "1h", "0" -> Duration; throws std::invalid_argument.
Duration parse_duration(const std::string& text);

}  // namespace canaryd::config
