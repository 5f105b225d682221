// The canary's verdict (SPEC §5, issue 14): what the judge (judge.hpp) found
// at one look, with every check it ran, and its JSON. The first judge, a
// one-sided two-proportion z-test re-run at every look, is gone: repeated,
// it rolled healthy canaries back (docs/rollout.md, "The judge"); its z stays
// in the verdict for display.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "canaryd/config.hpp"
#include "rollout/window.hpp"

namespace canaryd::rollout {

// One check's outcome at one look. "skipped": the check had nothing to judge
// (no answers of its kind, the weight at 0 or 100 for the SRM check); it never
// holds a rollout back.
enum class Outcome { pass, fail, inconclusive, skipped };
std::string_view outcome_name(Outcome outcome);  // "pass" | "fail" | "inconclusive" | "skipped"
std::optional<Outcome> parse_outcome(std::string_view name);

struct CheckResult {
  static constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  config::CheckId id = config::CheckId::error_rate;
  Outcome outcome = Outcome::skipped;
  bool acting = true;  // enabled and not dry_run: its failures act
  bool dry_run = false;
  bool critical = false;
  std::uint32_t failing_looks = 0;  // consecutive failing looks, this one included
  std::uint32_t failure_limit = 1;  // failing looks in a row before it acts
  double canary = kNone;            // the value per arm: a rate or share (0..1), or seconds (median)
  double control = kNone;
  double estimate = kNone;   // canary against control: odds ratio, latency ratio
  double bound = kNone;      // what is allowed (a rate, a ratio, seconds)
  double statistic = kNone;  // log e-value, or z for the latency rank tests
  double threshold = kNone;  // the level `statistic` must reach at this look to fail
  std::string detail;        // one line: the figures and why
};

// The sample-ratio check: users (and, shown only, requests) on the canary
// against the weight.
struct SrmResult {
  Outcome outcome = Outcome::skipped;  // fail = mismatch
  std::uint64_t canary_users = 0;
  std::uint64_t control_users = 0;
  double sampled = 1;         // share of users the counts cover
  double expected_share = 0;  // the weight, 0..1
  double user_share = CheckResult::kNone;
  double request_share = CheckResult::kNone;  // canary's share of split requests in the window (not tested)
  double log_e = 0;
  double threshold = 0;
  std::string detail;
};

struct Verdict {
  // inconclusive (named "insufficient" before issue 14; decode() reads both):
  // no pass and no fail; never advances a step.
  enum class Kind { pass, fail, inconclusive };
  Kind kind = Kind::inconclusive;
  std::string reason;
  double canary_error_rate = 0;
  double control_error_rate = 0;
  double z = 0;  // two-proportion z of canary minus control; 0 without control data
  double canary_p99_seconds = 0;
  std::uint64_t canary_requests = 0;
  std::uint64_t control_requests = 0;
  bool error_rate_failed = false;  // which check failed, for bounded metric labels
  bool latency_failed = false;
  bool quality_failed = false;

  // The judge v2.
  std::vector<CheckResult> checks;  // every enabled check, in CheckId order
  std::optional<SrmResult> srm;
  std::string hold;  // "srm" | "inconclusive": pause the rollout (hold_reason says why); "" none
  std::string hold_reason;
  std::uint64_t look = 0;                // looks since the judge (re)started
  std::uint32_t inconclusive_looks = 0;  // in a row, while progressing
  double alpha_per_check = 0;            // analysis.alpha / the statistical checks enabled
};

std::string_view verdict_kind_name(Verdict::Kind kind);  // "pass" | "fail" | "inconclusive"
// Also reads "insufficient", the name before issue 14.
bool parse_verdict_kind(std::string_view name, Verdict::Kind& out);

// Pooled two-proportion z statistic of (e1/n1) - (e2/n2):
//   p = (e1 + e2) / (n1 + n2),  z = (e1/n1 - e2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)).
// 0 when either sample is empty or the pooled proportion is 0 or 1.
double two_proportion_z(std::uint64_t e1, std::uint64_t n1, std::uint64_t e2, std::uint64_t n2);

// {"kind","reason","canary_error_rate","control_error_rate","z","canary_p99_seconds",
//  "canary_requests","control_requests","error_rate_failed","latency_failed",
//  "quality_failed","checks":[{...}],"srm":{...}|null,"hold":null|"srm"|"inconclusive",
//  "hold_reason","look","inconclusive_looks","alpha_per_check"}; numbers that
// are not set (NaN) are null.
nlohmann::json to_json(const Verdict& verdict);
nlohmann::json to_json(const CheckResult& check);
nlohmann::json to_json(const SrmResult& srm);
// The inverse, tolerant: what it cannot read it leaves at its default (a
// stored status from another version). False when "kind" is missing or unknown.
bool verdict_from_json(const nlohmann::json& j, Verdict& out);

}  // namespace canaryd::rollout
