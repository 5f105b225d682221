// The one error type of the request path. It carries where the failure came
// from and what kind it was; one function maps a kind to the HTTP status, the
// OpenAI error body, the metric status label and the fallback reason.
// The data plane never throws: functions return Error (or an expected-like pair).
#pragma once

#include <string>
#include <string_view>

namespace canaryd {

enum class ErrorSource { downstream, upstream, internal };

enum class ErrorKind {
  none,
  // downstream (the client)
  bad_request,          // 400 bad JSON, missing model/messages, smuggling
  unauthorized,         // 401 client key
  forbidden,            // 403 admin off
  not_found,            // 404
  method_not_allowed,   // 405
  payload_too_large,    // 413
  header_too_large,     // 431
  // canaryd itself
  draining,             // 503
  overloaded,           // 503 pool wait deadline, connection cap
  internal,             // 500
  // upstream
  connect_error,        // 502 refused, reset before a response, DNS failure
  tls_error,            // 502 handshake or verification failure
  timeout,              // 504
  bad_response,         // 502 malformed upstream response
  response_too_large,   // 502 upstream body over the cap
};

struct Error {
  ErrorKind kind = ErrorKind::none;
  std::string message;

  explicit operator bool() const { return kind != ErrorKind::none; }
};

ErrorSource error_source(ErrorKind kind);
int http_status(ErrorKind kind);
// OpenAI's `error.type` and `error.code` for a kind.
std::string_view error_type(ErrorKind kind);
std::string_view error_code(ErrorKind kind);
// The fallback reason / log name of an upstream failure ("connect_error",
// "tls_error", "timeout", ...).
std::string_view error_name(ErrorKind kind);

// {"error":{"message":..., "type":..., "param":null, "code":...}}
std::string openai_error_body(ErrorKind kind, std::string_view message);

}  // namespace canaryd
