#include "common/access_log.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>

#include "common/json_scan.hpp"

namespace canaryd::log {
namespace {

// Printable ASCII other than '"' and '\\' needs no escaping: ids, paths,
// model and provider names are that almost always.
bool plain_ascii(std::string_view v) {
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') return false;
  }
  return true;
}

// "2026-12-03T15:20:01.123Z" (UTC, milliseconds): the seconds part is
// formatted once per second per thread, the rest is three digits.
void append_time(std::string& out, std::chrono::system_clock::time_point t) {
  thread_local std::int64_t cached = std::numeric_limits<std::int64_t>::min();
  thread_local char prefix[32];
  thread_local std::size_t prefix_len = 0;
  const std::int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  if (sec != cached) {
    const std::time_t tt = static_cast<std::time_t>(sec);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    prefix_len = std::strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
    cached = sec;
  }
  const auto frac = static_cast<int>(ms - sec * 1000);
  out.append(prefix, prefix_len);
  const char digits[5] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                          static_cast<char>('0' + frac % 10), 'Z'};
  out.append(digits, 5);
}

void field(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":";
  if (plain_ascii(value)) {
    out += '"';
    out += value;
    out += '"';
  } else {
    out += json::encode_string(value);
  }
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
  // What printf's %.*f prints (exact, correctly rounded), without its locale
  // and format-string machinery.
  char buf[400];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed, decimals);
  if (ec != std::errc()) {
    out += "null";
    return;
  }
  out.append(buf, end);
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
  append_access(out, r);
  return out;
}

void append_access(std::string& out, const AccessRecord& r) {
  out += "{\"type\":\"access\",\"time\":\"";
  append_time(out, r.time == std::chrono::system_clock::time_point{} ? std::chrono::system_clock::now() : r.time);
  out += '"';
  field(out, "request_id", r.request_id);
  field(out, "method", r.method);
  field(out, "path", r.path);
  if (!r.arm.empty()) field(out, "arm", r.arm);
  if (!r.experiment.empty()) field(out, "experiment", r.experiment);
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
}

// The queue of batches and the thread that writes them. Bounded in bytes, not
// entries (a batch is up to ~16 KiB): a stdout that stops reading costs at
// most kQueueBytes, then the oldest batches go, their lines counted.
struct AccessLog::Writer {
  explicit Writer(std::FILE* out) : out(out), thread([this] { run(); }) {}
  ~Writer() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    thread.join();
  }

  void push(std::string lines, std::size_t count) {
    {
      std::lock_guard lock(mu);
      bytes += lines.size();
      queue.push_back({std::move(lines), count});
      while (bytes > kQueueBytes && queue.size() > 1) {
        bytes -= queue.front().text.size();
        g_dropped.fetch_add(queue.front().lines, std::memory_order_relaxed);
        queue.pop_front();
      }
    }
    cv.notify_one();
  }

  void drain() {
    std::unique_lock lock(mu);
    const std::uint64_t target = pushed_marker();
    done_cv.wait(lock, [&] { return written >= target || stopping; });
  }

  std::uint64_t pushed_marker() const { return taken + queue.size(); }

  void run() {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping, and everything is written
      Batch b = std::move(queue.front());
      queue.pop_front();
      bytes -= b.text.size();
      ++taken;
      lock.unlock();
      b.text += '\n';
      std::fwrite(b.text.data(), 1, b.text.size(), out);
      std::fflush(out);
      lock.lock();
      ++written;
      done_cv.notify_all();
    }
  }

  struct Batch {
    std::string text;
    std::size_t lines;
  };
  std::FILE* out;
  std::mutex mu;
  std::condition_variable cv;
  std::condition_variable done_cv;
  std::deque<Batch> queue;
  std::size_t bytes = 0;
  std::uint64_t taken = 0;    // batches taken off the queue
  std::uint64_t written = 0;  // batches written
  bool stopping = false;
  std::thread thread;  // last: starts once the rest is built

  static std::atomic<std::uint64_t> g_dropped;
};

std::atomic<std::uint64_t> AccessLog::Writer::g_dropped{0};

AccessLog::AccessLog(std::shared_ptr<spdlog::logger> logger, std::FILE* out)
    : logger_(std::move(logger)), writer_(std::make_unique<Writer>(out)) {}

AccessLog::~AccessLog() = default;

void AccessLog::write(const AccessRecord& r) {
  if (!enabled()) return;
  logger_->info(format_access(r));
}

bool AccessLog::enabled() const { return logger_ && logger_->should_log(spdlog::level::info); }

void AccessLog::write_batch(std::string lines, std::size_t line_count) {
  if (!lines.empty() && enabled()) writer_->push(std::move(lines), line_count);
}

std::uint64_t AccessLog::dropped_lines() { return Writer::g_dropped.load(std::memory_order_relaxed); }

void AccessLog::drain() { writer_->drain(); }

AccessBatch::AccessBatch(AccessLog& log) : log_(log) { buf_.reserve(kBatchBytes + 1024); }

AccessBatch::~AccessBatch() { flush(); }

bool AccessBatch::write(const AccessRecord& r) {
  if (!log_.enabled()) return false;
  const bool was_empty = buf_.empty();
  if (!was_empty) buf_ += '\n';
  append_access(buf_, r);
  ++lines_;
  if (buf_.size() >= kBatchBytes) flush();
  return was_empty && !buf_.empty();
}

void AccessBatch::flush() {
  if (buf_.empty()) return;
  std::string next;
  next.reserve(kBatchBytes + 1024);
  std::swap(next, buf_);  // the full one goes to the writer; this thread keeps a fresh one
  log_.write_batch(std::move(next), lines_);
  lines_ = 0;
}

void AccessLog::write_line(std::string_view json_object) {
  if (!logger_ || !logger_->should_log(spdlog::level::info)) return;
  logger_->info("{}", json_object);
}

}  // namespace canaryd::log
