// How one upstream attempt is classified (SPEC §5): which status label it
// counts under, whether it counts against its arm in the analysis window, and
// whether a failed canary attempt may be sent to control instead. A failure
// canaryd saw before any answer (connect, TLS, timeout, a malformed head) is
// classified by its row of the error table (canaryd/error.hpp); an answer by
// its status.
#pragma once

#include <string_view>

#include "canaryd/arm.hpp"
#include "canaryd/config.hpp"
#include "canaryd/error.hpp"

namespace canaryd::rollout {

// ai_proxy_requests_total{status}: timeout, error (a failure or an answer of
// 400 and up), success.
MetricStatus metric_status(const Error& error, int status);

// An error for the arm's window: its failures, never the client's own 4xx
// (400/404/413/422: its request). 429 is the provider's; so are 401 and 403:
// canaryd always sends the arm's own key (the client's Authorization is never
// forwarded), so a refused key is that arm's misconfiguration, and a canary
// answering 401 must be rolled back.
bool analysis_error(const Error& error, int status);

// The fallback.on value that covers this attempt's failure ("connect_error",
// "tls_error", "timeout", "5xx", "429"), "" when it did not fail in a way
// that may fall back.
std::string_view fallback_reason(const Error& error, int status);

// A failed attempt goes to control when fallback is on, its reason is listed,
// and it was the first attempt, on the canary, not forced there by the
// override header (whoever forces an arm wants that arm's answer). The budget
// is the controller's (RolloutController::take_fallback), asked last.
bool may_fall_back(const config::FallbackConfig& fallback, std::string_view reason, Arm arm, bool forced, int attempt);

}  // namespace canaryd::rollout
