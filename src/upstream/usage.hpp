// Token usage read from upstream responses, streamed or not, for the token and
// cost metrics and the access log. Also the SSE framing used to find it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace canaryd::upstream {

class QualityScanner;

struct Usage {
  std::uint64_t prompt = 0;
  std::uint64_t completion = 0;
};

// Reads `usage` from a response object: Chat/Completions/Embeddings
// (prompt_tokens, completion_tokens) and the Responses API (input_tokens,
// output_tokens, also nested under "response" in its stream events).
std::optional<Usage> parse_usage(std::string_view json_object);
// The "usage" object itself ({"prompt_tokens":..,"completion_tokens":..} or the
// Responses API's input/output_tokens): for a reader that found it already.
std::optional<Usage> parse_usage_object(std::string_view usage);

// Splits a text/event-stream byte stream into events, whatever the chunk
// boundaries, and keeps the last `usage` seen in a data event. Bounded: a line
// longer than kMaxLine, or an event whose data grows past it, stops the
// scanning (the relay itself is unaffected).
class SseScanner {
 public:
  static constexpr std::size_t kMaxLine = 1 << 20;

  void feed(std::string_view bytes);
  const std::optional<Usage>& usage() const { return usage_; }
  std::size_t events() const { return events_; }
  bool done() const { return done_; }  // saw "data: [DONE]"
  // Called with each complete event's data (not "[DONE]"), when set. Only
  // shadowed requests set it (to summarize the answer for the comparison).
  std::function<void(std::string_view)> on_data;
  // Fed each complete event's data, when set (the LLM quality signals of a
  // judged stream, quality.hpp). Not owned.
  QualityScanner* quality = nullptr;

 private:
  void line(std::string_view text);
  void dispatch();
  void stop();

  std::string partial_;    // an incomplete line
  std::string data_;       // data lines of the current event, joined by '\n'
  bool after_cr_ = false;  // the last byte fed was '\r' (a following '\n' belongs to it)
  bool overflow_ = false;
  bool done_ = false;
  std::size_t events_ = 0;
  std::optional<Usage> usage_;
};

}  // namespace canaryd::upstream
