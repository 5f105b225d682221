#include "ctl/ctl.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

namespace canaryd::ctl {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr const char* kUsage =
    "usage: canaryd ctl [--url http://host:8080] [--token TOKEN] "
    "[--experiment NAME] status|list|pause|resume|promote|abort|retry|weight N|report\n"
    "  the token defaults to $CANARYD_ADMIN_TOKEN; the URL to $CANARYD_URL or http://127.0.0.1:8080\n"
    "  --experiment: the experiment to act on (default: the only one; with several, status lists them)\n";

struct Url {
  std::string host;
  std::string port;
  std::string prefix;
};

bool parse_url(const std::string& url, Url& out) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  out.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) return false;
    out.host = authority.substr(1, close - 1);
    out.port = close + 1 < authority.size() && authority[close + 1] == ':' ? authority.substr(close + 2) : "80";
  } else {
    auto colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    out.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  }
  return !out.host.empty();
}

// A blocking client is right here: this is a CLI, not an I/O thread.
int call(const Url& url, const std::string& token, http::verb method, const std::string& path, const std::string& body,
         nlohmann::json& out, std::string& error) {
  try {
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(url.host, url.port));
    http::request<http::string_body> req{method, url.prefix + path, 11};
    req.set(http::field::host, url.host);
    req.set(http::field::authorization, "Bearer " + token);
    req.set(http::field::user_agent, "canaryd-ctl");
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    out = nlohmann::json::parse(res.body(), nullptr, false);
    if (res.result_int() != 200) {
      // {"error":{"message":...}} (OpenAI shape) when it is that, else the raw body.
      const auto* message = out.is_object() && out.contains("error") && out["error"].is_object() &&
                                    out["error"].contains("message") && out["error"]["message"].is_string()
                                ? out["error"]["message"].get_ptr<const std::string*>()
                                : nullptr;
      error = message ? *message : res.body();
      error = std::to_string(res.result_int()) + ": " + error;
      return 1;
    }
    if (out.is_discarded()) {
      error = "the answer is not JSON";
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    error = std::string("cannot reach canaryd: ") + e.what();
    return 1;
  }
}

// The admin API's JSON is read leniently: a field that is missing, null (a
// NaN rate serialises as null) or of another type shows as "-" instead of
// throwing out of the CLI.
const nlohmann::json& member(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kNone;
  if (!j.is_object()) return kNone;
  auto it = j.find(key);
  return it == j.end() ? kNone : *it;
}

std::string text(const nlohmann::json& j, const char* key, const char* fallback) {
  const auto& v = member(j, key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return fallback;
  return v.dump();
}

std::string count(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_float()) {
    char b[48];
    std::snprintf(b, sizeof b, "%.0f", v.get<double>());
    return b;
  }
  return "-";
}

std::string pct(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  char b[48];
  std::snprintf(b, sizeof b, "%.2f%%", v.get<double>() * 100);
  return b;
}

std::string secs(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  char b[48];
  double s = v.get<double>();
  if (s < 1) {
    std::snprintf(b, sizeof b, "%.0fms", s * 1000);
  } else {
    std::snprintf(b, sizeof b, "%.2fs", s);
  }
  return b;
}

std::string num(const nlohmann::json& v, const char* fmt = "%.2f") {
  if (!v.is_number()) return "-";
  char b[48];
  std::snprintf(b, sizeof b, fmt, v.get<double>());
  return b;
}

// A number the judge reports in logs (an e-value's log) as the e-value itself.
std::string evalue(const nlohmann::json& log_e) {
  if (!log_e.is_number()) return "-";
  char b[48];
  std::snprintf(b, sizeof b, "%.3g", std::exp(log_e.get<double>()));
  return b;
}

// The verdict's checks (issue 14): one line each, with the value per arm, the
// estimate against control, what is allowed, the evidence against its level
// at this look, and the failing looks against the limit.
void render_checks(std::ostringstream& o, const nlohmann::json& v) {
  const auto& checks = member(v, "checks");
  const auto& srm = member(v, "srm");
  if ((!checks.is_array() || checks.empty()) && !srm.is_object()) return;
  char line[256];
  std::snprintf(line, sizeof line, "\n  %-26s %-13s %-9s %-9s %-9s %-9s %-22s %s\n", "CHECK", "OUTCOME", "CANARY",
                "CONTROL", "ESTIMATE", "ALLOWED", "EVIDENCE", "LOOKS");
  o << line;
  if (checks.is_array()) {
    for (const auto& c : checks) {
      const std::string name = text(c, "name", "?");
      const bool latency = name == "duration" || name == "ttfb" || name == "p99_latency";
      const bool rate_bound = name == "error_rate" || name == "critical_error_rate";
      auto value = [&](const nlohmann::json& x) { return latency ? secs(x) : pct(x); };
      std::string label = name;
      const auto& dry = member(c, "dry_run");
      if (dry.is_boolean() && dry.get<bool>()) label += " (dry run)";
      const auto& crit = member(c, "critical");
      if (crit.is_boolean() && crit.get<bool>() && name != "critical_error_rate") label += " (critical)";
      const std::string estimate = member(c, "estimate").is_number() ? num(member(c, "estimate")) + "x" : "-";
      std::string bound;
      if (name == "p99_latency")
        bound = secs(member(c, "bound"));
      else if (rate_bound)
        bound = pct(member(c, "bound"));
      else
        bound = member(c, "bound").is_number() ? num(member(c, "bound")) + "x" : "-";
      std::string evidence;
      if (name == "duration" || name == "ttfb") {
        evidence = "z=" + num(member(c, "statistic")) + " of " + num(member(c, "threshold"));
      } else if (name == "p99_latency") {
        evidence = "-";
      } else {
        evidence = "e=" + evalue(member(c, "statistic")) + " of " + evalue(member(c, "threshold"));
      }
      const std::string looks = count(member(c, "failing_looks")) + "/" + count(member(c, "failure_limit"));
      std::snprintf(line, sizeof line, "  %-26s %-13s %-9s %-9s %-9s %-9s %-22s %s\n", label.c_str(),
                    text(c, "outcome", "?").c_str(), value(member(c, "canary")).c_str(),
                    value(member(c, "control")).c_str(), estimate.c_str(), bound.c_str(), evidence.c_str(),
                    looks.c_str());
      o << line;
    }
  }
  if (srm.is_object()) {
    auto users_of = [&](const char* key) {
      const auto& x = member(srm, key);
      return x.is_number_unsigned() ? x.get<std::uint64_t>() : std::uint64_t{0};
    };
    const std::string users = std::to_string(users_of("canary_users")) + "/" +
                              std::to_string(users_of("canary_users") + users_of("control_users")) + " users";
    std::snprintf(line, sizeof line, "  %-26s %-13s %-9s %-9s %-9s %-9s %-22s %s\n", "srm (users on the canary)",
                  text(srm, "outcome", "?").c_str(), pct(member(srm, "user_share")).c_str(), "-", "-",
                  pct(member(srm, "expected_share")).c_str(),
                  ("e=" + evalue(member(srm, "log_e")) + " of " + evalue(member(srm, "threshold"))).c_str(),
                  users.c_str());
    o << line;
  }
}

}  // namespace

std::string render_status(const nlohmann::json& s) {
  std::ostringstream o;
  o << "State:    " << text(s, "state", "?") << "\n";
  const auto& step = member(s, "step");
  if (const auto& steps = member(s, "steps"); steps.is_array()) {
    o << "Steps:    ";
    std::int64_t i = 0;
    std::int64_t cur = step.is_number_integer() ? step.get<std::int64_t>() : -1;
    for (const auto& st : steps) {
      if (i) o << " -> ";
      std::string w = num(st.is_object() ? member(st, "weight") : st, "%g") + "%";
      o << (i == cur ? "[" + w + "]" : w);
      ++i;
    }
    o << "\n";
  }
  o << "Step:     " << (step.is_null() ? "0" : count(step)) << "\n";
  o << "Weight:   " << num(member(s, "weight"), "%g") << "% of users on the canary\n";
  o << "Since:    " << text(s, "since", "") << "\n";
  if (std::string reason = text(s, "reason", ""); !reason.empty()) o << "Reason:   " << reason << "\n";
  const nlohmann::json* verdict = nullptr;
  if (const auto& v = member(s, "verdict"); v.is_object()) {
    verdict = &v;
    o << "Verdict:  " << text(v, "result", text(v, "kind", "?").c_str());
    if (std::string reason = text(v, "reason", ""); !reason.empty()) o << " (" << reason << ")";
    o << "\n";
    if (const auto& hold = member(v, "hold"); hold.is_string()) {
      o << "Hold:     " << hold.get<std::string>() << ": " << text(v, "hold_reason", "") << "\n";
    }
  }
  if (const auto& arms = member(s, "arms"); arms.is_object()) {
    o << "\n  ARM       REQUESTS   ERROR RATE   P50      P99\n";
    for (const char* arm : {"control", "canary"}) {
      if (!arms.contains(arm)) continue;
      const auto& a = arms[arm];
      char line[160];
      std::snprintf(line, sizeof line, "  %-9s %-10s %-12s %-8s %s\n", arm, count(member(a, "requests")).c_str(),
                    pct(member(a, "error_rate")).c_str(), secs(member(a, "p50_seconds")).c_str(),
                    secs(member(a, "p99_seconds")).c_str());
      o << line;
    }
  }
  if (verdict) render_checks(o, *verdict);
  return o.str();
}

// The report's "shadow" section: what the canary would have answered, and at what cost.
std::string render_shadow(const nlohmann::json& s) {
  std::ostringstream o;
  if (!member(s, "enabled").is_boolean() || !member(s, "enabled").get<bool>()) {
    o << "Shadow: off (shadow.enabled: false)\n";
    return o.str();
  }
  o << "Shadow: " << num(member(s, "share_percent"), "%g") << "% of control requests, at most "
    << num(member(s, "max_per_second"), "%g") << "/s and " << count(member(s, "max_in_flight")) << " in flight\n";
  o << "  pairs:    " << count(member(s, "pairs")) << " compared, " << count(member(s, "in_flight")) << " in flight\n";
  const auto& res = member(s, "results");
  o << "  results:  both succeeded " << count(member(res, "both_succeeded")) << ", status differs "
    << count(member(res, "status_differs")) << ", canary failed " << count(member(res, "shadow_failed"))
    << ", both failed " << count(member(res, "both_failed")) << "\n";
  const auto& sk = member(s, "skipped");
  o << "  skipped:  rate cap " << count(member(sk, "rate")) << ", in-flight cap " << count(member(sk, "in_flight"))
    << ", rolled back " << count(member(sk, "rolled_back")) << "\n";
  const auto& m = member(s, "match_rates");
  o << "  match:    status " << pct(member(m, "status")) << ", finish_reason " << pct(member(m, "finish_reason"))
    << ", tool names " << pct(member(m, "tool_names")) << ", canary JSON valid " << pct(member(m, "shadow_json_valid"))
    << ", tool arguments valid " << pct(member(m, "tool_arguments_valid")) << "\n";
  const auto& lat = member(s, "latency_delta_seconds");
  const auto& ttfb = member(s, "ttfb_delta_seconds");
  o << "  latency:  canary - control p50 " << secs(member(lat, "p50")) << ", p99 " << secs(member(lat, "p99"))
    << ", mean " << secs(member(lat, "mean")) << "; first byte p50 " << secs(member(ttfb, "p50")) << "\n";
  o << "  length:   canary/control " << num(member(s, "length_ratio_mean"), "%.2f") << "\n";
  const auto& cost = member(s, "cost_usd");
  o << "  cost:     control $" << num(member(cost, "control"), "%.4f") << ", canary $"
    << num(member(cost, "canary"), "%.4f") << ", delta $" << num(member(cost, "delta"), "%.4f");
  if (const auto& p = member(s, "cost_delta_percent"); p.is_number()) o << " (" << num(p, "%+.1f") << "%)";
  o << "\n";
  return o.str();
}

std::string render_report(const nlohmann::json& r) {
  std::ostringstream o;
  // The columns cover different spans (docs/observability.md): say which, above them.
  std::string window = "analysis window";
  if (const auto& w = member(r, "window_seconds"); w.is_number() && w.get<double>() > 0) {
    const double sec = w.get<double>();
    char b[64];
    if (std::fmod(sec, 3600) == 0) {
      std::snprintf(b, sizeof b, "analysis window, last %.0fh", sec / 3600);
    } else if (std::fmod(sec, 60) == 0) {
      std::snprintf(b, sizeof b, "analysis window, last %.0fm", sec / 60);
    } else {
      std::snprintf(b, sizeof b, "analysis window, last %gs", sec);
    }
    window = b;
  }
  char groups[256];
  std::snprintf(groups, sizeof groups, "            %-47s%-29s%s\n", ("[" + window + "]").c_str(), "[since start]",
                "[at the window's rate]");
  o << groups;
  o << "  ARM       REQUESTS  ERRORS   P50      P99      TTFB p50  TOKENS(in/out)     COST $    $/1k req  $/month (proj.)\n";
  if (const auto& arms = member(r, "arms"); arms.is_object()) {
    for (const char* arm : {"control", "canary"}) {
      if (!arms.contains(arm)) continue;
      const auto& a = arms[arm];
      char line[256];
      std::snprintf(line, sizeof line, "  %-9s %-9s %-8s %-8s %-8s %-9s %-18s %-9s %-9s %s\n", arm,
                    count(member(a, "requests")).c_str(), pct(member(a, "error_rate")).c_str(),
                    secs(member(a, "p50_seconds")).c_str(), secs(member(a, "p99_seconds")).c_str(),
                    secs(member(a, "ttfb_p50_seconds")).c_str(),
                    (count(member(a, "prompt_tokens")) + "/" + count(member(a, "completion_tokens"))).c_str(),
                    num(member(a, "cost_usd"), "%.4f").c_str(),
                    num(member(a, "cost_per_1k_requests_usd"), "%.4f").c_str(),
                    num(member(a, "projected_monthly_cost_usd"), "%.2f").c_str());
      o << line;
    }
  }
  if (const auto& saving = member(r, "projected_monthly_saving_usd"); saving.is_number()) {
    o << "\nProjected monthly saving if all traffic moved to the canary: $" << num(saving, "%.2f") << "\n";
  }
  if (const auto& shadow = member(r, "shadow"); shadow.is_object()) o << "\n" << render_shadow(shadow);
  return o.str();
}

std::string render_experiments(const nlohmann::json& j) {
  std::ostringstream o;
  o << "  EXPERIMENT       MATCH                              CONTROL -> CANARY          STATE        WEIGHT  VERDICT\n";
  const auto& list = member(j, "experiments");
  if (list.is_array()) {
    for (const auto& e : list) {
      std::string match;
      const auto& m = member(e, "match");
      if (member(m, "any").is_boolean()) match = "everything else";
      for (const char* k : {"models", "routes"}) {
        if (const auto& v = member(m, k); v.is_array()) {
          for (const auto& x : v) match += (match.empty() ? "" : ", ") + (x.is_string() ? x.get<std::string>() : "?");
        }
      }
      if (const auto& h = member(m, "header"); h.is_object()) {
        match += (match.empty() ? "" : ", ") + text(h, "name", "?") + ": " + text(h, "value", "");
      }
      const std::string arms = text(e, "control", "?") + " -> " + text(e, "canary", "?");
      char line[512];
      std::snprintf(line, sizeof line, "  %-16s %-34s %-26s %-12s %-7s %s\n", text(e, "name", "?").c_str(),
                    match.c_str(), arms.c_str(), text(e, "state", "?").c_str(),
                    (num(member(e, "weight"), "%g") + "%").c_str(), text(e, "verdict", "-").c_str());
      o << line;
    }
  }
  if (const auto& d = member(j, "default_upstream"); d.is_string()) {
    o << "\nRequests no experiment matches go to " << d.get<std::string>() << ".\n";
  }
  return o.str();
}

std::string render_reports(const nlohmann::json& r) {
  std::ostringstream o;
  if (const auto& list = member(r, "experiments"); list.is_array()) {
    for (const auto& e : list) o << "Experiment " << text(e, "experiment", "?") << "\n" << render_report(e) << "\n";
  }
  const auto& t = member(r, "total");
  o << "Total (" << count(member(t, "experiments")) << " experiments): $" << num(member(t, "cost_usd"), "%.4f")
    << " so far, $" << num(member(t, "projected_monthly_cost_usd"), "%.2f") << " a month projected";
  if (const auto& saving = member(t, "projected_monthly_saving_usd"); saving.is_number()) {
    o << "; moving every experiment's traffic to its canary would save $" << num(saving, "%.2f") << " a month";
  }
  o << "\n";
  if (const auto& shadow = member(r, "shadow"); shadow.is_object()) o << "\n" << render_shadow(shadow);
  return o.str();
}

int main(int argc, char** argv) {
  std::string url_text = std::getenv("CANARYD_URL") ? std::getenv("CANARYD_URL") : "http://127.0.0.1:8080";
  std::string token = std::getenv("CANARYD_ADMIN_TOKEN") ? std::getenv("CANARYD_ADMIN_TOKEN") : "";
  bool as_json = false;
  std::string experiment;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--url" || a == "--token") && i + 1 < argc) {
      (a == "--url" ? url_text : token) = argv[++i];
    } else if (a.rfind("--url=", 0) == 0) {
      url_text = a.substr(6);
    } else if (a.rfind("--token=", 0) == 0) {
      token = a.substr(8);
    } else if (a == "--experiment" && i + 1 < argc) {
      experiment = argv[++i];
    } else if (a.rfind("--experiment=", 0) == 0) {
      experiment = a.substr(13);
    } else if (a == "--json") {
      as_json = true;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else {
      args.push_back(a);
    }
  }
  Url url;
  if (args.empty() || !parse_url(url_text, url)) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string& verb = args[0];
  http::verb method = http::verb::post;
  std::string path;
  std::string body;
  // One experiment's routes, or (no --experiment) those of the only one.
  const std::string base = experiment.empty() ? "/admin/rollout" : "/admin/experiments/" + experiment;
  if (verb == "list") {
    method = http::verb::get;
    path = "/admin/experiments";
  } else if (verb == "status" || verb == "get") {
    method = http::verb::get;
    path = base;
    if (experiment.empty()) {
      // Several experiments and none named: the list, not an error.
      nlohmann::json list;
      std::string error;
      if (call(url, token, http::verb::get, "/admin/experiments", "", list, error) == 0 &&
          member(list, "experiments").is_array() && member(list, "experiments").size() > 1) {
        std::cout << (as_json ? list.dump(2) + "\n"
                              : render_experiments(list) + "\nName one with --experiment NAME for its status.\n");
        return 0;
      }
    }
  } else if (verb == "report") {
    method = http::verb::get;
    path = experiment.empty() ? "/admin/report" : base + "/report";
  } else if (verb == "pause" || verb == "resume" || verb == "promote" || verb == "abort" || verb == "retry") {
    path = base + "/" + verb;
  } else if (verb == "weight" || verb == "set-weight") {
    if (args.size() != 2) {
      std::cerr << "canaryd ctl weight: give the percentage, e.g. `weight 25`\n";
      return 2;
    }
    char* end = nullptr;
    double w = std::strtod(args[1].c_str(), &end);
    if (end == args[1].c_str() || *end != '\0') {
      std::cerr << "canaryd ctl weight: '" << args[1] << "' is not a number\n";
      return 2;
    }
    path = base + "/weight";
    body = nlohmann::json{{"weight", w}}.dump();
  } else {
    std::cerr << "canaryd ctl: unknown verb '" << verb << "'\n" << kUsage;
    return 2;
  }
  nlohmann::json out;
  std::string error;
  if (call(url, token, method, path, body, out, error) != 0) {
    std::cerr << "canaryd ctl " << verb << ": " << error << "\n";
    return 1;
  }
  if (as_json) {
    std::cout << out.dump(2) << "\n";
  } else {
    if (verb == "list") {
      std::cout << render_experiments(out);
    } else if (verb == "report") {
      const auto& list = member(out, "experiments");
      std::cout << (list.is_array() && list.size() > 1 ? render_reports(out) : render_report(out));
    } else {
      if (!experiment.empty()) std::cout << "Experiment: " << experiment << "\n";
      std::cout << render_status(out);
    }
  }
  return 0;
}

}  // namespace canaryd::ctl
