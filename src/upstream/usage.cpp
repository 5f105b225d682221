#include "upstream/usage.hpp"

#include <charconv>
#include <cstring>

#include "common/json_scan.hpp"
#include "upstream/quality.hpp"

namespace canaryd::upstream {
namespace {

std::uint64_t to_u64(std::string_view doc, const std::optional<json::Span>& span) {
  if (!span) return 0;
  std::string_view text = span->of(doc);
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return 0;
  return v;
}

}  // namespace

std::optional<Usage> parse_usage(std::string_view doc) {
  json::Lookup<2> top{{"usage", "response"}};
  if (!json::scan_object(doc, top).empty()) return std::nullopt;
  if (!top.values[0] && top.values[1]) {
    // Responses API stream events: {"type":"response.completed","response":{..."usage":{...}}}
    std::string_view inner = top.values[1]->of(doc);
    if (inner.empty() || inner.front() != '{') return std::nullopt;
    return parse_usage(inner);
  }
  if (!top.values[0]) return std::nullopt;
  return parse_usage_object(top.values[0]->of(doc));
}

std::optional<Usage> parse_usage_object(std::string_view u) {
  if (u.empty() || u.front() != '{') return std::nullopt;
  json::Lookup<4> f{{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"}};
  if (!json::scan_object(u, f).empty()) return std::nullopt;
  Usage usage;
  usage.prompt = to_u64(u, f.values[0]) + to_u64(u, f.values[2]);
  usage.completion = to_u64(u, f.values[1]) + to_u64(u, f.values[3]);
  return usage;
}

namespace {

// The first '\r' or '\n' at or after `from` (bytes.size() if none): two
// memchr passes instead of a branch per byte.
std::size_t next_line_end(std::string_view bytes, std::size_t from) {
  const char* p = bytes.data() + from;
  const std::size_t n = bytes.size() - from;
  const void* lf = std::memchr(p, '\n', n);
  const std::size_t limit = lf ? static_cast<std::size_t>(static_cast<const char*>(lf) - p) : n;
  const void* cr = std::memchr(p, '\r', limit);
  return from + (cr ? static_cast<std::size_t>(static_cast<const char*>(cr) - p) : limit);
}

}  // namespace

void SseScanner::feed(std::string_view bytes) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < bytes.size() && !overflow_; ++i) {
    if (const std::size_t end = next_line_end(bytes, i); end != i) {
      after_cr_ = false;  // bytes other than line ends came first
      i = end;
      if (i == bytes.size()) break;
    }
    const char c = bytes[i];
    if (c == '\n' && after_cr_ && i == start && partial_.empty()) {
      // the '\n' of a "\r\n" split across two feeds (or right after one)
      after_cr_ = false;
      start = i + 1;
      continue;
    }
    std::string_view piece = bytes.substr(start, i - start);
    if (partial_.size() + piece.size() > kMaxLine) {
      stop();
      return;
    }
    if (partial_.empty()) {
      line(piece);
    } else {
      partial_.append(piece);
      line(partial_);
      partial_.clear();
    }
    after_cr_ = (c == '\r');
    if (after_cr_ && i + 1 < bytes.size() && bytes[i + 1] == '\n') {
      ++i;
      after_cr_ = false;
    }
    start = i + 1;
  }
  if (overflow_) {
    stop();
    return;
  }
  if (start < bytes.size()) {
    // Checked before appending so one huge feed never grows partial_ past the bound.
    if (partial_.size() + (bytes.size() - start) > kMaxLine) {
      stop();
      return;
    }
    partial_.append(bytes.substr(start));
    after_cr_ = false;
  }
}

// The same answer whatever the chunking: any line (data, comment or other)
// longer than kMaxLine, or an event's data past it, ends the scanning for good.
void SseScanner::stop() {
  overflow_ = true;
  partial_.clear();
  partial_.shrink_to_fit();
  data_.clear();
  data_.shrink_to_fit();
}

void SseScanner::line(std::string_view text) {
  if (text.empty()) {
    dispatch();
    return;
  }
  if (text.substr(0, 5) != "data:") return;  // event:, id:, retry:, comments
  std::string_view value = text.substr(5);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (!data_.empty()) data_ += '\n';
  if (data_.size() + value.size() > kMaxLine) {
    overflow_ = true;  // feed() releases the buffers
    return;
  }
  data_.append(value);
}

void SseScanner::dispatch() {
  if (data_.empty()) return;
  ++events_;
  if (data_ == "[DONE]") {
    done_ = true;
    data_.clear();
    return;
  }
  if (on_data) on_data(data_);
  if (quality) quality->event(data_);
  if (data_.find("\"usage\"") != std::string::npos) {
    if (auto u = parse_usage(data_)) usage_ = u;
  }
  data_.clear();
}

}  // namespace canaryd::upstream
