// YAML -> Config: walks the document with yaml-cpp, checks every key against
// the known set, converts and validates each value, resolves *_env secrets.
// Every failure is a ConfigError "FILE:LINE: key.path: what is wrong".
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "canaryd/config.hpp"
#include "config/match.hpp"
#include "config/parse_util.hpp"

namespace canaryd::config {

namespace {

using detail::format_number;

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

int line_of(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : fallback;
}

// One key/value of a mapping (or one element of a sequence, key undefined).
struct Field {
  YAML::Node value;
  std::string path;
  int key_line = 1;
  // Where to point at for a problem with the value: the value itself when it
  // is written out, else its key (a `key:` with nothing after it).
  int line() const { return value.IsNull() ? key_line : line_of(value, key_line); }
};

class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(int line, const std::string& path, const std::string& what) const {
    throw ConfigError(file_ + ":" + std::to_string(line) + ": " + path + ": " + what);
  }
  [[noreturn]] void fail(const Field& f, const std::string& what) const { fail(f.line(), f.path, what); }

  // ---- containers ---------------------------------------------------------

  // Entries of a mapping whose keys are data (upstream names, models, pricing).
  std::vector<std::pair<std::string, Field>> entries(const Field& f) const {
    std::vector<std::pair<std::string, Field>> out;
    if (f.value.IsNull()) return out;
    if (!f.value.IsMap()) fail(f, "expected a mapping");
    std::map<std::string, int> seen;
    for (auto it = f.value.begin(); it != f.value.end(); ++it) {
      const int kline = line_of(it->first, f.line());
      if (!it->first.IsScalar()) fail(kline, f.path, "keys must be plain strings");
      const std::string key = it->first.Scalar();
      const std::string path = f.path + "." + key;
      if (key.empty()) fail(kline, f.path, "empty key");
      if (auto [pos, inserted] = seen.emplace(key, kline); !inserted)
        fail(kline, path, "duplicate key (first at line " + std::to_string(pos->second) + ")");
      out.emplace_back(key, Field{it->second, path, kline});
    }
    return out;
  }

  std::vector<Field> elements(const Field& f) const {
    std::vector<Field> out;
    if (f.value.IsNull()) return out;
    if (!f.value.IsSequence()) fail(f, "expected a list");
    std::size_t i = 0;
    for (const auto& item : f.value) {
      out.push_back(Field{item, f.path + "[" + std::to_string(i) + "]", line_of(item, f.line())});
      ++i;
    }
    return out;
  }

  // ---- scalars ------------------------------------------------------------

  std::string text(const Field& f) const {
    if (f.value.IsNull()) return "";
    if (!f.value.IsScalar()) fail(f, "expected a string");
    return f.value.Scalar();
  }

  std::string nonempty_text(const Field& f) const {
    std::string s = text(f);
    if (s.empty()) fail(f, "must not be empty");
    return s;
  }

  bool boolean(const Field& f) const {
    bool b = false;
    if (!f.value.IsScalar() || !YAML::convert<bool>::decode(f.value, b)) fail(f, "expected true or false" + got(f));
    return b;
  }

  std::int64_t integer(const Field& f, std::int64_t min, std::int64_t max) const {
    const std::string s = f.value.IsScalar() ? trim(f.value.Scalar()) : std::string();
    std::int64_t v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    const bool ok = !s.empty() && res.ec == std::errc{} && res.ptr == s.data() + s.size();
    if (!ok || v < min || v > max) {
      std::string range = max == std::numeric_limits<std::int64_t>::max()
                              ? ">= " + std::to_string(min)
                              : "between " + std::to_string(min) + " and " + std::to_string(max);
      fail(f, (ok ? "must be " : "expected an integer ") + range + got(f));
    }
    return v;
  }

  double number(const Field& f, double min, double max) const {
    const std::string s = f.value.IsScalar() ? trim(f.value.Scalar()) : std::string();
    double v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    const bool ok = !s.empty() && res.ec == std::errc{} && res.ptr == s.data() + s.size() && std::isfinite(v);
    if (!ok) fail(f, "expected a number" + got(f));
    if (v < min || v > max) fail(f, "must be between " + format_number(min) + " and " + format_number(max) + got(f));
    return v;
  }

  Duration duration(const Field& f, bool allow_zero) const {
    if (!f.value.IsScalar()) fail(f, "expected a duration such as 500ms, 30s, 10m or 1h30m");
    Duration d{};
    try {
      d = parse_duration(f.value.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(f, e.what());
    }
    if (!allow_zero && d.count() == 0) fail(f, "must be greater than zero");
    return d;
  }

  // An env var name; returns the variable's (trimmed) value, "" when unset.
  std::string secret(const Field& f, std::string& env_name) const {
    env_name = text(f);
    if (env_name.empty()) return "";
    if (!detail::is_env_name(env_name))
      fail(f, "\"" + env_name + "\" is not an environment variable name (the secret itself never goes in the file)");
    const char* value = std::getenv(env_name.c_str());
    return value ? trim(value) : std::string();
  }

  std::string file_path(const Field& f) const {
    std::string path = text(f);
    if (!path.empty()) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(path, ec)) fail(f, "file \"" + path + "\" not found");
    }
    return path;
  }

  static std::string got(const Field& f) {
    if (f.value.IsNull()) return ", got nothing";
    if (!f.value.IsScalar()) return f.value.IsMap() ? ", got a mapping" : ", got a list";
    return ", got \"" + f.value.Scalar() + "\"";
  }

 private:
  std::string file_;
};

// A mapping with a fixed set of keys: unknown and duplicate keys are errors.
class Section {
 public:
  Section(const Loader& loader, const Field& f, std::vector<std::string_view> known)
      : loader_(loader), path_(f.path), line_(f.key_line) {
    if (f.value.IsNull()) return;  // `section:` with nothing in it = all defaults
    if (!f.value.IsMap()) loader.fail(f, "expected a mapping" + Loader::got(f));
    for (auto it = f.value.begin(); it != f.value.end(); ++it) {
      const int kline = line_of(it->first, f.line());
      if (!it->first.IsScalar()) loader.fail(kline, path_, "keys must be plain strings");
      const std::string key = it->first.Scalar();
      const std::string path = path_.empty() ? key : path_ + "." + key;
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string what = "unknown key";
        std::string_view best;
        std::size_t best_d = std::string::npos;
        for (auto k : known) {
          if (auto d = detail::edit_distance(key, k); d < best_d) {
            best_d = d;
            best = k;
          }
        }
        if (!best.empty() && best_d <= std::max<std::size_t>(2, key.size() / 3))
          what += " (did you mean \"" + std::string(best) + "\"?)";
        loader.fail(kline, path, what);
      }
      if (auto found = fields_.find(key); found != fields_.end())
        loader.fail(kline, path, "duplicate key (first at line " + std::to_string(found->second.key_line) + ")");
      fields_.emplace(key, Field{it->second, path, kline});
    }
  }

  const Field* get(const std::string& key) const {
    auto it = fields_.find(key);
    return it == fields_.end() ? nullptr : &it->second;
  }

  const Field& require(const std::string& key) const {
    if (const Field* f = get(key)) return *f;
    loader_.fail(line_, path_.empty() ? key : path_ + "." + key, "required key missing");
  }

  template <class Fn>
  void with(const std::string& key, Fn&& fn) const {
    if (const Field* f = get(key)) fn(*f);
  }

 private:
  const Loader& loader_;
  std::string path_;
  int line_;
  std::map<std::string, Field> fields_;
};

std::map<std::string, std::string> load_model_map(const Loader& l, const Field& f) {
  std::map<std::string, std::string> out;
  for (auto& [key, value] : l.entries(f)) out[key] = l.nonempty_text(value);
  return out;
}

bool valid_upstream_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

void load_server(const Loader& l, const Field& f, ServerConfig& s) {
  Section sec(
      l, f,
      {"listen", "threads", "max_body_bytes", "max_header_bytes", "max_connections", "header_timeout", "idle_timeout",
       "drain_delay", "shutdown_grace", "client_keys_env", "admin_token_env", "trusted_proxies", "access_log"});
  sec.with("listen", [&](const Field& v) {
    s.listen = l.nonempty_text(v);
    try {
      auto hp = detail::parse_host_port(s.listen);
      s.listen_host = hp.host;
      s.listen_port = hp.port;
    } catch (const std::invalid_argument& e) {
      l.fail(v, std::string(e.what()) + " (expected \"host:port\" or \"[v6]:port\")");
    }
  });
  sec.with("threads", [&](const Field& v) { s.threads = static_cast<int>(l.integer(v, 0, 1024)); });
  sec.with("max_body_bytes", [&](const Field& v) {
    s.max_body_bytes = static_cast<std::uint64_t>(l.integer(v, 1, std::numeric_limits<std::int64_t>::max()));
  });
  sec.with("max_header_bytes", [&](const Field& v) {
    s.max_header_bytes = static_cast<std::uint32_t>(l.integer(v, 1024, 16 * 1024 * 1024));
  });
  sec.with("max_connections",
           [&](const Field& v) { s.max_connections = static_cast<std::uint32_t>(l.integer(v, 1, 10'000'000)); });
  sec.with("header_timeout", [&](const Field& v) { s.header_timeout = l.duration(v, false); });
  sec.with("idle_timeout", [&](const Field& v) { s.idle_timeout = l.duration(v, false); });
  sec.with("drain_delay", [&](const Field& v) { s.drain_delay = l.duration(v, true); });
  sec.with("shutdown_grace", [&](const Field& v) { s.shutdown_grace = l.duration(v, true); });
  sec.with("client_keys_env", [&](const Field& v) {
    std::string raw = l.secret(v, s.client_keys_env);
    std::stringstream in(raw);
    for (std::string key; std::getline(in, key, ',');) {
      key = trim(key);
      if (!key.empty()) s.client_keys_value.push_back(key);
    }
  });
  sec.with("admin_token_env", [&](const Field& v) { s.admin_token_value = l.secret(v, s.admin_token_env); });
  sec.with("trusted_proxies", [&](const Field& v) {
    for (const Field& item : l.elements(v)) {
      try {
        s.trusted_proxies.push_back(detail::normalize_cidr(trim(l.nonempty_text(item))));
      } catch (const std::invalid_argument& e) {
        l.fail(item, e.what());
      }
    }
  });
  sec.with("access_log", [&](const Field& v) { s.access_log = l.boolean(v); });
}

void load_upstream(const Loader& l, const std::string& name, const Field& f, UpstreamConfig& u) {
  Section sec(l, f,
              {"base_url", "api_key_env", "connect_timeout", "timeout", "stream_idle_timeout", "max_connections",
               "max_idle_connections", "pool_wait", "max_response_bytes", "tls_verify", "ca_file", "proxy", "models"});
  u.name = name;
  {
    const Field& v = sec.require("base_url");
    u.base_url = l.nonempty_text(v);
    detail::Url url;
    try {
      url = detail::parse_url(u.base_url);
    } catch (const std::invalid_argument& e) {
      l.fail(v, e.what());
    }
    if (url.scheme != "http" && url.scheme != "https")
      l.fail(v, "scheme must be http:// or https://, got \"" + url.scheme + "://\"");
    if (url.has_userinfo)
      l.fail(v, "credentials in the URL are not allowed: name an environment variable in api_key_env");
    u.tls = url.scheme == "https";
    u.host = url.host;
    u.port = url.port.value_or(u.tls ? 443 : 80);
    u.base_path = url.path;
    while (!u.base_path.empty() && u.base_path.back() == '/') u.base_path.pop_back();
  }
  sec.with("api_key_env", [&](const Field& v) { u.api_key_value = l.secret(v, u.api_key_env); });
  sec.with("connect_timeout", [&](const Field& v) { u.connect_timeout = l.duration(v, false); });
  sec.with("timeout", [&](const Field& v) { u.timeout = l.duration(v, false); });
  sec.with("stream_idle_timeout", [&](const Field& v) { u.stream_idle_timeout = l.duration(v, false); });
  sec.with("max_connections",
           [&](const Field& v) { u.max_connections = static_cast<std::uint32_t>(l.integer(v, 1, 1'000'000)); });
  sec.with("max_idle_connections",
           [&](const Field& v) { u.max_idle_connections = static_cast<std::uint32_t>(l.integer(v, 0, 1'000'000)); });
  sec.with("pool_wait", [&](const Field& v) { u.pool_wait = l.duration(v, true); });
  sec.with("max_response_bytes", [&](const Field& v) {
    u.max_response_bytes = static_cast<std::uint64_t>(l.integer(v, 1, std::numeric_limits<std::int64_t>::max()));
  });
  sec.with("tls_verify", [&](const Field& v) { u.tls_verify = l.boolean(v); });
  sec.with("ca_file", [&](const Field& v) { u.ca_file = l.file_path(v); });
  sec.with("proxy", [&](const Field& v) {
    u.proxy = l.text(v);
    if (u.proxy.empty()) return;
    detail::Url url;
    try {
      url = detail::parse_url(u.proxy);
    } catch (const std::invalid_argument& e) {
      l.fail(v, std::string(e.what()) + " (expected \"http://host:port\")");
    }
    if (url.scheme != "http")
      l.fail(v, "only http:// proxies are supported (HTTP CONNECT), e.g. \"http://proxy:3128\"");
    if (url.has_userinfo) l.fail(v, "proxy credentials are not supported");
    if (!url.path.empty() && url.path != "/") l.fail(v, "a proxy URL has no path (expected \"http://host:port\")");
    if (!url.port) l.fail(v, "missing port (expected \"http://host:port\")");
    u.proxy_host = url.host;
    u.proxy_port = *url.port;
  });
  sec.with("models", [&](const Field& v) { u.models = load_model_map(l, v); });
}

// The split's keys, in split: or in an experiments[] entry (`where` names the
// control key for the "different upstream" message).
void load_split_keys(const Loader& l, const Section& sec, const Config& c, SplitConfig& s, const std::string& where) {
  auto arm = [&](const std::string& key) {
    const Field& v = sec.require(key);
    std::string name = l.nonempty_text(v);
    if (!c.upstreams.count(name)) {
      std::string names;
      for (auto& [n, u] : c.upstreams) names += (names.empty() ? "" : ", ") + n;
      l.fail(v, "unknown upstream \"" + name + "\" (defined: " + names + ")");
    }
    return name;
  };
  s.control = arm("control");
  s.canary = arm("canary");
  if (s.control == s.canary) l.fail(sec.require("canary"), "must name a different upstream than " + where);
  sec.with("sticky_key", [&](const Field& v) {
    s.sticky_key.clear();
    for (const Field& item : l.elements(v)) {
      std::string k = l.nonempty_text(item);
      const bool ok = k == "client_ip" || k == "body:user" ||
                      (k.rfind("header:", 0) == 0 && detail::is_header_token(std::string_view(k).substr(7)));
      if (!ok) l.fail(item, "expected \"header:NAME\", \"body:user\" or \"client_ip\", got \"" + k + "\"");
      s.sticky_key.push_back(k);
    }
    if (s.sticky_key.empty()) l.fail(v, "must list at least one source");
  });
  sec.with("salt", [&](const Field& v) { s.salt = l.text(v); });
  sec.with("pin_ttl", [&](const Field& v) { s.pin_ttl = l.duration(v, true); });
  sec.with("override_header", [&](const Field& v) {
    s.override_header = l.text(v);
    if (!s.override_header.empty() && !detail::is_header_token(s.override_header))
      l.fail(v, "\"" + s.override_header + "\" is not a valid header name");
  });
}

void load_split(const Loader& l, const Field& f, const Config& c, SplitConfig& s) {
  Section sec(l, f, {"control", "canary", "sticky_key", "salt", "pin_ttl", "override_header"});
  load_split_keys(l, sec, c, s, "split.control");
}

double load_weight(const Loader& l, const Field& v) {
  const double w = l.number(v, 0, 100);
  if (std::abs(w * 100 - std::round(w * 100)) > 1e-6) l.fail(v, "at most two decimals allowed" + Loader::got(v));
  return std::round(w * 100) / 100;
}

// rollout.analysis.checks.<name>: which keys apply depends on the check.
void load_check(const Loader& l, const Field& f, CheckId id, CheckConfig& c) {
  Section sec(l, f, {"enabled", "dry_run", "critical", "max_increase", "direction"});
  sec.with("enabled", [&](const Field& v) { c.enabled = l.boolean(v); });
  sec.with("dry_run", [&](const Field& v) { c.dry_run = l.boolean(v); });
  sec.with("critical", [&](const Field& v) {
    if (id == CheckId::critical_error_rate) l.fail(v, "the critical error-rate check is always critical");
    c.critical = l.boolean(v);
  });
  sec.with("max_increase", [&](const Field& v) {
    if (id == CheckId::duration || id == CheckId::ttfb)
      l.fail(v, "the latency checks' allowed increase is rollout.analysis.max_latency_increase");
    if (!is_quality_check(id)) l.fail(v, "applies to the quality checks only");
    c.max_increase = l.number(v, 0, 100);
  });
  sec.with("direction", [&](const Field& v) {
    if (!is_quality_check(id)) l.fail(v, "applies to the quality checks only");
    const std::string d = l.text(v);
    if (d == "increase")
      c.lower_is_worse = false;
    else if (d == "decrease")
      c.lower_is_worse = true;
    else
      l.fail(v, "expected increase (a higher share is worse) or decrease" + Loader::got(v));
  });
}

void load_analysis(const Loader& l, const Field& v, AnalysisConfig& an) {
  Section a(l, v,
            {"interval", "window", "min_requests", "alpha", "max_error_rate", "critical_error_rate", "max_p99_latency",
             "relative_to_control", "max_latency_increase", "latency_tolerance", "failure_limit", "inconclusive_limit",
             "checks", "srm"});
  a.with("interval", [&](const Field& x) { an.interval = l.duration(x, false); });
  a.with("window", [&](const Field& x) { an.window = l.duration(x, false); });
  a.with("min_requests", [&](const Field& x) {
    an.min_requests = static_cast<std::uint64_t>(l.integer(x, 1, std::numeric_limits<std::int64_t>::max()));
  });
  a.with("alpha", [&](const Field& x) {
    an.alpha = l.number(x, 0, 0.5);
    if (an.alpha <= 0) l.fail(x, "must be above 0 (the chance of rolling back a healthy canary)" + Loader::got(x));
  });
  a.with("max_error_rate", [&](const Field& x) { an.max_error_rate = l.number(x, 0, 1); });
  a.with("critical_error_rate", [&](const Field& x) {
    an.critical_error_rate = l.number(x, 0, 1);
    if (an.critical_error_rate <= 0)
      l.fail(x, "must be above 0 (turn the check off with checks.critical_error_rate.enabled: false)" + Loader::got(x));
  });
  a.with("max_p99_latency", [&](const Field& x) { an.max_p99_latency = l.duration(x, true); });
  a.with("relative_to_control", [&](const Field& x) { an.relative_to_control = l.boolean(x); });
  a.with("max_latency_increase", [&](const Field& x) { an.max_latency_increase = l.number(x, 0, 100); });
  a.with("latency_tolerance", [&](const Field& x) { an.latency_tolerance = l.duration(x, true); });
  a.with("failure_limit",
         [&](const Field& x) { an.failure_limit = static_cast<std::uint32_t>(l.integer(x, 1, 1000)); });
  a.with("inconclusive_limit",
         [&](const Field& x) { an.inconclusive_limit = static_cast<std::uint32_t>(l.integer(x, 0, 1000000)); });
  a.with("checks", [&](const Field& x) {
    Section checks(l, x, std::vector<std::string_view>(std::begin(kCheckNames), std::end(kCheckNames)));
    for (std::size_t i = 0; i < kCheckCount; ++i) {
      checks.with(std::string(kCheckNames[i]),
                  [&](const Field& c) { load_check(l, c, static_cast<CheckId>(i), an.checks[i]); });
    }
  });
  a.with("srm", [&](const Field& x) {
    Section srm(l, x, {"enabled", "alpha"});
    srm.with("enabled", [&](const Field& y) { an.srm.enabled = l.boolean(y); });
    srm.with("alpha", [&](const Field& y) {
      an.srm.alpha = l.number(y, 0, 0.5);
      if (an.srm.alpha <= 0) l.fail(y, "must be above 0" + Loader::got(y));
    });
  });
  // Cross-key: the critical rate is the far end of the guard.
  if (const Field* c = a.get("critical_error_rate"); c && an.critical_error_rate < an.max_error_rate) {
    l.fail(*c, "must not be below rollout.analysis.max_error_rate (" + format_number(an.max_error_rate) + ")" +
                   Loader::got(*c));
  } else if (!c && an.critical_error_rate < an.max_error_rate && an.check(CheckId::critical_error_rate).enabled) {
    // The default 0.2 under a max_error_rate set above it: the critical check
    // follows the guard instead of failing canaries the guard allows.
    an.critical_error_rate = an.max_error_rate;
  }
}

void load_rollout(const Loader& l, const Field& f, RolloutConfig& r) {
  Section sec(l, f, {"steps", "analysis", "on_failure", "auto_promote"});
  sec.with("steps", [&](const Field& v) {
    for (const Field& item : l.elements(v)) {
      Section step(l, item, {"weight", "pause"});
      if (item.value.IsNull()) l.fail(item, "expected a mapping such as { weight: 10, pause: 10m }");
      RolloutStep rs;
      rs.weight = load_weight(l, step.require("weight"));
      step.with("pause", [&](const Field& p) { rs.pause = l.duration(p, true); });
      r.steps.push_back(rs);
    }
  });
  sec.with("analysis", [&](const Field& v) { load_analysis(l, v, r.analysis); });
  sec.with("on_failure", [&](const Field& v) {
    const std::string s = l.text(v);
    if (s == "rollback")
      r.on_failure = OnFailure::rollback;
    else if (s == "pause")
      r.on_failure = OnFailure::pause;
    else
      l.fail(v, "expected rollback or pause" + Loader::got(v));
  });
  sec.with("auto_promote", [&](const Field& v) { r.auto_promote = l.boolean(v); });
}

void load_fallback(const Loader& l, const Field& f, FallbackConfig& fb) {
  Section sec(l, f, {"enabled", "on", "models", "budget"});
  sec.with("enabled", [&](const Field& v) { fb.enabled = l.boolean(v); });
  sec.with("on", [&](const Field& v) {
    static const std::vector<std::string> kReasons = {"connect_error", "tls_error", "timeout", "5xx", "429"};
    fb.on.clear();
    for (const Field& item : l.elements(v)) {
      std::string reason = l.text(item);
      if (std::find(kReasons.begin(), kReasons.end(), reason) == kReasons.end())
        l.fail(item, "expected one of connect_error, tls_error, timeout, 5xx, 429" + Loader::got(item));
      if (std::find(fb.on.begin(), fb.on.end(), reason) != fb.on.end()) l.fail(item, "\"" + reason + "\" listed twice");
      fb.on.push_back(reason);
    }
  });
  sec.with("models", [&](const Field& v) { fb.models = load_model_map(l, v); });
  sec.with("budget", [&](const Field& v) { fb.budget = l.number(v, 0, 1); });
}

void load_shadow(const Loader& l, const Field& f, ShadowConfig& s) {
  Section sec(l, f, {"enabled", "percent", "max_per_second", "max_in_flight", "log_bodies", "bodies_file"});
  sec.with("enabled", [&](const Field& v) { s.enabled = l.boolean(v); });
  sec.with("percent", [&](const Field& v) { s.percent = load_weight(l, v); });
  sec.with("max_per_second", [&](const Field& v) { s.max_per_second = l.number(v, 0.01, 1e6); });
  sec.with("max_in_flight",
           [&](const Field& v) { s.max_in_flight = static_cast<std::uint32_t>(l.integer(v, 1, 100000)); });
  sec.with("log_bodies", [&](const Field& v) { s.log_bodies = l.boolean(v); });
  sec.with("bodies_file", [&](const Field& v) { s.bodies_file = l.text(v); });
  if (s.enabled && s.percent <= 0) {
    const Field* v = sec.get("percent");
    if (v) l.fail(*v, "must be above 0 when shadow.enabled is true" + Loader::got(*v));
    l.fail(f.key_line, f.path + ".percent",
           "is required when shadow.enabled is true (percent of control requests to mirror)");
  }
  if (s.log_bodies && s.bodies_file.empty()) {
    l.fail(sec.get("log_bodies") ? sec.get("log_bodies")->key_line : f.key_line, f.path + ".bodies_file",
           "is required when shadow.log_bodies is true (prompts and answers never go to the main log)");
  }
}

// redis.url: scheme://[user@]host[:port][,host[:port]...][/path]. One host for
// redis:// and rediss://, one or more (sentinels, or cluster seed nodes) for the
// +sentinel and +cluster schemes. Each host goes through parse_url, so the
// messages are the ones every other URL gets.
bool valid_redis_name(std::string_view name) {
  return !name.empty() && std::none_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isspace(c) || std::iscntrl(c) || c == '/' || c == '@' || c == ':' || c == ',';
  });
}

struct RedisUrl {
  RedisMode mode = RedisMode::standalone;
  bool tls = false;
  std::string username;
  std::vector<RedisNode> nodes;
  std::vector<std::string> path;  // the segments after the authority
};

RedisUrl parse_redis_url(const std::string& text) {
  RedisUrl out;
  const auto sep = text.find("://");
  if (sep == std::string::npos || sep == 0)
    throw std::invalid_argument("not a URL (expected scheme://host[:port][/path])");
  std::string scheme = text.substr(0, sep);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::map<std::string, std::pair<RedisMode, bool>> kSchemes = {
      {"redis", {RedisMode::standalone, false}},        {"rediss", {RedisMode::standalone, true}},
      {"redis+sentinel", {RedisMode::sentinel, false}}, {"rediss+sentinel", {RedisMode::sentinel, true}},
      {"redis+cluster", {RedisMode::cluster, false}},   {"rediss+cluster", {RedisMode::cluster, true}}};
  const auto known = kSchemes.find(scheme);
  if (known == kSchemes.end())
    throw std::invalid_argument(
        "scheme must be redis:// or rediss:// (TLS), redis+sentinel:// or rediss+sentinel://, "
        "redis+cluster:// or rediss+cluster://, got \"" +
        scheme + "://\"");
  out.mode = known->second.first;
  out.tls = known->second.second;
  std::string_view rest(text);
  rest.remove_prefix(sep + 3);
  if (rest.find_first_of("?#") != std::string_view::npos)
    throw std::invalid_argument("a query string or fragment is not allowed in this URL");
  const auto slash = rest.find('/');
  std::string_view auth = rest.substr(0, slash);
  if (const auto at = auth.rfind('@'); at != std::string_view::npos) {
    const std::string_view user = auth.substr(0, at);
    if (user.find(':') != std::string_view::npos)
      throw std::invalid_argument(
          "a password in the URL is not allowed (secrets come only from the environment): "
          "remove it and name the variable in redis.password_env");
    if (!valid_redis_name(user)) throw std::invalid_argument("invalid user name before '@'");
    out.username = std::string(user);
    auth.remove_prefix(at + 1);
  }
  if (out.mode == RedisMode::standalone && auth.find(',') != std::string_view::npos)
    throw std::invalid_argument("one host only in a redis:// URL (several: redis+sentinel:// or redis+cluster://)");
  const std::uint16_t default_port = out.mode == RedisMode::sentinel ? 26379 : 6379;
  for (std::size_t pos = 0;;) {
    const auto comma = auth.find(',', pos);
    const std::string one(auth.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
    if (one.empty()) throw std::invalid_argument("empty host in the host list");
    const detail::Url url = detail::parse_url("redis://" + one);
    out.nodes.push_back({url.host, url.port.value_or(default_port)});
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  if (slash != std::string_view::npos) {
    std::string_view path = rest.substr(slash + 1);
    while (!path.empty()) {
      const auto next = path.find('/');
      out.path.emplace_back(path.substr(0, next));
      if (next == std::string_view::npos) break;
      path.remove_prefix(next + 1);
    }
  }
  return out;
}

std::string canonical_redis_url(const RedisConfig& r) {
  std::string url = std::string(r.tls ? "rediss" : "redis") +
                    (r.mode == RedisMode::sentinel  ? "+sentinel"
                     : r.mode == RedisMode::cluster ? "+cluster"
                                                    : "") +
                    "://";
  if (!r.username.empty()) url += r.username + "@";
  for (std::size_t i = 0; i < r.nodes.size(); ++i) {
    if (i) url += ",";
    const bool v6 = r.nodes[i].host.find(':') != std::string::npos;
    url += (v6 ? "[" + r.nodes[i].host + "]" : r.nodes[i].host) + ":" + std::to_string(r.nodes[i].port);
  }
  if (r.mode == RedisMode::sentinel) url += "/" + r.master_name;
  if (r.mode != RedisMode::cluster) url += "/" + std::to_string(r.db);
  return url;
}

// Longer than a screen on purpose: the three topologies (a URL, sentinels,
// cluster nodes) share most keys and cross-check each other, and one body keeps
// every check next to the key its error names.
void load_redis(const Loader& l, const Field& f, RedisConfig& r) {
  Section sec(l, f,
              {"url", "username", "password_env", "sentinels", "master_name", "sentinel_password_env", "cluster",
               "timeout", "namespace", "tls_verify", "ca_file"});
  const Field* url_field = sec.get("url");
  const Field* sentinels = sec.get("sentinels");
  const Field* master = sec.get("master_name");
  const Field* cluster = sec.get("cluster");
  const Field* username = sec.get("username");
  if (url_field) r.url = l.nonempty_text(*url_field);
  const Field fallback{YAML::Node(YAML::NodeType::Null), f.path + ".url", f.key_line};
  const Field& uf = url_field ? *url_field : fallback;

  RedisUrl url;
  if (sentinels) {
    if (url_field)
      l.fail(*sentinels,
             "redis.url is given too: name the sentinels in one place, either here (with "
             "redis.master_name) or as redis.url: \"redis+sentinel://host1:26379,host2:26379/<master>\"");
    url.mode = RedisMode::sentinel;
    for (const Field& item : l.elements(*sentinels)) {
      try {
        const detail::Url one = detail::parse_url("redis://" + l.nonempty_text(item));
        url.nodes.push_back({one.host, one.port.value_or(26379)});
      } catch (const std::invalid_argument& e) {
        l.fail(item, std::string(e.what()) + " (expected \"host:port\", e.g. \"10.0.0.1:26379\")");
      }
    }
    if (url.nodes.empty()) l.fail(*sentinels, "must list at least one sentinel (\"host:port\")");
  } else {
    try {
      url = parse_redis_url(r.url);
    } catch (const std::invalid_argument& e) {
      l.fail(uf, e.what());
    }
  }
  r.mode = url.mode;
  r.tls = url.tls;
  r.username = url.username;
  r.db = 0;
  r.master_name.clear();

  auto parse_db = [&](const std::string& db, const char* example) {
    int value = 0;
    auto res = std::from_chars(db.data(), db.data() + db.size(), value);
    if (db.empty() || res.ec != std::errc{} || res.ptr != db.data() + db.size() || value < 0)
      l.fail(uf, std::string("database must be a number, as in ") + example + ", got \"/" + db + "\"");
    return value;
  };
  switch (url.mode) {
    case RedisMode::standalone:
      if (url.path.size() > 1) l.fail(uf, "expected redis://host:6379/<db>, got more after the db number");
      if (!url.path.empty() && !url.path[0].empty()) r.db = parse_db(url.path[0], "redis://host:6379/0");
      break;
    case RedisMode::sentinel:
      if (url.path.size() > 2)
        l.fail(uf, "expected redis+sentinel://host:26379/<master>[/<db>], got more after the db");
      if (!url.path.empty() && !url.path[0].empty()) {
        if (!valid_redis_name(url.path[0])) l.fail(uf, "invalid master name \"" + url.path[0] + "\"");
        r.master_name = url.path[0];
      }
      if (url.path.size() == 2) r.db = parse_db(url.path[1], "redis+sentinel://host:26379/mymaster/0");
      break;
    case RedisMode::cluster:
      if (url.path.size() > 1 || (url.path.size() == 1 && !url.path[0].empty() && url.path[0] != "0"))
        l.fail(uf, "Redis Cluster has only db 0: write redis+cluster://host1:6379,host2:6379 with no path");
      break;
  }

  if (master) {
    std::string name = l.nonempty_text(*master);
    if (r.mode != RedisMode::sentinel)
      l.fail(*master, "only with Sentinel (redis.sentinels, or redis.url: \"redis+sentinel://host:26379/<master>\")");
    if (!valid_redis_name(name)) l.fail(*master, "invalid master name" + Loader::got(*master));
    if (!r.master_name.empty() && r.master_name != name)
      l.fail(*master, "redis.url names the master already (\"" + r.master_name + "\"): give it in one place");
    r.master_name = name;
  }
  if (r.mode == RedisMode::sentinel && r.master_name.empty()) {
    if (sentinels)
      l.fail(*sentinels, "redis.master_name is required with redis.sentinels (the name the sentinels monitor)");
    l.fail(uf,
           "the master name is missing: redis+sentinel://host1:26379,host2:26379/<master>[/<db>], or set "
           "redis.master_name");
  }
  if (cluster) {
    const bool on = l.boolean(*cluster);
    if (on && r.mode == RedisMode::sentinel) l.fail(*cluster, "Sentinel and Cluster are two topologies: choose one");
    if (!on && r.mode == RedisMode::cluster)
      l.fail(*cluster, "is false, but redis.url is a redis+cluster:// URL: remove one of them");
    if (on && r.mode == RedisMode::standalone) {
      if (r.db != 0) l.fail(uf, "Redis Cluster has only db 0, got db " + std::to_string(r.db));
      r.mode = RedisMode::cluster;
    }
  }
  if (username) {
    std::string name = l.nonempty_text(*username);
    if (!valid_redis_name(name)) l.fail(*username, "invalid ACL user name" + Loader::got(*username));
    if (!r.username.empty() && r.username != name)
      l.fail(*username, "redis.url names another user (\"" + r.username + "\"): give it in one place");
    r.username = name;
  }

  if (r.mode == RedisMode::standalone) {
    r.nodes.clear();
    r.host = url.nodes.front().host;
    r.port = url.nodes.front().port;
  } else {
    r.nodes = url.nodes;
    r.host = r.nodes.front().host;
    r.port = r.nodes.front().port;
  }
  // The URL stays as written unless the keys above shaped the topology; then it
  // becomes the URL they amount to (what --check-config prints and a reload compares).
  if (sentinels || master || cluster || username) r.url = canonical_redis_url(r);

  sec.with("password_env", [&](const Field& v) { r.password_value = l.secret(v, r.password_env); });
  sec.with("sentinel_password_env", [&](const Field& v) {
    if (r.mode != RedisMode::sentinel) l.fail(v, "only with Sentinel (the sentinels' own password)");
    r.sentinel_password_value = l.secret(v, r.sentinel_password_env);
  });
  sec.with("timeout", [&](const Field& v) { r.timeout = l.duration(v, false); });
  sec.with("namespace", [&](const Field& v) {
    r.ns = l.nonempty_text(v);
    if (r.ns.find_first_of(" \t\r\n") != std::string::npos) l.fail(v, "must not contain whitespace");
    // The rollout keys are {<namespace>}:rollout...: a brace would change the hash tag.
    if (r.ns.find_first_of("{}") != std::string::npos)
      l.fail(v, "must not contain '{' or '}' (Redis Cluster hash tags)");
  });
  sec.with("tls_verify", [&](const Field& v) { r.tls_verify = l.boolean(v); });
  sec.with("ca_file", [&](const Field& v) { r.ca_file = l.file_path(v); });
}

// Experiment names go into Redis keys, metric labels and admin URLs.
bool valid_experiment_name(std::string_view name) {
  return !name.empty() && name.size() <= 40 &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; });
}

void load_match(const Loader& l, const Field& f, ExperimentMatch& m) {
  Section sec(l, f, {"models", "routes", "header"});
  sec.with("models", [&](const Field& v) {
    for (const Field& item : l.elements(v)) m.models.push_back(l.nonempty_text(item));
    if (m.models.empty()) l.fail(v, "must list at least one model (or leave models out)");
  });
  sec.with("routes", [&](const Field& v) {
    static const std::vector<std::string> kRoutes = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                                     "/v1/responses"};
    for (const Field& item : l.elements(v)) {
      std::string r = l.nonempty_text(item);
      if (std::find(kRoutes.begin(), kRoutes.end(), r) == kRoutes.end())
        l.fail(item, "expected a split route: /v1/chat/completions, /v1/completions, /v1/embeddings or /v1/responses" +
                         Loader::got(item));
      m.routes.push_back(r);
    }
    if (m.routes.empty()) l.fail(v, "must list at least one route (or leave routes out)");
  });
  sec.with("header", [&](const Field& v) {
    Section h(l, v, {"name", "value"});
    m.header = l.nonempty_text(h.require("name"));
    if (!detail::is_header_token(m.header))
      l.fail(h.require("name"), "\"" + m.header + "\" is not a valid header name");
    m.header_value = l.text(h.require("value"));
  });
  if (m.models.empty() && m.routes.empty() && m.header.empty())
    l.fail(f, "must match something: models, routes or header (what no experiment matches goes to the default)");
}

void load_experiments(const Loader& l, const Field& f, Config& c) {
  std::map<std::string, std::pair<int, std::size_t>> names;  // name -> (line, index)
  std::vector<int> match_lines;
  for (const Field& item : l.elements(f)) {
    if (!item.value.IsMap()) l.fail(item, "expected a mapping with name, match, control and canary");
    Section sec(l, item,
                {"name", "match", "control", "canary", "sticky_key", "salt", "pin_ttl", "override_header", "rollout",
                 "fallback"});
    ExperimentConfig e;
    const Field& nf = sec.require("name");
    e.name = l.nonempty_text(nf);
    if (!valid_experiment_name(e.name))
      l.fail(nf, "experiment names may use only letters, digits, '_' and '-' (at most 40)" + Loader::got(nf));
    if (e.name == kDefaultExperiment)
      l.fail(nf, "\"default\" is the top-level split's experiment; give this one another name");
    if (e.name == kNoExperiment) l.fail(nf, "\"none\" is what requests outside every experiment are labelled");
    if (auto [pos, inserted] = names.emplace(e.name, std::make_pair(nf.line(), c.experiments.size())); !inserted)
      l.fail(nf, "duplicate experiment name (first at line " + std::to_string(pos->second.first) + ")");
    const Field& mf = sec.require("match");
    load_match(l, mf, e.match);
    // An experiment's users are shuffled by its own salt unless told otherwise.
    e.split.salt = e.name;
    load_split_keys(l, sec, c, e.split, item.path + ".control");
    sec.with("rollout", [&](const Field& v) { load_rollout(l, v, e.rollout); });
    sec.with("fallback", [&](const Field& v) { load_fallback(l, v, e.fallback); });
    // The first match decides, so two matches that can take one request
    // would make the order of the list a hidden rule: refused, naming both.
    for (std::size_t i = 0; i < c.experiments.size(); ++i) {
      if (std::string both = overlap(c.experiments[i].match, e.match); !both.empty()) {
        l.fail(mf, "overlaps experiment \"" + c.experiments[i].name + "\" (line " + std::to_string(match_lines[i]) +
                       "): both match " + both);
      }
    }
    match_lines.push_back(mf.line());
    c.experiments.push_back(std::move(e));
  }
  if (c.experiments.empty()) l.fail(f, "must list at least one experiment (or leave experiments out)");
}

// split/rollout/fallback (the experiment "default"), experiments[] and
// default_upstream: which experiment decides a request (issue 17).
void load_routing(const Loader& l, const Section& sec, Config& c) {
  const Field* experiments = sec.get("experiments");
  const Field* split = sec.get("split");
  if (experiments) load_experiments(l, *experiments, c);
  if (!experiments || split) load_split(l, sec.require("split"), c, c.split);
  if (!split) {
    for (const char* key : {"rollout", "fallback"}) {
      if (const Field* v = sec.get(key))
        l.fail(*v, std::string("belongs to the top-level split (experiment default), which is absent: put it in an "
                               "experiment, or add split"));
    }
  }
  sec.with("rollout", [&](const Field& v) { load_rollout(l, v, c.rollout); });
  sec.with("fallback", [&](const Field& v) { load_fallback(l, v, c.fallback); });
  if (const Field* v = sec.get("default_upstream")) {
    if (split)
      l.fail(*v, "with a top-level split, requests no experiment matches go to experiment default; remove one");
    c.default_upstream = l.nonempty_text(*v);
    if (!c.upstreams.count(c.default_upstream)) {
      std::string names;
      for (auto& [n, u] : c.upstreams) names += (names.empty() ? "" : ", ") + n;
      l.fail(*v, "unknown upstream \"" + c.default_upstream + "\" (defined: " + names + ")");
    }
  } else if (!split) {
    l.fail(experiments->line(), "default_upstream",
           "required key missing: requests no experiment matches go there (or add a top-level split, experiment "
           "default)");
  }
  if (split) c.experiments.push_back(default_experiment(c));
}

Config load_root(const Loader& l, const YAML::Node& root, const std::string& name) {
  Config c;
  c.source_path = name;
  Field top{root, "", 1};
  if (!root.IsNull() && !root.IsMap()) l.fail(top.line(), "(root)", "expected a mapping of sections");
  Section sec(l, top,
              {"server", "upstreams", "split", "rollout", "fallback", "experiments", "default_upstream", "shadow",
               "redis", "pricing", "metrics", "log"});

  sec.with("server", [&](const Field& v) { load_server(l, v, c.server); });
  {
    const Field& v = sec.require("upstreams");
    for (auto& [uname, uf] : l.entries(v)) {
      if (!valid_upstream_name(uname))
        l.fail(uf.key_line, uf.path, "upstream names may use only letters, digits, '_', '-' and '.'");
      load_upstream(l, uname, uf, c.upstreams[uname]);
    }
    if (c.upstreams.size() < 2) l.fail(v, "at least two upstreams are required (control and canary)");
  }
  load_routing(l, sec, c);
  sec.with("shadow", [&](const Field& v) { load_shadow(l, v, c.shadow); });
  sec.with("redis", [&](const Field& v) {
    c.redis.emplace();
    load_redis(l, v, *c.redis);
  });
  sec.with("pricing", [&](const Field& v) {
    for (auto& [model, pf] : l.entries(v)) {
      Section p(l, pf, {"input", "output"});
      Price& price = c.pricing[model];
      p.with("input", [&](const Field& x) { price.input = l.number(x, 0, 1e9); });
      p.with("output", [&](const Field& x) { price.output = l.number(x, 0, 1e9); });
    }
  });
  sec.with("metrics", [&](const Field& v) {
    Section m(l, v, {"prefix"});
    m.with("prefix", [&](const Field& x) {
      std::string p = l.nonempty_text(x);
      const bool ok =
          (std::isalpha(static_cast<unsigned char>(p[0])) || p[0] == '_' || p[0] == ':') &&
          std::all_of(p.begin(), p.end(), [](unsigned char ch) { return std::isalnum(ch) || ch == '_' || ch == ':'; });
      if (!ok) l.fail(x, "\"" + p + "\" is not a valid Prometheus metric name prefix");
      c.metrics.prefix = p;
    });
  });
  sec.with("log", [&](const Field& v) {
    Section lg(l, v, {"level"});
    lg.with("level", [&](const Field& x) {
      static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
      std::string level = l.text(x);
      if (!kLevels.count(level)) l.fail(x, "expected one of trace, debug, info, warn, error, off" + Loader::got(x));
      c.log.level = level;
    });
  });
  return c;
}

}  // namespace

Config load_string(const std::string& yaml, const std::string& name) {
  Loader loader(name);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    loader.fail(e.mark.line >= 0 ? e.mark.line + 1 : 1, "(syntax)", e.msg);
  }
  return load_root(loader, root, name);
}

Config load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ":1: (file): cannot open: " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return load_string(buf.str(), path);
}

std::vector<std::string> Config::known_models() const {
  std::set<std::string> names;
  for (const auto& [model, price] : pricing) names.insert(model);
  for (const auto& [n, u] : upstreams) {
    for (const auto& [from, to] : u.models) {
      names.insert(from);
      names.insert(to);
    }
  }
  for (const auto& [from, to] : fallback.models) {
    names.insert(from);
    names.insert(to);
  }
  for (const auto& e : experiments) {
    for (const auto& [from, to] : e.fallback.models) {
      names.insert(from);
      names.insert(to);
    }
    // A model an experiment names exactly is one its dashboards will ask for.
    for (const auto& m : e.match.models) {
      if (!is_glob(m)) names.insert(m);
    }
  }
  return {names.begin(), names.end()};
}

ExperimentConfig default_experiment(const Config& config) {
  ExperimentConfig e;
  e.name = std::string(kDefaultExperiment);
  e.match.any = true;
  e.split = config.split;
  e.rollout = config.rollout;
  e.fallback = config.fallback;
  return e;
}

int Config::experiment_index(std::string_view name) const {
  for (std::size_t i = 0; i < experiments.size(); ++i) {
    if (experiments[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace canaryd::config
