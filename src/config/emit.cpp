// Config -> YAML for `canaryd --check-config`: every key with its effective
// value, sections in SPEC order. Secrets appear only as a comment naming the
// variable they came from, so the output is itself a loadable config and
// never holds a secret value.
#include <yaml-cpp/yaml.h>

#include "canaryd/config.hpp"
#include "config/parse_util.hpp"

namespace canaryd::config {

namespace {

using detail::format_duration;
using detail::format_number;

std::string secret_note(const std::string& env, bool is_set) {
  return is_set ? "<redacted: set from " + env + ">" : "<unset: " + env + ">";
}

class Out {
 public:
  Out() { e_.SetIndent(2); }

  template <class T>
  void kv(const char* key, const T& value) {
    e_ << YAML::Key << key << YAML::Value << value;
  }
  void str(const char* key, const std::string& value) {
    // Quoted so that "", "0" or "yes" read back as the same string.
    e_ << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
  }
  void dur(const char* key, Duration d) { e_ << YAML::Key << key << YAML::Value << format_duration(d); }
  void num(const char* key, double v) { e_ << YAML::Key << key << YAML::Value << format_number(v); }
  void flag(const char* key, bool v) { e_ << YAML::Key << key << YAML::Value << (v ? "true" : "false"); }
  void env(const char* key, const std::string& env, bool is_set, const std::string& extra = "") {
    str(key, env);
    if (!env.empty()) e_ << YAML::Comment(secret_note(env, is_set) + extra);
  }
  void list(const char* key, const std::vector<std::string>& items) {
    e_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& i : items) e_ << YAML::DoubleQuoted << i;
    e_ << YAML::EndSeq;
  }
  void map(const char* key, const std::map<std::string, std::string>& m) {
    e_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    for (const auto& [k, v] : m) e_ << YAML::Key << YAML::DoubleQuoted << k << YAML::Value << YAML::DoubleQuoted << v;
    e_ << YAML::EndMap;
  }
  void comment(const std::string& text) { e_ << YAML::Comment(text); }
  void begin(const char* key) { e_ << YAML::Key << key << YAML::Value << YAML::BeginMap; }
  YAML::Emitter& raw() { return e_; }
  std::string text() const { return std::string(e_.c_str()) + "\n"; }

 private:
  YAML::Emitter e_;
};

// The split's keys (split:, or inline in an experiments[] entry).
void emit_split_keys(Out& o, const SplitConfig& sp) {
  o.str("control", sp.control);
  o.str("canary", sp.canary);
  o.list("sticky_key", sp.sticky_key);
  o.str("salt", sp.salt);
  o.dur("pin_ttl", sp.pin_ttl);
  o.str("override_header", sp.override_header);
}

void emit_rollout(Out& o, const RolloutConfig& r) {
  YAML::Emitter& e = o.raw();
  e << YAML::Key << "steps" << YAML::Value << YAML::BeginSeq;
  for (const auto& step : r.steps) {
    e << YAML::Flow << YAML::BeginMap;
    o.num("weight", step.weight);
    o.dur("pause", step.pause);
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
  o.begin("analysis");
  o.dur("interval", r.analysis.interval);
  o.dur("window", r.analysis.window);
  o.kv("min_requests", r.analysis.min_requests);
  o.num("alpha", r.analysis.alpha);
  o.num("max_error_rate", r.analysis.max_error_rate);
  o.num("critical_error_rate", r.analysis.critical_error_rate);
  o.dur("max_p99_latency", r.analysis.max_p99_latency);
  o.flag("relative_to_control", r.analysis.relative_to_control);
  o.num("max_latency_increase", r.analysis.max_latency_increase);
  o.dur("latency_tolerance", r.analysis.latency_tolerance);
  o.kv("failure_limit", r.analysis.failure_limit);
  o.kv("inconclusive_limit", r.analysis.inconclusive_limit);
  o.begin("checks");
  for (std::size_t i = 0; i < kCheckCount; ++i) {
    const auto id = static_cast<CheckId>(i);
    const CheckConfig& ck = r.analysis.checks[i];
    e << YAML::Key << std::string(kCheckNames[i]) << YAML::Value << YAML::Flow << YAML::BeginMap;
    o.flag("enabled", ck.enabled);
    o.flag("dry_run", ck.dry_run);
    if (id != CheckId::critical_error_rate) o.flag("critical", ck.critical);
    if (is_quality_check(id)) {
      o.num("max_increase", ck.max_increase);
      o.kv("direction", ck.lower_is_worse ? "decrease" : "increase");
    }
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  o.begin("srm");
  o.flag("enabled", r.analysis.srm.enabled);
  o.num("alpha", r.analysis.srm.alpha);
  e << YAML::EndMap;
  e << YAML::EndMap;
  o.kv("on_failure", r.on_failure == OnFailure::rollback ? "rollback" : "pause");
  o.flag("auto_promote", r.auto_promote);
}

void emit_fallback(Out& o, const FallbackConfig& f) {
  o.flag("enabled", f.enabled);
  o.list("on", f.on);
  o.map("models", f.models);
  o.num("budget", f.budget);
}

void emit_match(Out& o, const ExperimentMatch& m) {
  YAML::Emitter& e = o.raw();
  o.begin("match");
  if (!m.models.empty()) o.list("models", m.models);
  if (!m.routes.empty()) o.list("routes", m.routes);
  if (!m.header.empty()) {
    e << YAML::Key << "header" << YAML::Value << YAML::Flow << YAML::BeginMap;
    o.str("name", m.header);
    o.str("value", m.header_value);
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
}

// "gpt (gpt-4.1), claude (claude-*, header X-Team: batch), default (everything else)".
std::string match_order(const Config& c) {
  std::string out;
  for (const auto& x : c.experiments) {
    std::string what;
    if (x.match.any) what = "everything else";
    for (const auto& m : x.match.models) what += (what.empty() ? "" : ", ") + m;
    for (const auto& r : x.match.routes) what += (what.empty() ? "" : ", ") + r;
    if (!x.match.header.empty())
      what += (what.empty() ? "header " : ", header ") + x.match.header + ": " + x.match.header_value;
    out += (out.empty() ? "" : "; ") + x.name + " (" + what + ")";
  }
  if (!c.default_upstream.empty()) out += "; anything else to upstream " + c.default_upstream;
  return out;
}

}  // namespace

// One line per key, in the order of SPEC §2's example: a flat list reads (and
// reviews) better than a split into helpers per section.
std::string to_yaml_redacted(const Config& c) {
  Out o;
  YAML::Emitter& e = o.raw();
  e << YAML::BeginMap;

  const ServerConfig& s = c.server;
  o.begin("server");
  o.str("listen", s.listen);
  o.kv("threads", s.threads);
  if (s.threads == 0) o.comment("one per core");
  o.kv("max_body_bytes", s.max_body_bytes);
  o.kv("max_header_bytes", s.max_header_bytes);
  o.kv("max_connections", s.max_connections);
  o.dur("header_timeout", s.header_timeout);
  o.dur("idle_timeout", s.idle_timeout);
  o.dur("drain_delay", s.drain_delay);
  o.dur("shutdown_grace", s.shutdown_grace);
  o.env("client_keys_env", s.client_keys_env, !s.client_keys_value.empty(),
        s.client_keys_value.empty() ? "" : " (" + std::to_string(s.client_keys_value.size()) + " keys)");
  o.env("admin_token_env", s.admin_token_env, !s.admin_token_value.empty());
  o.list("trusted_proxies", s.trusted_proxies);
  o.flag("access_log", s.access_log);
  e << YAML::EndMap;

  o.begin("upstreams");
  for (const auto& [name, u] : c.upstreams) {
    e << YAML::Key << name << YAML::Value << YAML::BeginMap;
    o.str("base_url", u.base_url);
    o.env("api_key_env", u.api_key_env, !u.api_key_value.empty());
    o.dur("connect_timeout", u.connect_timeout);
    o.dur("timeout", u.timeout);
    o.dur("stream_idle_timeout", u.stream_idle_timeout);
    o.kv("max_connections", u.max_connections);
    o.kv("max_idle_connections", u.max_idle_connections);
    o.dur("pool_wait", u.pool_wait);
    o.kv("max_response_bytes", u.max_response_bytes);
    o.flag("tls_verify", u.tls_verify);
    o.str("ca_file", u.ca_file);
    o.str("proxy", u.proxy);
    o.map("models", u.models);
    e << YAML::EndMap;
  }
  e << YAML::EndMap;

  if (!c.split.control.empty()) {
    o.begin("split");
    emit_split_keys(o, c.split);
    e << YAML::EndMap;
    o.begin("rollout");
    emit_rollout(o, c.rollout);
    e << YAML::EndMap;
    o.begin("fallback");
    emit_fallback(o, c.fallback);
    e << YAML::EndMap;
  }

  // The resolved experiments (issue 17), in the order a request is matched;
  // the top-level split above is "default", last.
  bool listed = false;
  for (const auto& x : c.experiments) {
    if (x.match.any) continue;
    if (!listed) {
      e << YAML::Key << "experiments" << YAML::Value << YAML::Comment("matched in order: " + match_order(c))
        << YAML::BeginSeq;
      listed = true;
    }
    e << YAML::BeginMap;
    o.str("name", x.name);
    emit_match(o, x.match);
    emit_split_keys(o, x.split);
    o.begin("rollout");
    emit_rollout(o, x.rollout);
    e << YAML::EndMap;
    o.begin("fallback");
    emit_fallback(o, x.fallback);
    e << YAML::EndMap;
    e << YAML::EndMap;
  }
  if (listed) e << YAML::EndSeq;
  if (!c.default_upstream.empty()) o.str("default_upstream", c.default_upstream);

  const ShadowConfig& sh = c.shadow;
  o.begin("shadow");
  o.flag("enabled", sh.enabled);
  o.num("percent", sh.percent);
  o.num("max_per_second", sh.max_per_second);
  o.kv("max_in_flight", sh.max_in_flight);
  o.flag("log_bodies", sh.log_bodies);
  o.str("bodies_file", sh.bodies_file);
  e << YAML::EndMap;

  if (c.redis) {
    const RedisConfig& rd = *c.redis;
    o.begin("redis");
    o.str("url", rd.url);
    o.env("password_env", rd.password_env, !rd.password_value.empty());
    // url carries the topology, the master name and the ACL user; only the
    // sentinels' own password is a key of its own.
    if (rd.mode == RedisMode::sentinel)
      o.env("sentinel_password_env", rd.sentinel_password_env, !rd.sentinel_password_value.empty());
    o.dur("timeout", rd.timeout);
    o.str("namespace", rd.ns);
    o.flag("tls_verify", rd.tls_verify);
    o.str("ca_file", rd.ca_file);
    e << YAML::EndMap;
  }

  o.begin("pricing");
  for (const auto& [model, price] : c.pricing) {
    e << YAML::Key << YAML::DoubleQuoted << model << YAML::Value << YAML::Flow << YAML::BeginMap;
    o.num("input", price.input);
    o.num("output", price.output);
    e << YAML::EndMap;
  }
  e << YAML::EndMap;

  o.begin("metrics");
  o.str("prefix", c.metrics.prefix);
  e << YAML::EndMap;

  o.begin("log");
  o.str("level", c.log.level);
  e << YAML::EndMap;

  e << YAML::EndMap;
  std::string out = o.text();
  if (!c.redis) out += "# redis: not configured (in-process store, one replica)\n";
  return out;
}

}  // namespace canaryd::config
