#include "admin/api.hpp"

#include <array>
#include <charconv>
#include <cmath>

#include "admin/history.hpp"
#include "admin/report.hpp"
#include "common/json_scan.hpp"
#include "http/headers.hpp"
#include "rollout/controller.hpp"
#include "rollout/state_machine.hpp"
#include "shadow/shadow.hpp"

namespace canaryd::admin {
namespace {

Answer fail(ErrorKind kind, std::string message) {
  Answer a;
  a.error = {kind, std::move(message)};
  return a;
}

Answer json_answer(nlohmann::json body) {
  Answer a;
  a.body = std::move(body);
  return a;
}

// The money report plus the shadow comparison (GET /admin/report, ctl report).
nlohmann::json full_report(const Services& s, const config::Config& config) {
  nlohmann::json arms = s.rollout ? s.rollout->status().value("arms", nlohmann::json()) : nlohmann::json();
  nlohmann::json j = s.report->build(arms);
  if (s.shadow) j["shadow"] = s.shadow->report(config.shadow);
  return j;
}

using Verb = rollout::RolloutController::Verb;

// /admin/rollout/<verb>: the verb, or nullopt when there is no such verb.
std::optional<Verb> parse_verb(std::string_view verb) {
  static constexpr std::array<std::pair<std::string_view, Verb>, 6> kVerbs{{{"pause", Verb::pause},
                                                                            {"resume", Verb::resume},
                                                                            {"promote", Verb::promote},
                                                                            {"abort", Verb::abort},
                                                                            {"retry", Verb::retry},
                                                                            {"weight", Verb::weight}}};
  for (const auto& [name, v] : kVerbs) {
    if (name == verb) return v;
  }
  return std::nullopt;
}

Answer rollout_api(rollout::RolloutController& ro, const Request& req) {
  constexpr std::string_view kBase = "/admin/rollout";
  if (req.path == kBase) {
    if (req.method != "GET") return fail(ErrorKind::method_not_allowed, "wrong method for " + std::string(req.path));
    return json_answer(ro.status());
  }
  std::optional<Verb> verb;
  if (req.path.substr(0, kBase.size() + 1) == "/admin/rollout/") verb = parse_verb(req.path.substr(kBase.size() + 1));
  if (!verb) return fail(ErrorKind::not_found, "unknown admin route " + std::string(req.path));
  if (req.method != "POST") return fail(ErrorKind::method_not_allowed, "wrong method for " + std::string(req.path));
  double weight = 0;
  if (*verb == Verb::weight) {
    WeightBody parsed = parse_weight_body(req.body);
    if (!parsed.error.empty()) return fail(ErrorKind::bad_request, std::move(parsed.error));
    weight = parsed.weight;
  }
  ro.operate(*verb, weight);
  return json_answer(ro.status());
}

}  // namespace

WeightBody parse_weight_body(std::string_view body) {
  WeightBody out;
  json::Lookup<1> lk{{"weight"}};
  if (std::string why = json::scan_object(body, lk); !why.empty()) {
    out.error = "the body must be JSON like {\"weight\": 25}: " + why;
    return out;
  }
  if (!lk.values[0]) {
    out.error = "the body must be JSON like {\"weight\": 25}: no \"weight\"";
    return out;
  }
  std::string_view lit = lk.values[0]->of(body);
  if (lit.empty() || !(lit.front() == '-' || (lit.front() >= '0' && lit.front() <= '9'))) {
    out.error = "weight must be a number from 0 to 100";
    return out;
  }
  auto [end, ec] = std::from_chars(lit.data(), lit.data() + lit.size(), out.weight);
  const bool nonzero_digits = lit.find_first_of("123456789") < lit.find_first_of("eE");
  if (ec != std::errc() || end != lit.data() + lit.size() || !std::isfinite(out.weight) ||
      (out.weight != 0 && !std::isnormal(out.weight)) || (out.weight == 0 && nonzero_digits)) {
    out.error = "weight must be a number from 0 to 100 (got " + std::string(lit.substr(0, 40)) + ")";
    return out;
  }
  out.error = rollout::validate_weight(out.weight);
  return out;
}

Answer handle(const Services& s, const config::Config& config, const Request& req) {
  const auto& sc = config.server;
  if (sc.admin_token_value.empty()) {
    return fail(ErrorKind::forbidden, "the admin API is off: set server.admin_token_env and that variable");
  }
  const bool get = req.method == "GET" || req.method == "HEAD";
  // The status page holds no data, only the token prompt: it loads without
  // the token, and each of its fetches sends it.
  if (req.path == "/admin/ui") {
    if (!get) return fail(ErrorKind::method_not_allowed, "use GET on " + std::string(req.path));
    Answer a;
    a.status_page = true;
    return a;
  }
  if (!wire::client_key_ok(req.authorization, std::array<std::string_view, 1>{sc.admin_token_value})) {
    return fail(ErrorKind::unauthorized, "a valid admin token is required");
  }
  if (req.path == "/admin/history") {
    if (!get) return fail(ErrorKind::method_not_allowed, "use GET on " + std::string(req.path));
    if (!s.history) return fail(ErrorKind::not_found, "no history");
    return json_answer(s.history->to_json());
  }
  if (req.path == "/admin/report") {
    if (!get) return fail(ErrorKind::method_not_allowed, "use GET on " + std::string(req.path));
    if (!s.report) return fail(ErrorKind::not_found, "no report");
    return json_answer(full_report(s, config));
  }
  if (!s.rollout) return fail(ErrorKind::not_found, "no rollout");
  // The judge's last verdict alone (issue 14): what Argo Rollouts' Web
  // provider reads (deploy/argo-rollouts/verdict-template.yaml).
  if (req.path == "/admin/verdict") {
    if (!get) return fail(ErrorKind::method_not_allowed, "use GET on " + std::string(req.path));
    return json_answer(s.rollout->verdict());
  }
  return rollout_api(*s.rollout, req);
}

}  // namespace canaryd::admin
