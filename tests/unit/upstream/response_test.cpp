// upstream::parse_response: the rules the exchange applies to an upstream's
// response (interim heads, 101, the body limit, when a connection may be reused).
#include "upstream/response.hpp"

#include <gtest/gtest.h>

#include <string>

namespace canaryd::upstream {
namespace {

const std::string kBody = R"({"tag":"a"})";
const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + kBody;
const std::string kChunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" + kBody + "\r\n0\r\n\r\n";
constexpr std::uint64_t kLimit = 1 << 20;

TEST(ParseResponse, ACleanKeepAliveAnswerIsReusable) {
  for (const std::string& wire : {kOk, kChunked}) {
    for (std::size_t step : {0, 1, 7}) {
      auto r = parse_response(wire, kLimit, false, step);
      EXPECT_EQ(r.status, 200);
      EXPECT_TRUE(r.complete);
      EXPECT_TRUE(r.reusable) << wire;
      EXPECT_EQ(r.body_bytes, kBody.size());
      EXPECT_EQ(r.leftover, 0u);
    }
  }
}

TEST(ParseResponse, InterimHeadsAreDroppedUpToALimit) {
  auto r = parse_response("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + kOk, kLimit,
                          false, 3);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.interim, 2);
  EXPECT_TRUE(r.reusable);
  std::string many;
  for (int i = 0; i < kMaxInterim; ++i) many += "HTTP/1.1 102 Processing\r\n\r\n";
  EXPECT_EQ(parse_response(many + kOk, kLimit, false).status, 200);
  auto too_many = parse_response(many + "HTTP/1.1 100 Continue\r\n\r\n" + kOk, kLimit, false);
  EXPECT_EQ(too_many.kind, HeadKind::too_many_interim);
  EXPECT_FALSE(too_many.reusable);
}

TEST(ParseResponse, SwitchingProtocolsIsRefused) {
  auto r = parse_response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" + kOk, kLimit, false);
  EXPECT_EQ(r.kind, HeadKind::switched);
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.reusable);
  EXPECT_FALSE(refusal_text(r.kind).empty());
}

TEST(ParseResponse, BytesPastTheResponseForbidReuse) {
  for (const std::string& wire : {kOk + "x", kOk + kOk, kChunked + kOk}) {
    auto r = parse_response(wire, kLimit, false, 5);
    EXPECT_TRUE(r.complete);
    EXPECT_FALSE(r.reusable) << wire;
    EXPECT_GT(r.leftover, 0u);
  }
}

TEST(ParseResponse, BodilessByRuleIsNeverReused) {
  auto head = parse_response(kOk, kLimit, /*head_only=*/true);
  EXPECT_TRUE(head.complete);
  EXPECT_EQ(head.body_bytes, 0u);
  EXPECT_FALSE(head.reusable);
  auto no_content = parse_response("HTTP/1.1 204 No Content\r\n\r\n", kLimit, false);
  EXPECT_TRUE(no_content.complete);
  EXPECT_FALSE(no_content.reusable);
}

TEST(ParseResponse, ConnectionCloseAndHttp10AreNotReused) {
  EXPECT_FALSE(
      parse_response("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n" + kBody, kLimit, false)
          .reusable);
  EXPECT_FALSE(parse_response("HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n" + kBody, kLimit, false).reusable);
  auto eof = parse_response("HTTP/1.1 200 OK\r\n\r\n" + kBody, kLimit, false);
  EXPECT_TRUE(eof.complete);  // close-delimited: ended by the peer's close
  EXPECT_EQ(eof.body_bytes, kBody.size());
  EXPECT_FALSE(eof.reusable);
}

TEST(ParseResponse, TheBodyLimitHoldsForEveryFraming) {
  const std::uint64_t at = kBody.size();
  for (const std::string& wire : {kOk, kChunked, "HTTP/1.1 200 OK\r\n\r\n" + kBody}) {
    for (std::size_t step : {0, 1, 4}) {
      EXPECT_TRUE(parse_response(wire, at, false, step).complete) << wire;
      auto over = parse_response(wire, at - 1, false, step);
      EXPECT_FALSE(over.complete) << wire;
      EXPECT_EQ(over.ec, http::error::body_limit) << wire << " step " << step;
    }
  }
  // The default 8 MiB of Beast does not apply: a 20 MB Content-Length head passes under 64 MiB.
  auto big = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n", 64u << 20, false, 0, false);
  EXPECT_FALSE(big.ec) << big.ec.message();
  EXPECT_EQ(big.status, 200);
}

TEST(ParseResponse, ShortAndMalformedBodiesAreErrors) {
  auto shorter = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" + kBody, kLimit, false);
  EXPECT_EQ(shorter.ec, http::error::partial_message);
  EXPECT_FALSE(shorter.reusable);
  auto overflow = parse_response(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n" + kBody, kLimit, false);
  EXPECT_TRUE(overflow.ec);
  EXPECT_FALSE(overflow.reusable);
}

}  // namespace
}  // namespace canaryd::upstream
