#include "rollout/analysis.hpp"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {

namespace {

std::string percent(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", rate * 100.0);
  return buf;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3gs", s);
  return buf;
}

std::string fixed2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

}  // namespace

std::string_view verdict_kind_name(Verdict::Kind kind) {
  switch (kind) {
    case Verdict::Kind::pass: return "pass";
    case Verdict::Kind::fail: return "fail";
    case Verdict::Kind::insufficient: return "insufficient";
  }
  return "insufficient";
}

bool parse_verdict_kind(std::string_view name, Verdict::Kind& out) {
  for (auto k : {Verdict::Kind::pass, Verdict::Kind::fail, Verdict::Kind::insufficient}) {
    if (verdict_kind_name(k) == name) {
      out = k;
      return true;
    }
  }
  return false;
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

Verdict analyse(const config::AnalysisConfig& config, const Snapshot& control, const Snapshot& canary) {
  Verdict v;
  v.canary_requests = canary.requests;
  v.control_requests = control.requests;
  v.canary_error_rate = canary.error_rate;
  v.control_error_rate = control.error_rate;
  v.canary_p99_seconds = canary.p99_seconds();
  v.z = two_proportion_z(canary.errors, canary.requests, control.errors, control.requests);

  if (canary.requests < config.min_requests) {
    v.kind = Verdict::Kind::insufficient;
    v.reason = "insufficient data: " + std::to_string(canary.requests) + " of " +
               std::to_string(config.min_requests) + " canary requests";
    return v;
  }

  std::string failures;
  auto add_failure = [&](const std::string& why) {
    if (!failures.empty()) failures += "; ";
    failures += why;
  };
  std::string notes;

  if (canary.error_rate > config.max_error_rate) {
    const std::string rates = "canary error rate " + percent(canary.error_rate) + " above " +
                              percent(config.max_error_rate);
    // Without control traffic there is nothing to compare with: judge absolutely.
    const bool relative = config.relative_to_control && control.requests > 0;
    if (!relative) {
      v.error_rate_failed = true;
      add_failure(rates);
    } else if (v.z > kZCritical) {
      v.error_rate_failed = true;
      add_failure(rates + ", significantly worse than control " + percent(control.error_rate) +
                  " (z=" + fixed2(v.z) + ")");
    } else {
      notes = rates + " but not significantly worse than control " + percent(control.error_rate) +
              " (z=" + fixed2(v.z) + ")";
    }
  }

  const double max_p99 = std::chrono::duration<double>(config.max_p99_latency).count();
  if (max_p99 > 0 && v.canary_p99_seconds > max_p99) {  // 0: no absolute ceiling
    v.latency_failed = true;
    add_failure("canary p99 latency " + seconds(v.canary_p99_seconds) + " above " + seconds(max_p99));
  }

  if (!failures.empty()) {
    v.kind = Verdict::Kind::fail;
    v.reason = failures;
    return v;
  }
  v.kind = Verdict::Kind::pass;
  v.reason = notes.empty() ? "canary error rate " + percent(canary.error_rate) + ", p99 " +
                                 seconds(v.canary_p99_seconds) + " over " +
                                 std::to_string(canary.requests) + " requests"
                           : notes;
  return v;
}

nlohmann::json to_json(const Verdict& v) {
  return nlohmann::json{{"kind", verdict_kind_name(v.kind)},
                        {"reason", v.reason},
                        {"canary_error_rate", v.canary_error_rate},
                        {"control_error_rate", v.control_error_rate},
                        {"z", v.z},
                        {"canary_p99_seconds", v.canary_p99_seconds},
                        {"canary_requests", v.canary_requests},
                        {"control_requests", v.control_requests},
                        {"error_rate_failed", v.error_rate_failed},
                        {"latency_failed", v.latency_failed}};
}

}  // namespace canaryd::rollout
