#include "canaryd/error.hpp"

#include <array>
#include <nlohmann/json.hpp>

namespace canaryd {
namespace {

using S = ErrorSource;
using L = LogLevel;
using M = MetricStatus;

// One row per ErrorKind, in enum order (checked below).
constexpr std::array<ErrorInfo, 17> kTable{{
    // source         status  OpenAI type              name / code           log       metric       fallback         analysis
    {S::none, 200, "", "none", L::debug, M::success, "", false},
    {S::downstream, 400, "invalid_request_error", "bad_request", L::debug, M::error, "", false},
    {S::downstream, 401, "authentication_error", "invalid_api_key", L::info, M::error, "", false},
    {S::downstream, 403, "authentication_error", "forbidden", L::info, M::error, "", false},
    {S::downstream, 404, "invalid_request_error", "not_found", L::debug, M::error, "", false},
    {S::downstream, 405, "invalid_request_error", "method_not_allowed", L::debug, M::error, "", false},
    {S::downstream, 413, "invalid_request_error", "payload_too_large", L::info, M::error, "", false},
    {S::downstream, 431, "invalid_request_error", "header_too_large", L::info, M::error, "", false},
    {S::internal, 503, "server_unavailable", "draining", L::info, M::error, "", false},
    // An arm's pool full past pool_wait (a slow arm piles up connections) counts against that arm.
    {S::internal, 503, "server_unavailable", "overloaded", L::warn, M::error, "", true},
    {S::internal, 500, "server_error", "internal_error", L::error, M::error, "", true},
    {S::upstream, 502, "upstream_error", "connect_error", L::warn, M::error, "connect_error", true},
    {S::upstream, 502, "upstream_error", "tls_error", L::warn, M::error, "tls_error", true},
    {S::upstream, 504, "upstream_error", "timeout", L::warn, M::timeout, "timeout", true},
    {S::upstream, 502, "upstream_error", "bad_response", L::warn, M::error, "5xx", true},
    {S::upstream, 502, "upstream_error", "response_too_large", L::warn, M::error, "", true},
    {S::store, 503, "server_unavailable", "store_unavailable", L::warn, M::error, "", false},
}};
static_assert(kTable.size() == static_cast<std::size_t>(ErrorKind::store_unavailable) + 1,
              "one row per ErrorKind, in enum order");

}  // namespace

const ErrorInfo& error_info(ErrorKind kind) {
  const auto i = static_cast<std::size_t>(kind);
  return i < kTable.size() ? kTable[i] : kTable[static_cast<std::size_t>(ErrorKind::internal)];
}

std::string openai_error_body(ErrorKind kind, std::string_view message) {
  const ErrorInfo& e = error_info(kind);
  nlohmann::json j = {{"error", {{"message", message}, {"type", e.type}, {"param", nullptr}, {"code", e.name}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace canaryd
