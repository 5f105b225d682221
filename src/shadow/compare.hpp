// Shadow comparison: what an OpenAI-shaped answer says (status, finish reason,
// tool calls, length, tokens, whether its JSON parses), read from a whole body
// or from a stream's events, and how two such answers differ. Pure functions:
// the shadow component feeds them and turns the result into metrics, a log
// line and the report.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "upstream/usage.hpp"

namespace canaryd::shadow {

struct AnswerSummary {
  int status = 0;              // HTTP status (0: no response at all)
  bool failed = false;         // transport failure, timeout, or a non-2xx status
  std::string error;           // why, when failed
  double latency_seconds = 0;  // send → last byte
  std::optional<double> ttfb_seconds;
  std::optional<upstream::Usage> usage;
  bool json_valid = true;               // the body (or every stream event) parsed as JSON
  std::string finish_reason;            // of the first choice ("" when absent)
  std::vector<std::string> tool_names;  // the tool calls' function names, in order
  bool tool_arguments_valid = true;     // every tool call's arguments parse as JSON
  std::size_t content_chars = 0;        // UTF-8 bytes of the generated text
};

// A non-streaming answer's body: Chat Completions (choices[0].message), legacy
// Completions (choices[0].text), the Responses API (output[]); embeddings
// count only for status, latency and tokens.
void summarize_body(std::string_view body, AnswerSummary& out);

// A streamed answer, fed with each SSE event's data ("[DONE]" excluded):
// content deltas are added up, tool call arguments are joined per index and
// parsed at the end, the last finish_reason wins.
class StreamSummarizer {
 public:
  StreamSummarizer();
  ~StreamSummarizer();
  StreamSummarizer(StreamSummarizer&&) noexcept;
  StreamSummarizer& operator=(StreamSummarizer&&) noexcept;

  void event(std::string_view data);
  // Moves what was read into `out` (usage is left to the SSE scanner's).
  void finish(AnswerSummary& out);

 private:
  struct ToolCall {
    std::string name;
    std::string arguments;
  };
  bool json_valid_ = true;
  std::string finish_reason_;
  std::vector<ToolCall> tools_;  // by index
  std::size_t content_chars_ = 0;
  bool completed_seen_ = false;  // Responses API: response.completed carried the whole answer
  std::optional<AnswerSummary> completed_;
};

// both_succeeded: both 2xx. shadow_failed: control 2xx, the canary gave no
// answer, a 5xx or a 429 (an outage). status_differs: any other difference,
// e.g. the canary rejects with a 400 what control accepts (a compatibility
// problem). both_failed: neither succeeded, with the same status or no answer.
// Named, in this order, by metrics::Metrics::kShadowResults (the metric's label values).
enum class ShadowResult { both_succeeded, status_differs, shadow_failed, both_failed };

struct Comparison {
  ShadowResult result = ShadowResult::both_succeeded;
  double latency_delta_seconds = 0;          // shadow − control
  std::optional<double> ttfb_delta_seconds;  // when both had a first byte
  std::int64_t prompt_tokens_delta = 0;
  std::int64_t completion_tokens_delta = 0;
  double control_cost_usd = 0;
  double shadow_cost_usd = 0;
  bool status_equal = false;
  std::optional<bool> finish_reason_equal;  // only when both succeeded
  std::optional<bool> tool_names_equal;     // likewise
  std::optional<double> length_ratio;       // shadow / control content; when both succeeded and control > 0
  bool shadow_json_valid = false;
  bool shadow_tool_arguments_valid = false;
};

// Costs come from the caller (pricing by each side's model).
Comparison compare(const AnswerSummary& control, const AnswerSummary& shadow, double control_cost_usd,
                   double shadow_cost_usd);

// The comparison as the JSON fields of a log line (no prompt or answer text).
void comparison_json(const Comparison& c, const AnswerSummary& control, const AnswerSummary& shadow,
                     nlohmann::json& out);

}  // namespace canaryd::shadow
