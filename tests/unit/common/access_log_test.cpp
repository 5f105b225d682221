// Tests for the access log line: always one valid JSON object, strings
// escaped, optional fields left out.
#include "common/access_log.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

namespace canaryd::log {
namespace {

nlohmann::json parse(const std::string& line) {
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  auto j = nlohmann::json::parse(line, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << line;
  EXPECT_TRUE(j.is_object()) << line;
  return j;
}

AccessRecord full() {
  AccessRecord r;
  r.request_id = "rid-1";
  r.method = "POST";
  r.path = "/v1/chat/completions";
  r.arm = "canary";
  r.provider = "holysheep";
  r.model = "gpt-4.1";
  r.status = 200;
  r.latency_ms = 123.456;
  r.ttfb_ms = 45.5;
  r.overhead_ms = 0.25;
  r.prompt_tokens = 12;
  r.completion_tokens = 34;
  r.fallback = "5xx";
  r.error = "upstream_timeout";
  r.sticky_source = "header:X-User-ID";
  r.stream = true;
  r.pinned = true;
  return r;
}

TEST(AccessLog, AllFields) {
  auto j = parse(format_access(full()));
  EXPECT_EQ(j["type"], "access");
  EXPECT_EQ(j["request_id"], "rid-1");
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["path"], "/v1/chat/completions");
  EXPECT_EQ(j["arm"], "canary");
  EXPECT_EQ(j["provider"], "holysheep");
  EXPECT_EQ(j["model"], "gpt-4.1");
  EXPECT_EQ(j["status"], 200);
  EXPECT_NEAR(j["latency_ms"].get<double>(), 123.456, 1e-9);
  EXPECT_NEAR(j["ttfb_ms"].get<double>(), 45.5, 1e-9);
  EXPECT_NEAR(j["overhead_ms"].get<double>(), 0.25, 1e-9);
  EXPECT_EQ(j["prompt_tokens"], 12);
  EXPECT_EQ(j["completion_tokens"], 34);
  EXPECT_EQ(j["fallback"], "5xx");
  EXPECT_EQ(j["error"], "upstream_timeout");
  EXPECT_EQ(j["sticky_source"], "header:X-User-ID");
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["pinned"], true);
}

TEST(AccessLog, OptionalFieldsOmitted) {
  AccessRecord r;
  r.request_id = "rid-2";
  r.method = "GET";
  r.path = "/health";
  r.status = 200;
  r.latency_ms = 0.5;
  auto j = parse(format_access(r));
  for (const char* k : {"arm", "provider", "model", "ttfb_ms", "overhead_ms", "prompt_tokens", "completion_tokens",
                        "fallback", "error", "sticky_source", "stream", "pinned", "cost_usd"}) {
    EXPECT_FALSE(j.contains(k)) << k;
  }
  for (const char* k : {"type", "request_id", "method", "path", "status", "latency_ms"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  // Zero is a time, not "none".
  r.ttfb_ms = 0;
  EXPECT_TRUE(parse(format_access(r)).contains("ttfb_ms"));
}

TEST(AccessLog, StringsAreEscaped) {
  AccessRecord r = full();
  std::string path = "/v1/\"quoted\"\\back\nnew\rret\ttab\x01\x1f end";
  std::string model = "m\"}{,\"injected\":true";
  std::string rid = std::string("nul\0byte", 8);
  r.path = path;
  r.model = model;
  r.request_id = rid;
  std::string line = format_access(r);
  auto j = parse(line);
  EXPECT_EQ(j["path"], path);
  EXPECT_EQ(j["model"], model);
  EXPECT_EQ(j["request_id"], rid);
  EXPECT_FALSE(j.contains("injected"));
  for (char c : line) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << line;
}

TEST(AccessLog, InvalidUtf8StaysValidJson) {
  AccessRecord r = full();
  std::string path = "/v1/caf\xc3\xa9/\xff\xfe";
  r.path = path;
  auto j = parse(format_access(r));
  EXPECT_EQ(j["path"], "/v1/caf\xc3\xa9/\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(AccessLog, ExtremeNumbersStayValidJson) {
  AccessRecord r = full();
  for (double v : {1e300, -1e300, std::numeric_limits<double>::max(), std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::quiet_NaN(), 1e-300}) {
    r.latency_ms = v;
    r.ttfb_ms = v;
    r.overhead_ms = v;
    auto j = parse(format_access(r));
    ASSERT_TRUE(j.contains("latency_ms"));
    EXPECT_TRUE(j["latency_ms"].is_number() || j["latency_ms"].is_null()) << j.dump();
    if (std::isfinite(v)) {
      // Printed with 3 decimals: tiny values round to 0, huge ones keep their magnitude.
      EXPECT_NEAR(j["latency_ms"].get<double>(), v, std::max(0.001, std::abs(v) * 1e-12)) << j.dump();
    }
  }
  r = full();
  r.status = 0;
  EXPECT_EQ(parse(format_access(r))["status"], 0);
  r.prompt_tokens = UINT64_MAX;
  r.completion_tokens = 0;
  auto j = parse(format_access(r));
  EXPECT_EQ(j["prompt_tokens"].get<std::uint64_t>(), UINT64_MAX);
  EXPECT_EQ(j["completion_tokens"], 0);
}

TEST(AccessLog, CostUsd) {
  AccessRecord r = full();
  r.cost_usd = 0.000123;
  auto j = parse(format_access(r));
  EXPECT_NEAR(j["cost_usd"].get<double>(), 0.000123, 1e-9);
  for (double v : {1e300, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    r.cost_usd = v;
    parse(format_access(r));
  }
}

TEST(AccessLog, TimeIsUtcWithMilliseconds) {
  AccessRecord r = full();
  using namespace std::chrono;
  r.time = system_clock::time_point(milliseconds(1796310001123));  // 2026-12-03T15:00:01.123Z (date -u -d @1796310001)
  EXPECT_EQ(parse(format_access(r))["time"], "2026-12-03T15:00:01.123Z");
  r.time = system_clock::time_point(milliseconds(1796310001007));  // the same second, cached
  EXPECT_EQ(parse(format_access(r))["time"], "2026-12-03T15:00:01.007Z");
  r.time = system_clock::time_point(milliseconds(1796310062000));
  EXPECT_EQ(parse(format_access(r))["time"], "2026-12-03T15:01:02.000Z");
}

TEST(AccessBatch, LinesGoOutInBatchesWholeAndInOrder) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    AccessLog log(std::make_shared<spdlog::logger>("batch-test"), f);
    AccessBatch batch(log);
    std::size_t armed = 0;
    for (int i = 0; i < 500; ++i) {
      AccessRecord r = full();
      const std::string id = "rid-" + std::to_string(i);
      r.request_id = id;
      armed += batch.write(r) ? 1 : 0;
    }
    batch.flush();
    log.drain();
    // ~300 bytes a line, 16 KiB a batch: several batches, each armed a flush once.
    EXPECT_GT(armed, 5u);
    EXPECT_LT(armed, 50u);
  }
  std::rewind(f);
  std::string text;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
  std::fclose(f);
  std::size_t at = 0;
  for (int i = 0; i < 500; ++i) {
    const std::size_t nl = text.find('\n', at);
    ASSERT_NE(nl, std::string::npos) << i;
    auto j = parse(text.substr(at, nl - at));
    EXPECT_EQ(j["request_id"], "rid-" + std::to_string(i));
    at = nl + 1;
  }
  EXPECT_EQ(at, text.size());
}

TEST(AccessBatch, AStuckOutputDropsOldBatchesAndNeverBlocksTheWriterOfLines) {
  std::signal(SIGPIPE, SIG_IGN);  // as canaryd does: a closed pipe is an error, not a death
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::FILE* w = ::fdopen(fds[1], "w");
  const std::uint64_t before = AccessLog::dropped_lines();
  {
    AccessLog log(std::make_shared<spdlog::logger>("stuck-test"), w);
    AccessBatch batch(log);
    // Nobody reads the pipe (64 KiB): ~6 MiB of lines must be dropped down to
    // the queue's bound instead of piling up, and writing them never waits.
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 20000; ++i) batch.write(full());
    batch.flush();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    EXPECT_GT(AccessLog::dropped_lines() - before, 5000u);
    ::close(fds[0]);  // now the writer's fwrite fails and it can finish
  }
  std::fclose(w);
}

}  // namespace
}  // namespace canaryd::log
