#include "canaryd/error.hpp"

#include <nlohmann/json.hpp>

namespace canaryd {

ErrorSource error_source(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::connect_error:
    case ErrorKind::tls_error:
    case ErrorKind::timeout:
    case ErrorKind::bad_response:
    case ErrorKind::response_too_large:
      return ErrorSource::upstream;
    case ErrorKind::draining:
    case ErrorKind::overloaded:
    case ErrorKind::internal:
      return ErrorSource::internal;
    default:
      return ErrorSource::downstream;
  }
}

int http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::none: return 200;
    case ErrorKind::bad_request: return 400;
    case ErrorKind::unauthorized: return 401;
    case ErrorKind::forbidden: return 403;
    case ErrorKind::not_found: return 404;
    case ErrorKind::method_not_allowed: return 405;
    case ErrorKind::payload_too_large: return 413;
    case ErrorKind::header_too_large: return 431;
    case ErrorKind::draining: return 503;
    case ErrorKind::overloaded: return 503;
    case ErrorKind::internal: return 500;
    case ErrorKind::connect_error: return 502;
    case ErrorKind::tls_error: return 502;
    case ErrorKind::timeout: return 504;
    case ErrorKind::bad_response: return 502;
    case ErrorKind::response_too_large: return 502;
  }
  return 500;
}

std::string_view error_type(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::bad_request:
    case ErrorKind::not_found:
    case ErrorKind::method_not_allowed:
    case ErrorKind::payload_too_large:
    case ErrorKind::header_too_large:
      return "invalid_request_error";
    case ErrorKind::unauthorized:
    case ErrorKind::forbidden:
      return "authentication_error";
    case ErrorKind::draining:
    case ErrorKind::overloaded:
      return "server_unavailable";
    case ErrorKind::internal:
      return "server_error";
    default:
      return "upstream_error";
  }
}

std::string_view error_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::none: return "none";
    case ErrorKind::bad_request: return "bad_request";
    case ErrorKind::unauthorized: return "invalid_api_key";
    case ErrorKind::forbidden: return "forbidden";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::method_not_allowed: return "method_not_allowed";
    case ErrorKind::payload_too_large: return "payload_too_large";
    case ErrorKind::header_too_large: return "header_too_large";
    case ErrorKind::draining: return "draining";
    case ErrorKind::overloaded: return "overloaded";
    case ErrorKind::internal: return "internal_error";
    case ErrorKind::connect_error: return "connect_error";
    case ErrorKind::tls_error: return "tls_error";
    case ErrorKind::timeout: return "timeout";
    case ErrorKind::bad_response: return "bad_response";
    case ErrorKind::response_too_large: return "response_too_large";
  }
  return "unknown";
}

std::string_view error_code(ErrorKind kind) { return error_name(kind); }

std::string openai_error_body(ErrorKind kind, std::string_view message) {
  nlohmann::json j = {{"error",
                       {{"message", message},
                        {"type", error_type(kind)},
                        {"param", nullptr},
                        {"code", error_code(kind)}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace canaryd
