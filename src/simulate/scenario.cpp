// Scenario files for `canaryd simulate` (simulate.hpp, config/scenarios/).
// Every key is checked against the known set; a problem is a ConfigError
// "FILE:LINE: key.path: what is wrong", as for canaryd's own config.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "simulate/simulate.hpp"

namespace canaryd::simulate {

namespace {

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& path, const std::string& what) const {
    const int line = node.IsDefined() && node.Mark().line >= 0 ? node.Mark().line + 1 : 1;
    throw config::ConfigError(file_ + ":" + std::to_string(line) + ": " + path + ": " + what);
  }

  // The mapping's keys, each checked against `known`.
  void keys(const YAML::Node& node, const std::string& path, const std::set<std::string>& known) const {
    if (node.IsNull()) return;
    if (!node.IsMap()) fail(node, path, "expected a mapping");
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.as<std::string>("");
      const std::string p = path.empty() ? key : path + "." + key;
      if (!known.count(key)) fail(it->first, p, "unknown key");
      if (!seen.insert(key).second) fail(it->first, p, "duplicate key");
    }
  }

  double number(const YAML::Node& n, const std::string& path, double lo, double hi) const {
    const std::string s = n.IsScalar() ? n.Scalar() : "";
    double v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || res.ec != std::errc{} || res.ptr != s.data() + s.size() || !std::isfinite(v))
      fail(n, path, "expected a number");
    if (v < lo || v > hi) fail(n, path, "must be between " + num(lo) + " and " + num(hi) + ", got \"" + s + "\"");
    return v;
  }

  Duration duration(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, "expected a duration such as 500ms, 30s, 10m or 1h30m");
    try {
      return config::parse_duration(n.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(n, path, e.what());
    }
  }

  std::string text(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, "expected a string");
    return n.Scalar();
  }

  static std::string num(double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  }

 private:
  std::string file_;
};

const std::set<std::string> kArmKeys = {"error_rate",  "latency_median", "latency_sigma",     "ttfb_median",
                                        "ttfb_sigma",  "latency_factor", "finish_length",     "finish_content_filter",
                                        "empty",       "tool_calls",     "tool_call_invalid", "json_mode",
                                        "json_invalid"};

ArmOverride read_arm(const Reader& r, const YAML::Node& n, const std::string& path) {
  r.keys(n, path, kArmKeys);
  ArmOverride o;
  auto share = [&](const char* key, std::optional<double>& out) {
    if (n[key]) out = r.number(n[key], path + "." + key, 0, 1);
  };
  share("error_rate", o.error_rate);
  share("finish_length", o.finish_length);
  share("finish_content_filter", o.finish_content_filter);
  share("empty", o.empty);
  share("tool_calls", o.tool_calls);
  share("tool_call_invalid", o.tool_call_invalid);
  share("json_mode", o.json_mode);
  share("json_invalid", o.json_invalid);
  if (n["latency_median"]) o.latency_median = r.duration(n["latency_median"], path + ".latency_median");
  if (n["ttfb_median"]) o.ttfb_median = r.duration(n["ttfb_median"], path + ".ttfb_median");
  if (n["latency_sigma"]) o.latency_sigma = r.number(n["latency_sigma"], path + ".latency_sigma", 0, 5);
  if (n["ttfb_sigma"]) o.ttfb_sigma = r.number(n["ttfb_sigma"], path + ".ttfb_sigma", 0, 5);
  if (n["latency_factor"]) o.latency_factor = r.number(n["latency_factor"], path + ".latency_factor", 0.01, 100);
  if (o.finish_length && o.finish_content_filter && *o.finish_length + *o.finish_content_filter > 1)
    r.fail(n, path, "finish_length + finish_content_filter must not exceed 1");
  return o;
}

const std::set<std::string> kScenarioKeys = {"name",    "duration", "rate", "users",   "split_factor", "measure_from",
                                             "control", "canary",   "both", "changes", "variants"};

// Applies one mapping of scenario keys on top of `s` (the top level, or a variant).
void apply(const Reader& r, const YAML::Node& n, const std::string& path, Scenario& s, bool top) {
  r.keys(n, path, kScenarioKeys);
  const std::string pre = path.empty() ? "" : path + ".";
  if (n["variants"] && !top) r.fail(n["variants"], pre + "variants", "variants cannot nest");
  if (n["name"]) s.name = r.text(n["name"], pre + "name");
  if (n["duration"]) {
    s.duration = r.duration(n["duration"], pre + "duration");
    if (s.duration.count() <= 0) r.fail(n["duration"], pre + "duration", "must be greater than zero");
  }
  if (n["rate"]) s.rate = r.number(n["rate"], pre + "rate", 0.001, 1e5);
  if (n["users"]) s.users = static_cast<std::uint32_t>(r.number(n["users"], pre + "users", 1, 1e7));
  if (n["split_factor"]) s.split_factor = r.number(n["split_factor"], pre + "split_factor", 0, 100);
  if (n["measure_from"]) s.measure_from = r.duration(n["measure_from"], pre + "measure_from");
  // control first, then the canary starts as control's copy (when set at the
  // top level), then both.
  if (n["control"]) {
    const ArmOverride o = read_arm(r, n["control"], pre + "control");
    o.apply(s.control);
    if (top) o.apply(s.canary);
  }
  if (n["canary"]) read_arm(r, n["canary"], pre + "canary").apply(s.canary);
  if (n["both"]) {
    const ArmOverride o = read_arm(r, n["both"], pre + "both");
    o.apply(s.control);
    o.apply(s.canary);
  }
  if (n["changes"]) {
    const YAML::Node& list = n["changes"];
    if (!list.IsSequence()) r.fail(list, pre + "changes", "expected a list");
    s.changes.clear();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const YAML::Node& c = list[i];
      const std::string p = pre + "changes[" + std::to_string(i) + "]";
      r.keys(c, p, {"at", "until", "control", "canary", "both", "rate"});
      if (!c["at"]) r.fail(c, p + ".at", "required key missing");
      Change ch;
      ch.at = r.duration(c["at"], p + ".at");
      if (c["until"]) {
        ch.until = r.duration(c["until"], p + ".until");
        if (*ch.until <= ch.at) r.fail(c["until"], p + ".until", "must be after `at`");
      }
      if (c["control"]) ch.control = read_arm(r, c["control"], p + ".control");
      if (c["canary"]) ch.canary = read_arm(r, c["canary"], p + ".canary");
      if (c["both"]) {
        const ArmOverride o = read_arm(r, c["both"], p + ".both");
        auto merge = [&](ArmOverride& into) {
          // `both` under an arm's own keys: the arm's own win.
          ArmOverride m = o;
          auto take = [](auto& dst, const auto& src) {
            if (src) dst = src;
          };
          take(m.error_rate, into.error_rate);
          take(m.latency_sigma, into.latency_sigma);
          take(m.ttfb_sigma, into.ttfb_sigma);
          take(m.latency_factor, into.latency_factor);
          take(m.finish_length, into.finish_length);
          take(m.finish_content_filter, into.finish_content_filter);
          take(m.empty, into.empty);
          take(m.tool_calls, into.tool_calls);
          take(m.tool_call_invalid, into.tool_call_invalid);
          take(m.json_mode, into.json_mode);
          take(m.json_invalid, into.json_invalid);
          take(m.latency_median, into.latency_median);
          take(m.ttfb_median, into.ttfb_median);
          into = m;
        };
        merge(ch.control);
        merge(ch.canary);
      }
      if (c["rate"]) ch.rate = r.number(c["rate"], p + ".rate", 0, 1e5);
      s.changes.push_back(std::move(ch));
    }
  }
}

}  // namespace

void ArmOverride::apply(ArmModel& a) const {
  if (error_rate) a.error_rate = *error_rate;
  if (latency_median) a.latency_median = *latency_median;
  if (latency_sigma) a.latency_sigma = *latency_sigma;
  if (ttfb_median) a.ttfb_median = *ttfb_median;
  if (ttfb_sigma) a.ttfb_sigma = *ttfb_sigma;
  if (latency_factor) a.latency_factor = *latency_factor;
  if (finish_length) a.finish_length = *finish_length;
  if (finish_content_filter) a.finish_content_filter = *finish_content_filter;
  if (empty) a.empty = *empty;
  if (tool_calls) a.tool_calls = *tool_calls;
  if (tool_call_invalid) a.tool_call_invalid = *tool_call_invalid;
  if (json_mode) a.json_mode = *json_mode;
  if (json_invalid) a.json_invalid = *json_invalid;
}

std::vector<Scenario> load_scenarios(const std::string& yaml, const std::string& name) {
  Reader r(name);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw config::ConfigError(name + ":" + std::to_string(e.mark.line >= 0 ? e.mark.line + 1 : 1) +
                              ": (syntax): " + e.msg);
  }
  if (!root.IsMap()) r.fail(root, "(file)", "expected a mapping of scenario keys");
  Scenario base;
  apply(r, root, "", base, true);
  if (base.name.empty()) base.name = name;
  std::vector<Scenario> out;
  if (!root["variants"]) {
    out.push_back(base);
    return out;
  }
  const YAML::Node& variants = root["variants"];
  if (!variants.IsSequence() || variants.size() == 0) r.fail(variants, "variants", "expected a non-empty list");
  std::set<std::string> names;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    Scenario s = base;
    s.name.clear();
    const std::string path = "variants[" + std::to_string(i) + "]";
    apply(r, variants[i], path, s, false);
    if (s.name.empty()) s.name = base.name + " #" + std::to_string(i + 1);
    if (!names.insert(s.name).second) r.fail(variants[i], path + ".name", "\"" + s.name + "\" is used twice");
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Scenario> load_scenarios_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config::ConfigError(path + ":1: (file): cannot open: " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return load_scenarios(buf.str(), path);
}

}  // namespace canaryd::simulate
