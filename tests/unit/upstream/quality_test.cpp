// The LLM quality signals read from answers (issue 14): whole bodies and SSE
// streams of Chat Completions, Completions and the Responses API.
#include "upstream/quality.hpp"

#include <gtest/gtest.h>

#include <string>

#include "upstream/usage.hpp"

namespace canaryd::upstream {
namespace {

struct Flags {
  QualityFlags f;
  bool eligible(QualitySignal s) const { return f.is_eligible(s); }
  bool flagged(QualitySignal s) const { return f.is_flagged(s); }
};

Flags body(AnswerApi api, std::string_view json, bool json_expected = false) {
  QualityScanner q(api, json_expected);
  q.body(json);
  return {q.flags()};
}

// The stream through SseScanner, fed in chunks of `step` bytes.
Flags stream(AnswerApi api, const std::string& sse, bool json_expected = false, std::size_t step = 7) {
  QualityScanner q(api, json_expected);
  SseScanner s;
  s.quality = &q;
  for (std::size_t i = 0; i < sse.size(); i += step) s.feed(std::string_view(sse).substr(i, step));
  return {q.flags()};
}

std::string chunk(const std::string& choice_json) {
  return "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[" + choice_json + "]}\n\n";
}

using S = QualitySignal;

TEST(Quality, ChatBodyNormalAnswer) {
  const auto f = body(AnswerApi::chat, R"({"id":"x","choices":[{"index":0,"message":{"role":"assistant",
      "content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}})");
  EXPECT_TRUE(f.eligible(S::truncated));
  EXPECT_FALSE(f.flagged(S::truncated));
  EXPECT_TRUE(f.eligible(S::content_filter));
  EXPECT_FALSE(f.flagged(S::content_filter));
  EXPECT_TRUE(f.eligible(S::empty));
  EXPECT_FALSE(f.flagged(S::empty));
  EXPECT_FALSE(f.eligible(S::tool_call_json));
  EXPECT_FALSE(f.eligible(S::response_json));
}

TEST(Quality, ChatBodyFinishReasons) {
  EXPECT_TRUE(body(AnswerApi::chat, R"({"choices":[{"message":{"content":"cut"},"finish_reason":"length"}]})")
                  .flagged(S::truncated));
  const auto cf =
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]})");
  EXPECT_TRUE(cf.flagged(S::content_filter));
  EXPECT_TRUE(cf.flagged(S::empty));
  // No finish reason yet (or null): nothing is reported.
  EXPECT_EQ(body(AnswerApi::chat, R"({"choices":[{"message":{"content":"x"},"finish_reason":null}]})").f.eligible, 0);
  EXPECT_EQ(body(AnswerApi::chat, "not json").f.eligible, 0);
}

TEST(Quality, EmptyAnswers) {
  EXPECT_TRUE(
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":""},"finish_reason":"stop"}]})").flagged(S::empty));
  EXPECT_TRUE(body(AnswerApi::chat, R"({"choices":[{"message":{"content":" \n\t"},"finish_reason":"stop"}]})")
                  .flagged(S::empty));
  // A refusal is an answer; so is a tool call without text.
  EXPECT_FALSE(
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"stop"}]})")
          .flagged(S::empty));
  EXPECT_FALSE(body(AnswerApi::chat, R"({"choices":[{"message":{"content":null,"tool_calls":[{"id":"a",
      "type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]})")
                   .flagged(S::empty));
  // Escapes: whitespace ones (\n \r \t, \u0020) are no text; any other escape is.
  for (const char* content : {R"( \r\n )", R"(\u0020\u0009)"}) {
    EXPECT_TRUE(body(AnswerApi::chat, std::string(R"({"choices":[{"message":{"content":")") + content +
                                          R"("},"finish_reason":"stop"}]})")
                    .flagged(S::empty))
        << content;
  }
  for (const char* content : {R"(\u0041)", R"( \\ )", R"(\")", R"(\n\/)", R"(\tx)"}) {
    EXPECT_FALSE(body(AnswerApi::chat, std::string(R"({"choices":[{"message":{"content":")") + content +
                                           R"("},"finish_reason":"stop"}]})")
                     .flagged(S::empty))
        << content;
  }
  EXPECT_TRUE(body(AnswerApi::completions, R"({"choices":[{"text":"","finish_reason":"stop"}]})").flagged(S::empty));
  EXPECT_FALSE(
      body(AnswerApi::completions, R"({"choices":[{"text":" ok","finish_reason":"stop"}]})").flagged(S::empty));
}

TEST(Quality, ToolCallArguments) {
  const auto good = body(AnswerApi::chat, R"({"choices":[{"message":{"content":null,"tool_calls":[
      {"id":"a","type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\"}"}},
      {"id":"b","type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"tool_calls"}]})");
  EXPECT_TRUE(good.eligible(S::tool_call_json));
  EXPECT_FALSE(good.flagged(S::tool_call_json));  // "" is a call without arguments
  const auto bad = body(AnswerApi::chat, R"({"choices":[{"message":{"content":null,"tool_calls":[
      {"id":"a","type":"function","function":{"name":"f","arguments":"{\"city\":\"Par"}}]},"finish_reason":"tool_calls"}]})");
  EXPECT_TRUE(bad.flagged(S::tool_call_json));
  const auto legacy = body(AnswerApi::chat, R"({"choices":[{"message":{"content":null,
      "function_call":{"name":"f","arguments":"city=Paris"}},"finish_reason":"function_call"}]})");
  EXPECT_TRUE(legacy.flagged(S::tool_call_json));
}

TEST(Quality, JsonModeAnswers) {
  EXPECT_FALSE(
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":"{\"a\":1}"},"finish_reason":"stop"}]})", true)
          .flagged(S::response_json));
  const auto prose =
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":"Sure! {\"a\":1}"},"finish_reason":"stop"}]})", true);
  EXPECT_TRUE(prose.eligible(S::response_json));
  EXPECT_TRUE(prose.flagged(S::response_json));
  // A truncated JSON answer is the truncated check's, not counted twice.
  EXPECT_FALSE(
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":"{\"a\":"},"finish_reason":"length"}]})", true)
          .eligible(S::response_json));
  // Not asked for JSON: not judged.
  EXPECT_FALSE(body(AnswerApi::chat, R"({"choices":[{"message":{"content":"prose"},"finish_reason":"stop"}]})")
                   .eligible(S::response_json));
}

TEST(Quality, ExpectsJson) {
  EXPECT_TRUE(expects_json(AnswerApi::chat, R"({"model":"m","response_format":{"type":"json_object"}})"));
  EXPECT_TRUE(
      expects_json(AnswerApi::chat, R"({"response_format":{"type":"json_schema","json_schema":{"name":"x"}}})"));
  EXPECT_FALSE(expects_json(AnswerApi::chat, R"({"response_format":{"type":"text"}})"));
  EXPECT_FALSE(expects_json(AnswerApi::chat, R"({"model":"m"})"));
  EXPECT_TRUE(expects_json(AnswerApi::responses, R"({"text":{"format":{"type":"json_schema","name":"x"}}})"));
  EXPECT_FALSE(expects_json(AnswerApi::responses, R"({"response_format":{"type":"json_object"}})"));
  EXPECT_FALSE(expects_json(AnswerApi::none, R"({"response_format":{"type":"json_object"}})"));
  EXPECT_FALSE(expects_json(AnswerApi::chat, "[1]"));
}

TEST(Quality, IsJsonObject) {
  EXPECT_TRUE(is_json_object(" {\"a\": [1, {\"b\": null}]} \n"));
  EXPECT_FALSE(is_json_object("[1]"));
  EXPECT_FALSE(is_json_object("{\"a\":1} trailing"));
  EXPECT_FALSE(is_json_object(""));
}

TEST(Quality, ChatStreamWithToolCallFragments) {
  std::string sse = chunk(R"({"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"a",
      "type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null})");
  sse += chunk(
      R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null})");
  sse += chunk(
      R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]},"finish_reason":null})");
  sse += chunk(R"({"index":0,"delta":{},"finish_reason":"tool_calls"})");
  sse += "data: [DONE]\n\n";
  for (std::size_t step : {1u, 5u, 64u, 100000u}) {
    const auto f = stream(AnswerApi::chat, sse, false, step);
    EXPECT_TRUE(f.eligible(S::tool_call_json)) << step;
    EXPECT_FALSE(f.flagged(S::tool_call_json)) << step;
    EXPECT_FALSE(f.flagged(S::empty)) << step;
  }
  std::string broken = chunk(
      R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null})");
  broken += chunk(R"({"index":0,"delta":{},"finish_reason":"tool_calls"})");
  EXPECT_TRUE(stream(AnswerApi::chat, broken).flagged(S::tool_call_json));
}

TEST(Quality, ChatStreamTextAndJsonMode) {
  std::string sse = chunk(R"({"index":0,"delta":{"content":"{\"an"},"finish_reason":null})");
  sse += chunk(R"({"index":0,"delta":{"content":"swer\": 42}"},"finish_reason":null})");
  sse += chunk(R"({"index":0,"delta":{},"finish_reason":"stop"})");
  const auto ok = stream(AnswerApi::chat, sse, true);
  EXPECT_TRUE(ok.eligible(S::response_json));
  EXPECT_FALSE(ok.flagged(S::response_json));
  EXPECT_FALSE(ok.flagged(S::empty));
  std::string cut = chunk(R"({"index":0,"delta":{"content":"partial"},"finish_reason":null})");
  EXPECT_EQ(stream(AnswerApi::chat, cut, true).f.eligible, 0) << "no finish: nothing";
  std::string empty = chunk(R"({"index":0,"delta":{"role":"assistant"},"finish_reason":null})") +
                      chunk(R"({"index":0,"delta":{},"finish_reason":"stop"})");
  EXPECT_TRUE(stream(AnswerApi::chat, empty).flagged(S::empty));
  std::string length = chunk(R"({"index":0,"delta":{"content":"a"},"finish_reason":"length"})");
  EXPECT_TRUE(stream(AnswerApi::chat, length).flagged(S::truncated));
}

// After the first text, most events are skipped unparsed (nothing_to_learn):
// every signal that can still come after text must still be seen.
TEST(Quality, ChatStreamSignalsAfterTextAreStillSeen) {
  std::string text;
  for (int i = 0; i < 5; ++i) text += chunk(R"({"index":0,"delta":{"content":"word "},"finish_reason":null})");
  // finish_reason with whitespace around the colon, on its own event.
  const std::string length =
      text + "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\" : \t\"length\"}]}\n\n";
  EXPECT_TRUE(stream(AnswerApi::chat, length).flagged(S::truncated));
  const std::string filtered = text + chunk(R"({"index":0,"delta":{},"finish_reason":"content_filter"})");
  EXPECT_TRUE(stream(AnswerApi::chat, filtered).flagged(S::content_filter));
  const std::string bad_call =
      text +
      chunk(
          R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null})") +
      chunk(R"({"index":0,"delta":{},"finish_reason":"tool_calls"})");
  EXPECT_TRUE(stream(AnswerApi::chat, bad_call).flagged(S::tool_call_json));
  const std::string stop = text + chunk(R"({"index":0,"delta":{},"finish_reason":"stop"})");
  const auto ok = stream(AnswerApi::chat, stop);
  EXPECT_TRUE(ok.eligible(S::truncated));
  EXPECT_FALSE(ok.flagged(S::truncated));
  EXPECT_FALSE(ok.flagged(S::empty));
  // Text that merely mentions a key is no signal (it only costs a full parse).
  const std::string mention = text +
                              chunk(R"({"index":0,"delta":{"content":"\"tool_calls\": no"},"finish_reason":null})") +
                              chunk(R"({"index":0,"delta":{},"finish_reason":"stop"})");
  const auto m = stream(AnswerApi::chat, mention);
  EXPECT_FALSE(m.eligible(S::tool_call_json));
  EXPECT_FALSE(m.flagged(S::truncated));
}

TEST(Quality, ResponsesApi) {
  const std::string done = R"({"id":"r","status":"completed","output":[{"type":"message","content":[
      {"type":"output_text","text":"{\"ok\":true}"}]},{"type":"function_call","name":"f","arguments":"{\"x\":1}"}]})";
  const auto f = body(AnswerApi::responses, done, true);
  EXPECT_TRUE(f.eligible(S::truncated));
  EXPECT_FALSE(f.flagged(S::truncated));
  EXPECT_FALSE(f.flagged(S::empty));
  EXPECT_TRUE(f.eligible(S::tool_call_json));
  EXPECT_FALSE(f.flagged(S::tool_call_json));
  EXPECT_FALSE(f.flagged(S::response_json));
  const auto cut = body(AnswerApi::responses,
                        R"({"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]})");
  EXPECT_TRUE(cut.flagged(S::truncated));
  EXPECT_TRUE(cut.flagged(S::empty));
  EXPECT_TRUE(body(AnswerApi::responses,
                   R"({"status":"incomplete","incomplete_details":{"reason":"content_filter"},"output":[]})")
                  .flagged(S::content_filter));
  EXPECT_EQ(body(AnswerApi::responses, R"({"status":"in_progress","output":[]})").f.eligible, 0);
  // Streamed: the final event carries the whole response (on one data line).
  std::string line = done;
  std::erase(line, '\n');
  const std::string sse =
      "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"{\"}\n\n"
      "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":" +
      line + "}\n\n";
  const auto s = stream(AnswerApi::responses, sse, true, 3);
  EXPECT_TRUE(s.eligible(S::tool_call_json));
  EXPECT_FALSE(s.flagged(S::response_json));
}

TEST(Quality, EmbeddingsHaveNoSignal) {
  EXPECT_EQ(body(AnswerApi::none, R"({"data":[{"embedding":[0.1]}]})").f.eligible, 0);
  EXPECT_EQ(answer_api("/v1/embeddings"), AnswerApi::none);
  EXPECT_EQ(answer_api("/v1/chat/completions"), AnswerApi::chat);
  EXPECT_EQ(answer_api("/v1/completions"), AnswerApi::completions);
  EXPECT_EQ(answer_api("/v1/responses"), AnswerApi::responses);
}

TEST(Quality, BoundedTextAndArguments) {
  const std::string big(QualityScanner::kMaxText + 10, 'a');
  const auto f =
      body(AnswerApi::chat, R"({"choices":[{"message":{"content":")" + big + R"("},"finish_reason":"stop"}]})", true);
  EXPECT_FALSE(f.eligible(S::response_json)) << "too long to check: not counted";
  EXPECT_FALSE(f.flagged(S::empty));
}

}  // namespace
}  // namespace canaryd::upstream
