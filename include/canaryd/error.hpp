// The one error type of the request path and its one table. An Error carries
// where the failure came from (its source), what kind it was, and whether the
// request may be sent again as is (retry_safe: nothing of it reached an
// upstream that answered). error_info(kind) is the single place that maps a
// kind to the HTTP status, OpenAI's error type and code, the log level, the
// metric status label, the fallback reason and whether it counts against the
// arm in the canary analysis. The data plane never throws: functions return
// Error (or an expected-like pair).
#pragma once

#include <string>
#include <string_view>

namespace canaryd {

enum class ErrorSource { none, downstream, upstream, internal, store };

enum class ErrorKind {
  none,
  // downstream (the client)
  bad_request,         // 400 bad JSON, missing model/messages, smuggling, a bad path
  unauthorized,        // 401 client key
  forbidden,           // 403 admin off
  not_found,           // 404
  method_not_allowed,  // 405
  payload_too_large,   // 413
  header_too_large,    // 431
  // canaryd itself
  draining,    // 503
  overloaded,  // 503 pool wait deadline, connection cap
  internal,    // 500
  // upstream
  connect_error,       // 502 refused, reset before a response, DNS failure
  tls_error,           // 502 handshake or verification failure
  timeout,             // 504
  bad_response,        // 502 malformed upstream response
  response_too_large,  // 502 upstream body over the cap
  // the assignment / rollout store (never answered to a client: canaryd decides by hash)
  store_unavailable,
};

enum class LogLevel { debug, info, warn, error };
enum class MetricStatus { success, error, timeout };  // ai_proxy_requests_total{status}

struct ErrorInfo {
  ErrorSource source;
  int http_status;
  std::string_view type;             // OpenAI error.type
  std::string_view name;             // OpenAI error.code, the access log's "error", metric/log names
  LogLevel log_level;                // for canaryd's own log line about it
  MetricStatus metric_status;        // for an upstream attempt that failed this way
  std::string_view fallback_reason;  // fallback.on value that covers it ("" = never falls back)
  bool analysis_error;               // counts against the arm in the canary analysis
};

// The table (error.cpp).
const ErrorInfo& error_info(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::none;
  std::string message;
  // The request may be sent again on a fresh connection: a pooled connection
  // failed before any byte of an answer came back (the upstream had closed it).
  bool retry_safe = false;

  explicit operator bool() const { return kind != ErrorKind::none; }
  ErrorSource source() const { return error_info(kind).source; }
};

inline ErrorSource error_source(ErrorKind kind) { return error_info(kind).source; }
inline int http_status(ErrorKind kind) { return error_info(kind).http_status; }
inline std::string_view error_type(ErrorKind kind) { return error_info(kind).type; }
inline std::string_view error_code(ErrorKind kind) { return error_info(kind).name; }
inline std::string_view error_name(ErrorKind kind) { return error_info(kind).name; }

// {"error":{"message":..., "type":..., "param":null, "code":...}}
std::string openai_error_body(ErrorKind kind, std::string_view message);

}  // namespace canaryd
