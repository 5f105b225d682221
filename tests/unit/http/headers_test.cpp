// Tests for header rewriting between client and upstream (SPEC §3), request
// ids and the client key check.
#include "http/headers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace canaryd::wire {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

http::fields make(const Headers& hs) {
  http::fields f;
  for (const auto& [n, v] : hs) f.insert(n, v);
  return f;
}

Headers list(const http::fields& f) {
  Headers out;
  for (const auto& h : f) out.emplace_back(std::string(h.name_string()), std::string(h.value()));
  return out;
}

std::vector<std::string> values(const http::fields& f, std::string_view name) {
  std::vector<std::string> out;
  for (auto [it, end] = f.equal_range(name); it != end; ++it) out.emplace_back(it->value());
  return out;
}

// ---- is_hop_by_hop ----------------------------------------------------------

TEST(HopByHop, StandardNamesAnyCase) {
  for (const char* n : {"Connection", "keep-alive", "PROXY-CONNECTION", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
                        "Proxy-Authorization", "proxy-authenticate"}) {
    EXPECT_TRUE(is_hop_by_hop(n, "")) << n;
  }
  for (const char* n : {"Content-Type", "Authorization", "X-Request-ID", "Trailers", "T", "Connectio", ""}) {
    EXPECT_FALSE(is_hop_by_hop(n, "")) << n;
  }
}

TEST(HopByHop, NamesListedInConnection) {
  EXPECT_TRUE(is_hop_by_hop("X-Secret", "keep-alive, X-Secret"));
  EXPECT_TRUE(is_hop_by_hop("x-secret", "X-SECRET"));
  EXPECT_TRUE(is_hop_by_hop("X-Secret", " close ,\tx-secret\t, foo"));
  EXPECT_TRUE(is_hop_by_hop("Foo", "x-secret,foo"));
  EXPECT_FALSE(is_hop_by_hop("X-Secret-2", "keep-alive, X-Secret"));
  EXPECT_FALSE(is_hop_by_hop("X-Secre", "X-Secret"));
  EXPECT_FALSE(is_hop_by_hop("Content-Type", "close"));
  EXPECT_FALSE(is_hop_by_hop("X-Secret", ",,"));
}

// ---- upstream_request_headers -------------------------------------------------

UpstreamHeaderContext ctx(std::string_view api_key = "sk-upstream") {
  return UpstreamHeaderContext{"api.example.com", api_key, "rid-0123456789", "10.0.0.9"};
}

TEST(UpstreamRequestHeaders, RewritesAsSpecified) {
  http::fields in = make({
      {"Host", "canaryd.local:8080"},
      {"content-type", "application/json"},
      {"Authorization", "Bearer client-key"},
      {"Connection", "keep-alive, X-Hop"},
      {"X-Hop", "drop me"},
      {"Keep-Alive", "timeout=5"},
      {"OpenAI-Organization", "org-1"},
      {"Content-Length", "123"},
      {"Accept-Encoding", "gzip, br"},
      {"X-Request-ID", "client-id"},
      {"TE", "trailers"},
      {"Transfer-Encoding", "chunked"},
      {"Upgrade", "h2c"},
      {"Proxy-Authorization", "Basic eHg="},
      {"Expect", "100-continue"},
      {"x-user-id", "alice"},
      {"X-Forwarded-For", "1.2.3.4"},
      {"Accept", "text/event-stream"},
  });
  http::fields out;
  upstream_request_headers(in, out, ctx());
  Headers want = {
      {"content-type", "application/json"},
      {"OpenAI-Organization", "org-1"},
      {"x-user-id", "alice"},
      {"Accept", "text/event-stream"},
      {"Host", "api.example.com"},
      {"Authorization", "Bearer sk-upstream"},
      {"X-Request-ID", "rid-0123456789"},
      {"X-Forwarded-For", "1.2.3.4, 10.0.0.9"},
      {"Accept-Encoding", "identity"},
  };
  EXPECT_EQ(list(out), want);
}

TEST(UpstreamRequestHeaders, NoAuthorizationWithoutUpstreamKey) {
  http::fields in = make({{"Authorization", "Bearer client-key"}, {"Content-Type", "application/json"}});
  http::fields out;
  upstream_request_headers(in, out, ctx(""));
  EXPECT_EQ(out.count(http::field::authorization), 0u);
  EXPECT_EQ(values(out, "Content-Type"), std::vector<std::string>{"application/json"});
}

TEST(UpstreamRequestHeaders, ForwardedForIsAppended) {
  {
    http::fields out;
    upstream_request_headers(make({}), out, ctx());
    EXPECT_EQ(values(out, "X-Forwarded-For"), std::vector<std::string>{"10.0.0.9"});
  }
  {
    http::fields out;
    upstream_request_headers(make({{"X-Forwarded-For", "1.1.1.1, 2.2.2.2"}, {"x-forwarded-for", "3.3.3.3"}}), out,
                             ctx());
    EXPECT_EQ(values(out, "X-Forwarded-For"), std::vector<std::string>{"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"});
  }
}

TEST(UpstreamRequestHeaders, NoClientAddressAddsNothingToForwardedFor) {
  UpstreamHeaderContext c = ctx();
  c.client_ip = "";
  {
    http::fields out;
    upstream_request_headers(make({{"X-Forwarded-For", "1.1.1.1"}}), out, c);
    EXPECT_EQ(values(out, "X-Forwarded-For"), std::vector<std::string>{"1.1.1.1"});
  }
  {
    http::fields out;
    upstream_request_headers(make({}), out, c);
    EXPECT_EQ(out.count("X-Forwarded-For"), 0u);
  }
}

TEST(UpstreamRequestHeaders, OneRequestIdAndOneAcceptEncoding) {
  http::fields in =
      make({{"X-Request-ID", "a"}, {"x-request-id", "b"}, {"Accept-Encoding", "gzip"}, {"accept-encoding", "br"}});
  http::fields out;
  upstream_request_headers(in, out, ctx());
  EXPECT_EQ(values(out, "X-Request-ID"), std::vector<std::string>{"rid-0123456789"});
  EXPECT_EQ(values(out, "Accept-Encoding"), std::vector<std::string>{"identity"});
  EXPECT_EQ(values(out, "Host"), std::vector<std::string>{"api.example.com"});
}

TEST(UpstreamRequestHeaders, EveryConnectionHeaderCounts) {
  // Connection may be sent as several header lines; each names hop-by-hop headers.
  http::fields in =
      make({{"Connection", "keep-alive"}, {"Connection", "X-Secret"}, {"X-Secret", "s"}, {"X-Kept", "k"}});
  http::fields out;
  upstream_request_headers(in, out, ctx());
  EXPECT_EQ(out.count("X-Secret"), 0u);
  EXPECT_EQ(values(out, "X-Kept"), std::vector<std::string>{"k"});
}

// ---- the client response's fields -----------------------------------------

TEST(ClientResponseHeaders, DropsHopByHopAndLengthKeepsDuplicates) {
  http::fields in = make({
      {"Content-Type", "text/event-stream"},
      {"Connection", "keep-alive, X-Upstream-Hop"},
      {"X-Upstream-Hop", "x"},
      {"Keep-Alive", "timeout=5"},
      {"Transfer-Encoding", "chunked"},
      {"Content-Length", "42"},
      {"Set-Cookie", "a=1; Path=/"},
      {"openai-processing-ms", "123"},
      {"set-cookie", "b=2; Path=/"},
      {"Proxy-Authenticate", "Basic"},
      {"x-ratelimit-remaining-requests", "99"},
  });
  std::string head;
  append_client_response_head(head, 200, in, {});
  // Beast keeps same-name fields together (in their order); other names keep theirs.
  Headers want = {
      {"Content-Type", "text/event-stream"},
      {"Set-Cookie", "a=1; Path=/"},
      {"set-cookie", "b=2; Path=/"},
      {"openai-processing-ms", "123"},
      {"x-ratelimit-remaining-requests", "99"},
  };
  std::string expected = "HTTP/1.1 200 OK\r\n";
  for (const auto& [n, v] : want) expected += n + ": " + v + "\r\n";
  EXPECT_EQ(head, expected + "\r\n");
  EXPECT_EQ(std::count(head.begin(), head.end(), '\n') - 2, static_cast<std::ptrdiff_t>(want.size()));
  EXPECT_NE(head.find("Set-Cookie: a=1; Path=/\r\nset-cookie: b=2; Path=/\r\n"), std::string::npos);
}

// ---- the heads written at once (the hot path) -----------------------------

TEST(ClientResponseHead, WrittenFromTheUpstreamFieldsAndOurOwn) {
  http::fields in = make({
      {"Content-Type", "application/json"},
      {"Connection", "keep-alive, X-Upstream-Hop"},
      {"X-Upstream-Hop", "x"},
      {"Content-Length", "42"},
      {"x-request-id", "upstream-id"},    // ours replaces it
      {"X-Canaryd-Arm", "canary"},        // an upstream cannot speak for canaryd
      {"x-canaryd-fallback", "spoofed"},  // not even where canaryd sets none
      {"openai-processing-ms", "123"},
  });
  std::string head;
  append_client_response_head(head, 200, in,
                              {{"X-Request-ID", "ours"},
                               {"X-Canaryd-Arm", "control"},
                               {std::string_view(), "left out"},
                               {"Content-Length", "7"}});
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            "openai-processing-ms: 123\r\n"
            "X-Request-ID: ours\r\n"
            "X-Canaryd-Arm: control\r\n"
            "Content-Length: 7\r\n"
            "\r\n");
}

TEST(ClientResponseHead, NoCacheOnlyWhenTheUpstreamSentNoCacheControl) {
  std::string head;
  append_client_response_head(head, 200, make({{"Content-Type", "text/event-stream"}}), {}, true);
  EXPECT_NE(head.find("Cache-Control: no-cache\r\n"), std::string::npos) << head;
  head.clear();
  append_client_response_head(head, 200, make({{"cache-control", "private"}}), {}, true);
  EXPECT_EQ(head, "HTTP/1.1 200 OK\r\ncache-control: private\r\n\r\n");
}

TEST(UpstreamRequestHead, SameFieldsAndOrderAsTheFieldsVersion) {
  http::fields in = make({
      {"Host", "proxy.local"},
      {"Authorization", "Bearer client"},
      {"Content-Type", "application/json"},
      {"X-Forwarded-For", "10.0.0.1"},
      {"Connection", "close"},
      {"X-User-ID", "alice"},
      {"Content-Length", "99"},
  });
  const UpstreamHeaderContext ctx{"api.example.com", "sk-up", "rid-1", "127.0.0.1"};
  http::fields expected;
  upstream_request_headers(in, expected, ctx);
  std::string want = "POST /v1/chat/completions HTTP/1.1\r\n";
  for (const auto& f : expected) want.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
  want += "Content-Length: 12\r\n\r\n";
  std::string head;
  append_upstream_request_head(head, http::verb::post, "/v1/chat/completions", in, ctx, 12);
  EXPECT_EQ(head, want);
  EXPECT_NE(head.find("Authorization: Bearer sk-up\r\n"), std::string::npos);
  EXPECT_EQ(head.find("Bearer client"), std::string::npos);
  head.clear();
  append_upstream_request_head(head, http::verb::get, "/v1/models", in, ctx, std::nullopt);
  EXPECT_EQ(head.find("Content-Length"), std::string::npos);
}

// ---- request_id_from --------------------------------------------------------

bool is_generated(const std::string& id) {
  return id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST(RequestId, KeepsValidIds) {
  for (std::string id : {std::string("a"), std::string("req-123_ABC.xyz:/+=~!"), std::string(128, 'z'),
                         std::string("550e8400-e29b-41d4-a716-446655440000")}) {
    EXPECT_EQ(request_id_from(id), id);
  }
}

TEST(RequestId, ReplacesInvalidIds) {
  const std::string bad[] = {
      "",       std::string(129, 'z'),    "has space", " leading",    "tab\there", "new\nline",
      "cr\rlf", std::string("nul\0x", 5), "del\x7f",   "caf\xc3\xa9", "\x01",
  };
  for (const auto& b : bad) {
    std::string id = request_id_from(b);
    EXPECT_NE(id, b);
    EXPECT_TRUE(is_generated(id)) << id;
  }
}

TEST(RequestId, GeneratedIdsAreDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = request_id_from("");
    ASSERT_TRUE(is_generated(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

// ---- client_key_ok ----------------------------------------------------------

TEST(ClientKey, Checks) {
  const std::vector<std::string> keys = {"sk-client-one", "sk-client-two"};
  EXPECT_TRUE(client_key_ok("Bearer sk-client-one", keys));
  EXPECT_TRUE(client_key_ok("Bearer sk-client-two", keys));
  EXPECT_TRUE(client_key_ok("bearer sk-client-one", keys));
  EXPECT_TRUE(client_key_ok("BEARER sk-client-two", keys));

  EXPECT_FALSE(client_key_ok("Bearer sk-client-three", keys));
  EXPECT_FALSE(client_key_ok("Bearer sk-client-on", keys));    // a prefix of a key
  EXPECT_FALSE(client_key_ok("Bearer sk-client-onex", keys));  // a key plus one character
  EXPECT_FALSE(client_key_ok("Bearer sk-client-", keys));
  EXPECT_FALSE(client_key_ok("sk-client-one", keys));  // no scheme
  EXPECT_FALSE(client_key_ok("Basic sk-client-one", keys));
  EXPECT_FALSE(client_key_ok("Bearer  sk-client-one", keys));
  EXPECT_FALSE(client_key_ok("Bearer\tsk-client-one", keys));
  EXPECT_FALSE(client_key_ok(std::string_view("Bearer\0sk-client-one", 20), keys));
  EXPECT_FALSE(client_key_ok("Bearersk-client-one", keys));
  EXPECT_FALSE(client_key_ok("Bearer ", keys));
  EXPECT_FALSE(client_key_ok("Bearer", keys));
  EXPECT_FALSE(client_key_ok("", keys));
  EXPECT_FALSE(client_key_ok("Bearer SK-CLIENT-ONE", keys));  // keys are case-sensitive

  const std::vector<std::string> none;
  EXPECT_FALSE(client_key_ok("Bearer sk-client-one", none));
  EXPECT_FALSE(client_key_ok("Bearer ", none));
  const std::vector<std::string> empty_key = {""};
  EXPECT_FALSE(client_key_ok("Bearer ", empty_key));
  EXPECT_FALSE(client_key_ok("Bearer x", empty_key));

  const std::vector<std::string_view> views = {"k1"};
  EXPECT_TRUE(client_key_ok("Bearer k1", views));
}

TEST(ConstantTimeEqual, Basics) {
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
}

}  // namespace
}  // namespace canaryd::wire
