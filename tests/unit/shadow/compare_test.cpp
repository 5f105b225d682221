// The shadow comparison: what a body or a stream says, and how two answers
// are classified. Bodies are the shapes the OpenAI API sends.
#include "shadow/compare.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace canaryd::shadow {
namespace {

AnswerSummary ok(int status = 200) {
  AnswerSummary a;
  a.status = status;
  a.failed = status / 100 != 2;
  return a;
}

TEST(SummarizeBody, ChatCompletionText) {
  AnswerSummary a = ok();
  summarize_body(
      R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],
                     "usage":{"prompt_tokens":7,"completion_tokens":3}})",
      a);
  EXPECT_TRUE(a.json_valid);
  EXPECT_EQ(a.finish_reason, "stop");
  EXPECT_EQ(a.content_chars, 11u);
  EXPECT_TRUE(a.tool_names.empty());
  ASSERT_TRUE(a.usage);
  EXPECT_EQ(a.usage->prompt, 7u);
  EXPECT_EQ(a.usage->completion, 3u);
}

TEST(SummarizeBody, ToolCallsNamesAndArguments) {
  AnswerSummary a = ok();
  summarize_body(R"({"choices":[{"message":{"content":null,"tool_calls":[
      {"id":"1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Hanoi\"}"}},
      {"id":"2","type":"function","function":{"name":"lookup","arguments":"{not json"}}]},
      "finish_reason":"tool_calls"}]})",
                 a);
  EXPECT_EQ(a.finish_reason, "tool_calls");
  EXPECT_EQ(a.tool_names, (std::vector<std::string>{"get_weather", "lookup"}));
  EXPECT_FALSE(a.tool_arguments_valid);
  EXPECT_EQ(a.content_chars, 0u);
}

TEST(SummarizeBody, ResponsesApiAndLegacyCompletions) {
  AnswerSummary r = ok();
  summarize_body(R"({"object":"response","status":"completed","output":[
      {"type":"message","content":[{"type":"output_text","text":"abc"}]},
      {"type":"function_call","name":"f","arguments":"{}"}],"usage":{"input_tokens":2,"output_tokens":5}})",
                 r);
  EXPECT_EQ(r.finish_reason, "completed");
  EXPECT_EQ(r.content_chars, 3u);
  EXPECT_EQ(r.tool_names, (std::vector<std::string>{"f"}));
  ASSERT_TRUE(r.usage);
  EXPECT_EQ(r.usage->completion, 5u);

  AnswerSummary c = ok();
  summarize_body(R"({"choices":[{"text":"four","finish_reason":"length"}]})", c);
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_EQ(c.content_chars, 4u);
}

TEST(SummarizeBody, InvalidJsonIsFlagged) {
  AnswerSummary a = ok();
  summarize_body(R"({"choices":[{"message":)", a);
  EXPECT_FALSE(a.json_valid);
}

TEST(StreamSummarizer, ChatDeltasAndToolArgumentsJoinedAcrossEvents) {
  StreamSummarizer s;
  s.event(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})");
  s.event(R"({"choices":[{"delta":{"content":"Hel"}}]})");
  s.event(R"({"choices":[{"delta":{"content":"lo"}}]})");
  s.event(R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"search","arguments":"{\"q\":"}}]}}]})");
  s.event(R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]})");
  s.event(R"({"choices":[{"delta":{},"finish_reason":"tool_calls"}]})");
  s.event(R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}})");
  AnswerSummary a = ok();
  s.finish(a);
  EXPECT_TRUE(a.json_valid);
  EXPECT_EQ(a.content_chars, 5u);
  EXPECT_EQ(a.finish_reason, "tool_calls");
  EXPECT_EQ(a.tool_names, (std::vector<std::string>{"search"}));
  EXPECT_TRUE(a.tool_arguments_valid);
}

TEST(StreamSummarizer, BrokenArgumentsAndBrokenEvents) {
  StreamSummarizer s;
  s.event(R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":"}}]}}]})");
  s.event("not json at all");
  s.event(R"({"choices":[{"delta":{},"finish_reason":"tool_calls"}]})");
  AnswerSummary a = ok();
  s.finish(a);
  EXPECT_FALSE(a.json_valid);
  EXPECT_FALSE(a.tool_arguments_valid);
}

TEST(StreamSummarizer, ResponsesApiCompletedEventCarriesTheAnswer) {
  StreamSummarizer s;
  s.event(R"({"type":"response.created","response":{"status":"in_progress","output":[]}})");
  s.event(R"({"type":"response.output_text.delta","delta":"ab"})");
  s.event(R"({"type":"response.completed","response":{"status":"completed","output":[
      {"type":"message","content":[{"type":"output_text","text":"abcd"}]}]}})");
  AnswerSummary a = ok();
  s.finish(a);
  EXPECT_EQ(a.finish_reason, "completed");
  EXPECT_EQ(a.content_chars, 4u);
}

TEST(Compare, Classification) {
  EXPECT_EQ(compare(ok(), ok(), 0, 0).result, ShadowResult::both_succeeded);
  AnswerSummary none;  // no answer at all (connect error)
  none.failed = true;
  EXPECT_EQ(compare(ok(), none, 0, 0).result, ShadowResult::shadow_failed);
  EXPECT_EQ(compare(ok(), ok(503), 0, 0).result, ShadowResult::shadow_failed);
  EXPECT_EQ(compare(ok(), ok(429), 0, 0).result, ShadowResult::shadow_failed);
  EXPECT_EQ(compare(ok(), ok(400), 0, 0).result, ShadowResult::status_differs);
  EXPECT_EQ(compare(ok(502), ok(), 0, 0).result, ShadowResult::status_differs);
  EXPECT_EQ(compare(ok(400), ok(400), 0, 0).result, ShadowResult::both_failed);
  EXPECT_EQ(compare(ok(502), none, 0, 0).result, ShadowResult::both_failed);
}

TEST(Compare, DeltasAndMatches) {
  AnswerSummary c = ok();
  c.latency_seconds = 1.0;
  c.ttfb_seconds = 0.5;
  c.usage = upstream::Usage{10, 20};
  c.finish_reason = "stop";
  c.content_chars = 100;
  AnswerSummary s = ok();
  s.latency_seconds = 0.25;
  s.ttfb_seconds = 0.125;
  s.usage = upstream::Usage{10, 30};
  s.finish_reason = "length";
  s.content_chars = 50;
  Comparison r = compare(c, s, 0.002, 0.0005);
  EXPECT_DOUBLE_EQ(r.latency_delta_seconds, -0.75);
  ASSERT_TRUE(r.ttfb_delta_seconds);
  EXPECT_DOUBLE_EQ(*r.ttfb_delta_seconds, -0.375);
  EXPECT_EQ(r.prompt_tokens_delta, 0);
  EXPECT_EQ(r.completion_tokens_delta, 10);
  ASSERT_TRUE(r.finish_reason_equal);
  EXPECT_FALSE(*r.finish_reason_equal);
  ASSERT_TRUE(r.tool_names_equal);
  EXPECT_TRUE(*r.tool_names_equal);
  ASSERT_TRUE(r.length_ratio);
  EXPECT_DOUBLE_EQ(*r.length_ratio, 0.5);
  EXPECT_TRUE(r.status_equal);

  nlohmann::json j;
  comparison_json(r, c, s, j);
  EXPECT_EQ(j["result"], "both_succeeded");
  EXPECT_DOUBLE_EQ(j["cost_delta_usd"].get<double>(), 0.0005 - 0.002);
  EXPECT_DOUBLE_EQ(j["latency_delta_ms"].get<double>(), -750.0);
  EXPECT_FALSE(j.contains("shadow_error"));
}

TEST(Compare, NoContentMatchesWhenOneSideFailed) {
  AnswerSummary s = ok(500);
  Comparison r = compare(ok(), s, 0, 0);
  EXPECT_FALSE(r.finish_reason_equal);
  EXPECT_FALSE(r.tool_names_equal);
  EXPECT_FALSE(r.length_ratio);
  EXPECT_FALSE(r.status_equal);
  EXPECT_TRUE(r.shadow_json_valid);  // a 500 with a JSON error body still parsed
}

}  // namespace
}  // namespace canaryd::shadow
