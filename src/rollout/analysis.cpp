#include "rollout/analysis.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {

std::string_view verdict_kind_name(Verdict::Kind kind) {
  switch (kind) {
    case Verdict::Kind::pass: return "pass";
    case Verdict::Kind::fail: return "fail";
    case Verdict::Kind::inconclusive: return "inconclusive";
  }
  return "inconclusive";
}

bool parse_verdict_kind(std::string_view name, Verdict::Kind& out) {
  if (name == "insufficient") name = "inconclusive";
  for (auto k : {Verdict::Kind::pass, Verdict::Kind::fail, Verdict::Kind::inconclusive}) {
    if (verdict_kind_name(k) == name) {
      out = k;
      return true;
    }
  }
  return false;
}

std::string_view outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::pass: return "pass";
    case Outcome::fail: return "fail";
    case Outcome::inconclusive: return "inconclusive";
    case Outcome::skipped: return "skipped";
  }
  return "skipped";
}

std::optional<Outcome> parse_outcome(std::string_view name) {
  for (auto o : {Outcome::pass, Outcome::fail, Outcome::inconclusive, Outcome::skipped}) {
    if (outcome_name(o) == name) return o;
  }
  return std::nullopt;
}

double two_proportion_z(std::uint64_t e1, std::uint64_t n1, std::uint64_t e2, std::uint64_t n2) {
  if (n1 == 0 || n2 == 0) return 0;
  const double p1 = static_cast<double>(e1) / static_cast<double>(n1);
  const double p2 = static_cast<double>(e2) / static_cast<double>(n2);
  const double p = static_cast<double>(e1 + e2) / static_cast<double>(n1 + n2);
  const double var = p * (1 - p) * (1.0 / static_cast<double>(n1) + 1.0 / static_cast<double>(n2));
  if (!(var > 0)) return 0;
  return (p1 - p2) / std::sqrt(var);
}

namespace {

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

double number_of(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : CheckResult::kNone;
}

template <class T>
T value_of(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    return it->is_boolean() ? it->get<bool>() : fallback;
  } else if constexpr (std::is_same_v<T, std::string>) {
    return it->is_string() ? it->get<std::string>() : fallback;
  } else {
    return it->is_number() ? it->get<T>() : fallback;
  }
}

}  // namespace

nlohmann::json to_json(const CheckResult& c) {
  return nlohmann::json{{"name", config::check_name(c.id)},
                        {"outcome", outcome_name(c.outcome)},
                        {"acting", c.acting},
                        {"dry_run", c.dry_run},
                        {"critical", c.critical},
                        {"failing_looks", c.failing_looks},
                        {"failure_limit", c.failure_limit},
                        {"canary", number(c.canary)},
                        {"control", number(c.control)},
                        {"estimate", number(c.estimate)},
                        {"bound", number(c.bound)},
                        {"statistic", number(c.statistic)},
                        {"threshold", number(c.threshold)},
                        {"detail", c.detail}};
}

nlohmann::json to_json(const SrmResult& s) {
  return nlohmann::json{{"outcome", outcome_name(s.outcome)},       {"canary_users", s.canary_users},
                        {"control_users", s.control_users},         {"sampled", s.sampled},
                        {"expected_share", s.expected_share},       {"user_share", number(s.user_share)},
                        {"request_share", number(s.request_share)}, {"log_e", number(s.log_e)},
                        {"threshold", number(s.threshold)},         {"detail", s.detail}};
}

nlohmann::json to_json(const Verdict& v) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : v.checks) checks.push_back(to_json(c));
  return nlohmann::json{{"kind", verdict_kind_name(v.kind)},
                        {"reason", v.reason},
                        {"canary_error_rate", v.canary_error_rate},
                        {"control_error_rate", v.control_error_rate},
                        {"z", v.z},
                        {"canary_p99_seconds", v.canary_p99_seconds},
                        {"canary_requests", v.canary_requests},
                        {"control_requests", v.control_requests},
                        {"error_rate_failed", v.error_rate_failed},
                        {"latency_failed", v.latency_failed},
                        {"quality_failed", v.quality_failed},
                        {"checks", std::move(checks)},
                        {"srm", v.srm ? to_json(*v.srm) : nlohmann::json(nullptr)},
                        {"hold", v.hold.empty() ? nlohmann::json(nullptr) : nlohmann::json(v.hold)},
                        {"hold_reason", v.hold_reason},
                        {"look", v.look},
                        {"inconclusive_looks", v.inconclusive_looks},
                        {"alpha_per_check", v.alpha_per_check}};
}

bool verdict_from_json(const nlohmann::json& j, Verdict& v) {
  if (!j.is_object()) return false;
  auto kind = j.find("kind");
  if (kind == j.end() || !kind->is_string() || !parse_verdict_kind(kind->get<std::string>(), v.kind)) return false;
  v.reason = value_of<std::string>(j, "reason", "");
  v.canary_error_rate = value_of<double>(j, "canary_error_rate", 0);
  v.control_error_rate = value_of<double>(j, "control_error_rate", 0);
  v.z = value_of<double>(j, "z", 0);
  v.canary_p99_seconds = value_of<double>(j, "canary_p99_seconds", 0);
  v.canary_requests = value_of<std::uint64_t>(j, "canary_requests", 0);
  v.control_requests = value_of<std::uint64_t>(j, "control_requests", 0);
  v.error_rate_failed = value_of<bool>(j, "error_rate_failed", false);
  v.latency_failed = value_of<bool>(j, "latency_failed", false);
  v.quality_failed = value_of<bool>(j, "quality_failed", false);
  v.hold = value_of<std::string>(j, "hold", "");
  v.hold_reason = value_of<std::string>(j, "hold_reason", "");
  v.look = value_of<std::uint64_t>(j, "look", 0);
  v.inconclusive_looks = value_of<std::uint32_t>(j, "inconclusive_looks", 0);
  v.alpha_per_check = value_of<double>(j, "alpha_per_check", 0);
  if (auto checks = j.find("checks"); checks != j.end() && checks->is_array()) {
    for (const auto& c : *checks) {
      if (!c.is_object()) continue;
      CheckResult r;
      const std::string name = value_of<std::string>(c, "name", "");
      bool known = false;
      for (std::size_t i = 0; i < config::kCheckCount; ++i) {
        if (config::kCheckNames[i] == name) {
          r.id = static_cast<config::CheckId>(i);
          known = true;
        }
      }
      auto outcome = parse_outcome(value_of<std::string>(c, "outcome", ""));
      if (!known || !outcome) continue;  // a check this version does not know
      r.outcome = *outcome;
      r.acting = value_of<bool>(c, "acting", true);
      r.dry_run = value_of<bool>(c, "dry_run", false);
      r.critical = value_of<bool>(c, "critical", false);
      r.failing_looks = value_of<std::uint32_t>(c, "failing_looks", 0);
      r.failure_limit = value_of<std::uint32_t>(c, "failure_limit", 1);
      r.canary = number_of(c, "canary");
      r.control = number_of(c, "control");
      r.estimate = number_of(c, "estimate");
      r.bound = number_of(c, "bound");
      r.statistic = number_of(c, "statistic");
      r.threshold = number_of(c, "threshold");
      r.detail = value_of<std::string>(c, "detail", "");
      v.checks.push_back(std::move(r));
    }
  }
  if (auto srm = j.find("srm"); srm != j.end() && srm->is_object()) {
    SrmResult s;
    s.outcome = parse_outcome(value_of<std::string>(*srm, "outcome", "")).value_or(Outcome::skipped);
    s.canary_users = value_of<std::uint64_t>(*srm, "canary_users", 0);
    s.control_users = value_of<std::uint64_t>(*srm, "control_users", 0);
    s.sampled = value_of<double>(*srm, "sampled", 1);
    s.expected_share = value_of<double>(*srm, "expected_share", 0);
    s.user_share = number_of(*srm, "user_share");
    s.request_share = number_of(*srm, "request_share");
    s.log_e = value_of<double>(*srm, "log_e", 0);
    s.threshold = value_of<double>(*srm, "threshold", 0);
    s.detail = value_of<std::string>(*srm, "detail", "");
    v.srm = std::move(s);
  }
  return true;
}

}  // namespace canaryd::rollout
