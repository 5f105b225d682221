#include "rollout/fallback.hpp"

#include <algorithm>

namespace canaryd::rollout {

MetricStatus metric_status(const Error& error, int status) {
  if (error) return error_info(error.kind).metric_status;
  return status >= 400 ? MetricStatus::error : MetricStatus::success;
}

bool analysis_error(const Error& error, int status) {
  if (error) return error_info(error.kind).analysis_error;
  return status >= 500 || status == 429 || status == 401 || status == 403;
}

std::string_view fallback_reason(const Error& error, int status) {
  if (error) return error_info(error.kind).fallback_reason;
  if (status == 429) return "429";
  if (status >= 500) return "5xx";
  return "";
}

bool may_fall_back(const config::FallbackConfig& fallback, std::string_view reason, Arm arm, bool forced, int attempt) {
  if (attempt != 0 || arm != Arm::canary || forced || !fallback.enabled || reason.empty()) return false;
  return std::find(fallback.on.begin(), fallback.on.end(), reason) != fallback.on.end();
}

}  // namespace canaryd::rollout
