// One JSON line per request (SPEC §6): request id, arm, provider, model,
// status, latency, first-byte time, tokens, fallback. Never a key or a prompt.
// Written through spdlog's async logger so an I/O thread never waits on stdout:
// when stdout does not keep up and the queue (8,192 lines) is full, the oldest
// queued line is dropped and counted in ai_proxy_log_dropped_total (log.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace canaryd::log {

struct AccessRecord {
  std::string_view request_id;
  std::string_view method;
  std::string_view path;
  std::string_view arm;        // "" for canaryd's own endpoints
  std::string_view provider;
  std::string_view model;
  int status = 0;
  double latency_ms = 0;
  double ttfb_ms = -1;         // < 0: none
  double overhead_ms = -1;
  std::uint64_t prompt_tokens = 0;
  std::uint64_t completion_tokens = 0;
  double cost_usd = -1;        // < 0: no usage reported
  std::string_view fallback;   // reason, "" when none
  std::string_view error;      // canaryd's error code, "" when none
  std::string_view sticky_source;
  bool stream = false;
  bool pinned = false;
};

class AccessLog {
 public:
  explicit AccessLog(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}
  void write(const AccessRecord& r);
  // Another kind of record on the same stream (a shadow comparison): one JSON object, no newline.
  void write_line(std::string_view json_object);

 private:
  std::shared_ptr<spdlog::logger> logger_;
};

// Formats the record as one JSON object (no newline); exposed for tests.
std::string format_access(const AccessRecord& r);

}  // namespace canaryd::log
