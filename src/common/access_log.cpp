#include "common/access_log.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>

#include "common/json_scan.hpp"

namespace canaryd::log {
namespace {

void field(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":";
  out += json::encode_string(value);
}

void number(std::string& out, std::string_view key, double value, int decimals = 3) {
  out += ",\"";
  out += key;
  out += "\":";
  // JSON has no NaN or infinity; and %f of a huge double is ~310 characters.
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char buf[400];
  int n = std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  if (n < 0 || static_cast<std::size_t>(n) >= sizeof buf) {
    out += "null";
    return;
  }
  out.append(buf, static_cast<std::size_t>(n));
}

void integer(std::string& out, std::string_view key, std::uint64_t value) {
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(value);
}

}  // namespace

std::string format_access(const AccessRecord& r) {
  std::string out;
  out.reserve(320);
  out += "{\"type\":\"access\"";
  field(out, "request_id", r.request_id);
  field(out, "method", r.method);
  field(out, "path", r.path);
  if (!r.arm.empty()) field(out, "arm", r.arm);
  if (!r.provider.empty()) field(out, "provider", r.provider);
  if (!r.model.empty()) field(out, "model", r.model);
  integer(out, "status", static_cast<std::uint64_t>(r.status));
  number(out, "latency_ms", r.latency_ms);
  if (r.ttfb_ms >= 0) number(out, "ttfb_ms", r.ttfb_ms);
  if (r.overhead_ms >= 0) number(out, "overhead_ms", r.overhead_ms);
  if (r.prompt_tokens || r.completion_tokens) {
    integer(out, "prompt_tokens", r.prompt_tokens);
    integer(out, "completion_tokens", r.completion_tokens);
  }
  // Micro-dollar precision: one cheap call costs well under a tenth of a cent.
  if (r.cost_usd >= 0) number(out, "cost_usd", r.cost_usd, 6);
  if (r.stream) out += ",\"stream\":true";
  if (r.pinned) out += ",\"pinned\":true";
  if (!r.sticky_source.empty()) field(out, "sticky_source", r.sticky_source);
  if (!r.fallback.empty()) field(out, "fallback", r.fallback);
  if (!r.error.empty()) field(out, "error", r.error);
  out += '}';
  return out;
}

void AccessLog::write(const AccessRecord& r) {
  if (!logger_ || !logger_->should_log(spdlog::level::info)) return;
  logger_->info(format_access(r));
}

void AccessLog::write_line(std::string_view json_object) {
  if (!logger_ || !logger_->should_log(spdlog::level::info)) return;
  logger_->info("{}", json_object);
}

}  // namespace canaryd::log
