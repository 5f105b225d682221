// One JSON line per request (SPEC §6): request id, arm, provider, model,
// status, latency, first-byte time, tokens, fallback. Never a key or a prompt.
// Written in per-thread batches (AccessBatch) to a writer thread of its own so
// an I/O thread never waits on stdout: past kQueueBytes queued, the oldest
// batches are dropped and their lines counted in ai_proxy_log_dropped_total.
// Other records on the same stream (write_line, write) go through spdlog's
// async logger and its bounded queue (log.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace canaryd::log {

struct AccessRecord {
  std::chrono::system_clock::time_point time{};  // the request's end; empty: when the line is formatted
  std::string_view request_id;
  std::string_view method;
  std::string_view path;
  std::string_view arm;         // "" for canaryd's own endpoints
  std::string_view experiment;  // issue 17: the experiment that decided it, "none"; "" for canaryd's own endpoints
  std::string_view provider;
  std::string_view model;
  int status = 0;
  double latency_ms = 0;
  double ttfb_ms = -1;  // < 0: none
  double overhead_ms = -1;
  std::uint64_t prompt_tokens = 0;
  std::uint64_t completion_tokens = 0;
  double cost_usd = -1;       // < 0: no usage reported
  std::string_view fallback;  // reason, "" when none
  std::string_view error;     // canaryd's error code, "" when none
  std::string_view sticky_source;
  bool stream = false;
  bool pinned = false;
};

class AccessLog {
 public:
  // `out`: where batches go (stdout; tests pass a file). The logger's level
  // decides whether access lines are written at all.
  explicit AccessLog(std::shared_ptr<spdlog::logger> logger, std::FILE* out = stdout);
  ~AccessLog();  // writes what is queued, then stops its writer thread
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // One line, now, through the logger (a line outside any thread's batch).
  void write(const AccessRecord& r);
  // A batch of `lines` lines ('\n' between them) for the writer thread. Never
  // waits: past kQueueBytes queued the oldest batches are dropped, and their
  // lines counted in dropped_lines().
  void write_batch(std::string lines, std::size_t line_count);
  bool enabled() const;
  static constexpr std::size_t kQueueBytes = 2 << 20;

  // Access lines dropped so far by every AccessLog of the process (stdout did
  // not keep up); part of ai_proxy_log_dropped_total.
  static std::uint64_t dropped_lines();
  // Blocks until what was queued before the call is written (tests, shutdown).
  void drain();
  // Another kind of record on the same stream (a shadow comparison): one JSON object, no newline.
  void write_line(std::string_view json_object);

 private:
  struct Writer;
  std::shared_ptr<spdlog::logger> logger_;
  std::unique_ptr<Writer> writer_;
};

// One I/O thread's access lines, batched (the request path's way to write
// them): each line is formatted straight into a buffer of this thread's own
// (no lock, no fmt pass) and the buffer goes to the AccessLog's writer thread
// when it holds kBatchBytes, or at flush(), which the I/O thread calls within
// kFlushInterval of its first waiting line (proxy::ThreadContext). The writer
// writes each batch with one fwrite; one lock per batch, none per line.
class AccessBatch {
 public:
  static constexpr std::size_t kBatchBytes = 16 * 1024;
  static constexpr std::chrono::milliseconds kFlushInterval{50};

  explicit AccessBatch(AccessLog& log);
  ~AccessBatch();  // flushes
  AccessBatch(const AccessBatch&) = delete;
  AccessBatch& operator=(const AccessBatch&) = delete;

  // True when this line made an empty batch non-empty (time to arm the flush).
  bool write(const AccessRecord& r);
  void flush();

 private:
  AccessLog& log_;
  std::string buf_;
  std::size_t lines_ = 0;
};

// Formats the record as one JSON object (no newline); exposed for tests.
std::string format_access(const AccessRecord& r);
void append_access(std::string& out, const AccessRecord& r);

}  // namespace canaryd::log
