// How canaryd reads an upstream's response: which heads are interim, which
// are refused, the body limit, and when the connection may carry another
// request. The exchange (server/exchange.cpp) applies these rules on a live
// connection; parse_response() applies the same rules to bytes in memory, for
// the fuzz harness and unit tests, so both exercise one policy.
//
// The pooling rule is Pingora's: reuse only after a complete response by its
// own framing, a keep-alive answer, and nothing received past its end. A
// bodiless-by-rule answer (HEAD, 204, 304) closes the connection instead: an
// upstream that sends a body there anyway would have it read as the next
// request's answer, and whether it has arrived yet is a race.
#pragma once

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstdint>
#include <string_view>

namespace canaryd::upstream {

namespace http = boost::beast::http;
using ResponseParser = http::response_parser<http::buffer_body>;

// Interim responses accepted before the final one: RFC 9110 sets no limit,
// but an upstream that sends more than this is not answering.
constexpr int kMaxInterim = 8;
constexpr std::size_t kMaxResponseHead = 64 * 1024;

// A fresh parser for one response head: header limit, the body limit set
// before the head is read (Beast checks a Content-Length against it as soon
// as the head is parsed; its own default is 8 MiB), HEAD answers bodiless.
void configure_parser(ResponseParser& parser, std::uint64_t max_body, bool head_only);

enum class HeadKind {
  final,             // relay it
  interim,           // 100/102/103...: drop it, read the next head
  switched,          // 101: canaryd does not tunnel a proxied request
  too_many_interim,  // more than kMaxInterim
};
// `interim_seen` counts the interim heads so far (incremented here for one).
HeadKind classify_head(int status, int& interim_seen);
std::string_view refusal_text(HeadKind kind);  // for switched / too_many_interim

// A close-delimited body (neither Content-Length nor chunked) is counted by
// the reader: Beast's limit for it counts bytes a buffer_body could not take
// yet twice, so an answer exactly at the limit would fail.
bool body_to_eof(const ResponseParser& parser);

// The pooling rule above, for a response whose reading has ended.
bool reusable_after(const ResponseParser& parser, int status, bool head_only, bool unread_bytes);

// The rules on bytes in memory, fed `step` bytes at a time (0 = all at once).
struct ParsedResponse {
  int status = 0;   // the final head's status (0: none)
  int interim = 0;  // interim heads dropped
  HeadKind kind = HeadKind::final;
  boost::beast::error_code ec;  // parse error, body_limit, or partial_message
  std::uint64_t body_bytes = 0;
  bool complete = false;     // the final response ended by its framing
  bool reusable = false;     // the connection could carry another request
  std::size_t leftover = 0;  // bytes after the end of the response
};
ParsedResponse parse_response(std::string_view wire, std::uint64_t max_body, bool head_only, std::size_t step = 0,
                              bool peer_closed = true);

}  // namespace canaryd::upstream
