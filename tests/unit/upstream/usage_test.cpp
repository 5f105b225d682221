// Tests for reading token usage from upstream bodies and from SSE streams,
// whatever the chunk boundaries.
#include "upstream/usage.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace canaryd::upstream {
namespace {

// ---- parse_usage ------------------------------------------------------------

TEST(ParseUsage, ChatCompletion) {
  auto u = parse_usage(R"({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,
    "message":{"role":"assistant","content":"usage: {\"prompt_tokens\": 999}"},"finish_reason":"stop"}],
    "usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,
             "prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt, 12u);
  EXPECT_EQ(u->completion, 34u);
}

TEST(ParseUsage, EmbeddingsHavePromptOnly) {
  auto u = parse_usage(R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],
    "model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt, 8u);
  EXPECT_EQ(u->completion, 0u);
}

TEST(ParseUsage, ResponsesApi) {
  auto u = parse_usage(R"({"id":"resp_1","object":"response","status":"completed","output":[],
    "usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":0},"output_tokens":7,
             "output_tokens_details":{"reasoning_tokens":0},"total_tokens":27}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt, 20u);
  EXPECT_EQ(u->completion, 7u);
}

TEST(ParseUsage, ResponsesStreamCompletedEvent) {
  auto u = parse_usage(R"({"type":"response.completed","sequence_number":9,"response":{"id":"resp_1",
    "object":"response","status":"completed","usage":{"input_tokens":5,"output_tokens":11,"total_tokens":16}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt, 5u);
  EXPECT_EQ(u->completion, 11u);
  // Earlier Responses events carry a response without usage.
  EXPECT_FALSE(parse_usage(R"({"type":"response.created","response":{"id":"r","usage":null}})"));
  EXPECT_FALSE(parse_usage(R"({"type":"response.created","response":{"id":"r"}})"));
}

TEST(ParseUsage, MissingOrNullOrMalformed) {
  EXPECT_FALSE(parse_usage(R"({"id":"x","choices":[]})"));
  EXPECT_FALSE(parse_usage(R"({"id":"x","usage":null})"));
  EXPECT_FALSE(parse_usage(R"({"usage":[1,2]})"));
  EXPECT_FALSE(parse_usage(R"({"usage":{"prompt_tokens":1})"));  // truncated
  EXPECT_FALSE(parse_usage("[DONE]"));
  EXPECT_FALSE(parse_usage(""));
  // Nested usage elsewhere is not the response's usage.
  EXPECT_FALSE(parse_usage(R"({"choices":[{"usage":{"prompt_tokens":3}}]})"));
}

TEST(ParseUsage, NonIntegerCountsReadAsZero) {
  auto u = parse_usage(R"({"usage":{"prompt_tokens":"12","completion_tokens":-3}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt, 0u);
  EXPECT_EQ(u->completion, 0u);
}

// ---- SseScanner ---------------------------------------------------------------

// A realistic chat stream with stream_options.include_usage: role chunk,
// content chunks (usage null), the final usage chunk with empty choices, [DONE].
std::string openai_stream(std::string_view eol = "\n") {
  const char* events[] = {
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})",
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null})",
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":" world \"usage\": {}"},"finish_reason":null}],"usage":null})",
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})",
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}})",
      "[DONE]",
  };
  std::string s;
  for (const char* e : events) {
    s += "data: ";
    s += e;
    s += eol;
    s += eol;
  }
  return s;
}

struct Result {
  std::size_t events = 0;
  bool done = false;
  bool has_usage = false;
  Usage usage;
  bool operator==(const Result& o) const {
    return events == o.events && done == o.done && has_usage == o.has_usage && usage.prompt == o.usage.prompt &&
           usage.completion == o.usage.completion;
  }
};

std::ostream& operator<<(std::ostream& os, const Result& r) {
  return os << "{events=" << r.events << " done=" << r.done << " usage=" << r.has_usage << " " << r.usage.prompt << "/"
            << r.usage.completion << "}";
}

Result result_of(const SseScanner& s) {
  Result r;
  r.events = s.events();
  r.done = s.done();
  r.has_usage = s.usage().has_value();
  if (s.usage()) r.usage = *s.usage();
  return r;
}

Result feed_chunks(std::string_view stream, const std::vector<std::size_t>& cuts) {
  SseScanner s;
  std::size_t at = 0;
  for (std::size_t c : cuts) {
    s.feed(stream.substr(at, c - at));
    at = c;
  }
  s.feed(stream.substr(at));
  return result_of(s);
}

const Result kExpected{6, true, true, {9, 3}};

TEST(SseScanner, WholeStream) { EXPECT_EQ(feed_chunks(openai_stream(), {}), kExpected); }

TEST(SseScanner, OneByteAtATime) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string stream = openai_stream(eol);
    SseScanner s;
    for (char c : stream) s.feed(std::string_view(&c, 1));
    EXPECT_EQ(result_of(s), kExpected) << "eol size " << eol.size();
  }
}

TEST(SseScanner, EverySingleSplitPoint) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string stream = openai_stream(eol);
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
      ASSERT_EQ(feed_chunks(stream, {cut}), kExpected) << "cut at " << cut << " eol size " << eol.size();
    }
  }
}

TEST(SseScanner, RandomChunkings) {
  std::mt19937 rng(424242);
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string stream = openai_stream(eol);
    for (int round = 0; round < 300; ++round) {
      std::vector<std::size_t> cuts;
      std::size_t at = 0;
      while (true) {
        at += std::uniform_int_distribution<std::size_t>(0, 40)(rng);  // empty feeds too
        if (at >= stream.size()) break;
        cuts.push_back(at);
      }
      ASSERT_EQ(feed_chunks(stream, cuts), kExpected) << "round " << round;
    }
  }
}

TEST(SseScanner, CrLfSplitAcrossFeeds) {
  SseScanner s;
  s.feed("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r");
  s.feed("\n\r");
  s.feed("\n");
  EXPECT_EQ(s.events(), 1u);
  ASSERT_TRUE(s.usage());
  EXPECT_EQ(s.usage()->completion, 2u);
  // "\r" then "\n" in the next feed is one line end, not an extra blank line:
  // the second data line belongs to the same event.
  SseScanner t;
  t.feed("data: a\r");
  t.feed("\ndata: b\r\n\r\n");
  EXPECT_EQ(t.events(), 1u);
}

TEST(SseScanner, MultiLineData) {
  SseScanner s;
  s.feed("data: {\"usage\":\ndata: {\"prompt_tokens\":4,\ndata: \"completion_tokens\":5}}\n\n");
  EXPECT_EQ(s.events(), 1u);
  ASSERT_TRUE(s.usage());
  EXPECT_EQ(s.usage()->prompt, 4u);
  EXPECT_EQ(s.usage()->completion, 5u);
}

TEST(SseScanner, CommentsEventAndIdLines) {
  SseScanner s;
  s.feed(": keep-alive\n\n");
  s.feed(":\n\n");
  EXPECT_EQ(s.events(), 0u);
  s.feed("event: response.completed\nid: 7\nretry: 1000\n");
  s.feed(
      "data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\n\n");
  EXPECT_EQ(s.events(), 1u);
  ASSERT_TRUE(s.usage());
  EXPECT_EQ(s.usage()->prompt, 3u);
  EXPECT_EQ(s.usage()->completion, 4u);
  EXPECT_FALSE(s.done());
  s.feed("data:[DONE]\n\n");  // no space after the colon is fine too
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.events(), 2u);
}

TEST(SseScanner, LaterUsageWinsAndNullDoesNotErase) {
  SseScanner s;
  s.feed("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
  s.feed("data: {\"usage\":null}\n\n");
  ASSERT_TRUE(s.usage());
  EXPECT_EQ(s.usage()->prompt, 1u);
  s.feed("data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n");
  EXPECT_EQ(s.usage()->prompt, 2u);
  EXPECT_EQ(s.usage()->completion, 3u);
}

TEST(SseScanner, EventWithoutTrailingBlankLineIsNotDispatched) {
  SseScanner s;
  s.feed("data: [DONE]\n");
  EXPECT_FALSE(s.done());
  s.feed("\n");
  EXPECT_TRUE(s.done());
}

std::string usage_event(int prompt) {
  return "data: {\"usage\":{\"prompt_tokens\":" + std::to_string(prompt) + ",\"completion_tokens\":1}}\n\n";
}

TEST(SseScanner, OverlongLineStopsScanning) {
  // Split across many feeds.
  {
    SseScanner s;
    s.feed(usage_event(1));
    s.feed("data: \"");
    std::string chunk(64 * 1024, 'x');
    for (std::size_t n = 0; n <= SseScanner::kMaxLine / chunk.size() + 1; ++n) s.feed(chunk);
    s.feed("\"\n\n");
    s.feed(usage_event(2));
    s.feed("data: [DONE]\n\n");
    EXPECT_EQ(s.events(), 1u);
    ASSERT_TRUE(s.usage());
    EXPECT_EQ(s.usage()->prompt, 1u);
    EXPECT_FALSE(s.done());
  }
  // The same bytes in a single feed give the same answer.
  {
    std::string big = usage_event(1) + "data: \"" + std::string(SseScanner::kMaxLine + 10, 'x') + "\"\n\n" +
                      usage_event(2) + "data: [DONE]\n\n";
    SseScanner s;
    s.feed(big);
    EXPECT_EQ(s.events(), 1u);
    ASSERT_TRUE(s.usage());
    EXPECT_EQ(s.usage()->prompt, 1u);
    EXPECT_FALSE(s.done());
  }
  // A long comment line counts as a long line too, whatever the chunking.
  for (bool one_feed : {true, false}) {
    std::string big = ": " + std::string(SseScanner::kMaxLine + 10, 'c') + "\n" + usage_event(2);
    SseScanner s;
    if (one_feed) {
      s.feed(big);
    } else {
      for (std::size_t at = 0; at < big.size(); at += 100'000) s.feed(std::string_view(big).substr(at, 100'000));
    }
    EXPECT_EQ(s.events(), 0u) << one_feed;
    EXPECT_FALSE(s.usage()) << one_feed;
  }
  // Many data lines that add up past the bound stop it as well.
  {
    SseScanner s;
    std::string line = "data: " + std::string(1000, 'y') + "\n";
    for (std::size_t n = 0; n < SseScanner::kMaxLine / 1000 + 2; ++n) s.feed(line);
    s.feed("\n");
    s.feed(usage_event(3));
    EXPECT_EQ(s.events(), 0u);
    EXPECT_FALSE(s.usage());
  }
}

TEST(SseScanner, LineOfExactlyMaxLengthIsFine) {
  // "data: " + payload == kMaxLine bytes.
  std::string payload = "{\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":1},\"pad\":\"";
  std::string tail = "\"}";
  std::string line = "data: " + payload;
  line += std::string(SseScanner::kMaxLine - line.size() - tail.size(), 'p');
  line += tail;
  ASSERT_EQ(line.size(), SseScanner::kMaxLine);
  for (std::size_t step : {std::size_t{0}, std::size_t{4096}}) {
    SseScanner s;
    if (step == 0) {
      s.feed(line + "\n\n");
    } else {
      std::string all = line + "\n\n";
      for (std::size_t at = 0; at < all.size(); at += step) s.feed(std::string_view(all).substr(at, step));
    }
    EXPECT_EQ(s.events(), 1u);
    ASSERT_TRUE(s.usage());
    EXPECT_EQ(s.usage()->prompt, 6u);
  }
}

}  // namespace
}  // namespace canaryd::upstream
