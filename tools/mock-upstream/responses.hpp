// The bodies mock-upstream answers with: OpenAI-shaped JSON for chat
// completions, completions, embeddings, the Responses API, the model list,
// SSE stream events and errors. No I/O here. The fixed parts are rendered once
// at start-up; a request only splices in its id, model and timestamps, so the
// mock never becomes the bottleneck of a benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "options.hpp"

namespace mock {

enum class Endpoint { chat, completions, embeddings, responses, models };

// What one streamed answer needs; events are rendered one at a time, at the
// moment they are written, so each carries its own "mock_ts_us".
struct StreamPlan {
  Endpoint endpoint = Endpoint::chat;
  std::string model_json;  // the request's model, already a JSON string literal
  std::string id;
  std::int64_t created = 0;
  std::string tool_name;  // non-empty: the answer is a tool call
  int chunks = 5;
  bool include_usage = false;
  bool malformed = false;
};

class Responses {
 public:
  explicit Responses(const Options& opts);

  // {"error":{"message","type","param":null,"code"}} with a message, type and
  // code that fit `status` (401 invalid_api_key, 429 rate_limit_exceeded, ...).
  std::string error_for_status(int status) const;
  std::string error(std::string_view message, std::string_view type, std::string_view code) const;
  // The --error-rate failure body.
  const std::string& mock_failure() const { return mock_failure_; }
  const std::string& malformed() const { return malformed_; }

  std::string chat(std::string_view model_json, std::string_view id, std::int64_t created) const;
  std::string chat_tool_call(std::string_view model_json, std::string_view id, std::int64_t created,
                             std::string_view tool_name) const;
  std::string completion(std::string_view model_json, std::string_view id, std::int64_t created) const;
  std::string embeddings(std::string_view model_json, int inputs, bool base64) const;
  std::string response(std::string_view model_json, std::string_view id, std::int64_t created) const;
  const std::string& models() const { return models_; }

  // Number of SSE events of a stream, the terminator included.
  static int stream_event_count(const StreamPlan& plan);
  // Event `i` (0-based) of the stream, framed ("data: ...\n\n"), stamped with now_us.
  std::string stream_event(const StreamPlan& plan, int i, std::int64_t now_us) const;

 private:
  std::string usage_chat() const;
  std::string responses_object(const StreamPlan& plan, bool completed) const;

  int prompt_tokens_;
  int completion_tokens_;
  std::string name_field_;  // `,"mock_name":"..."` or empty
  std::string chat_tail_;
  std::string completion_tail_;
  std::string usage_tail_;
  std::string embedding_floats_;
  std::string embedding_base64_;
  std::string models_;
  std::string mock_failure_;
  std::string malformed_;
};

// CLOCK_REALTIME in microseconds (benchmarks compare it with their own clock).
std::int64_t realtime_us();

}  // namespace mock
