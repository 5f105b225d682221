// Canary analysis (SPEC §5): judges the canary's window against the thresholds
// and, with relative_to_control, against control's window with a one-sided
// two-proportion z-test, so a provider-wide incident that hits both arms
// equally does not roll the canary back. Pure function of its inputs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "canaryd/config.hpp"
#include "rollout/window.hpp"

namespace canaryd::rollout {

// z above this = canary worse than control at 95% confidence, one-sided.
constexpr double kZCritical = 1.645;

struct Verdict {
  enum class Kind { pass, fail, insufficient };
  Kind kind = Kind::insufficient;
  std::string reason;
  double canary_error_rate = 0;
  double control_error_rate = 0;
  double z = 0;  // two-proportion z of canary minus control; 0 without control data
  double canary_p99_seconds = 0;
  std::uint64_t canary_requests = 0;
  std::uint64_t control_requests = 0;
  bool error_rate_failed = false;  // which check failed, for bounded metric labels
  bool latency_failed = false;
};

std::string_view verdict_kind_name(Verdict::Kind kind);  // "pass" | "fail" | "insufficient"
bool parse_verdict_kind(std::string_view name, Verdict::Kind& out);

// Pooled two-proportion z statistic of (e1/n1) - (e2/n2):
//   p = (e1 + e2) / (n1 + n2),  z = (e1/n1 - e2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)).
// 0 when either sample is empty or the pooled proportion is 0 or 1.
double two_proportion_z(std::uint64_t e1, std::uint64_t n1, std::uint64_t e2, std::uint64_t n2);

Verdict analyse(const config::AnalysisConfig& config, const Snapshot& control, const Snapshot& canary);

// {"kind","reason","canary_error_rate","control_error_rate","z","canary_p99_seconds",
//  "canary_requests","control_requests","error_rate_failed","latency_failed"}
nlohmann::json to_json(const Verdict& verdict);

}  // namespace canaryd::rollout
