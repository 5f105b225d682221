// The LLM quality signals of one answer (canaryd::QualityFlags, issue 14), read
// from what the proxy relays anyway: a whole non-streaming JSON body, or the
// data of each SSE event (SseScanner feeds it). Chat Completions, Completions
// and the Responses API; anything else (embeddings) has no signal. Pure,
// bounded in memory, never throws.
//
// Until the answer's end is seen (a finish_reason, or the Responses API's
// completed / incomplete status) it reports nothing: an answer cut off by a
// dropped connection is an error, judged as such, not a quality sample.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "canaryd/quality.hpp"
#include "upstream/usage.hpp"

namespace canaryd::upstream {

enum class AnswerApi : std::uint8_t { none, chat, completions, responses };

// "/v1/chat/completions" -> chat, "/v1/completions" -> completions,
// "/v1/responses" -> responses, anything else -> none.
AnswerApi answer_api(std::string_view path);

// Whether the request asks for a JSON answer: `response_format.type`
// json_object / json_schema (chat, completions), `text.format.type` the same
// (Responses API). False for a body that is not a JSON object.
bool expects_json(AnswerApi api, std::string_view request_body);
// The same from the two members' values (as found by a scan of the body that
// the caller makes anyway; empty when absent).
bool expects_json(AnswerApi api, std::string_view response_format, std::string_view text);

// Whether `text` is one JSON object (whitespace around allowed): what a tool
// call's arguments and a JSON-mode answer must be. Empty or whitespace-only
// tool-call arguments count as "{}" (a call without arguments).
bool is_json_object(std::string_view text);

class QualityScanner {
 public:
  static constexpr std::size_t kMaxText = 1 << 20;         // answer text kept for the JSON check
  static constexpr std::size_t kMaxToolCalls = 32;         // tool calls whose arguments are checked
  static constexpr std::size_t kMaxArguments = 256 << 10;  // per tool call
  static constexpr std::size_t kMaxChoices = 4;            // choices whose tool calls are checked
  static constexpr std::size_t kSlotsPerChoice = 8;        // kMaxChoices x kSlotsPerChoice = kMaxToolCalls

  explicit QualityScanner(AnswerApi api = AnswerApi::none, bool json_expected = false);

  // A whole non-streaming answer.
  void body(std::string_view json);
  // One SSE event's data ("[DONE]" and anything unreadable are ignored).
  void event(std::string_view data);

  // What the answer showed so far (nothing before its end).
  QualityFlags flags() const;
  // The answer's `usage`, read in the same scan (a whole body, or the
  // Responses API's final event); nullopt when it had none.
  const std::optional<Usage>& usage() const { return usage_; }
  bool finished() const { return finished_; }

 private:
  bool nothing_to_learn(std::string_view data) const;
  void choice(std::string_view choice, bool streamed);
  void message(std::string_view message, std::size_t index, bool streamed);
  void tool_calls(std::string_view array, std::size_t choice, bool streamed);
  void responses_object(std::string_view response);
  void finish(std::string_view reason);
  void add_text(std::string_view literal, std::size_t choice);
  void add_arguments(std::size_t slot, std::string_view literal);

  AnswerApi api_;
  bool json_expected_;
  std::optional<Usage> usage_;
  bool finished_ = false;
  bool truncated_ = false;
  bool filtered_ = false;
  bool other_finish_ = false;  // stop, tool_calls, ...: a normal end
  bool has_text_ = false;      // some non-whitespace text
  bool refusal_ = false;
  bool text_overflow_ = false;
  std::string text_;  // choice 0's text, only when json_expected
  struct ToolCall {
    bool used = false;
    bool overflow = false;
    std::string arguments;
  };
  std::array<ToolCall, kMaxToolCalls> calls_{};
  std::size_t tool_call_count_ = 0;  // seen, including those beyond kMaxToolCalls
};

}  // namespace canaryd::upstream
