// libFuzzer harness: a client's request bytes through the strict head check
// (src/server/http_strict.hpp) and then Beast's request parser, the same two
// steps session.cpp runs. Aborts if the head check is not prefix-consistent.
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/strict.hpp"

namespace http = boost::beast::http;
using canaryd::wire::strict::check_request_head;
using canaryd::wire::strict::HeadStatus;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto full = check_request_head(bytes);
  if (full.status == HeadStatus::complete && (full.head_size == 0 || full.head_size > size)) std::abort();

  // Bytes arrive in pieces: once a prefix is complete, more bytes must not change the verdict.
  if (size > 0) {
    auto prefix = check_request_head(bytes.substr(0, data[0] % size));
    if (prefix.status == HeadStatus::complete &&
        (full.status != HeadStatus::complete || full.head_size != prefix.head_size)) {
      std::abort();
    }
    if (prefix.status == HeadStatus::bad && full.status != HeadStatus::bad) std::abort();
  }
  if (full.status != HeadStatus::complete) return 0;

  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1024 * 1024);
  parser.eager(true);
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (used < size && !parser.is_done()) {
    auto n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec == http::error::need_more) break;
    if (ec) break;
    if (n == 0) break;
    used += n;
  }
  if (!ec && parser.is_header_done()) {
    // The strict check ran: Beast must agree there is at most one framing.
    auto& req = parser.get();
    if (req.count(http::field::content_length) > 1) std::abort();
    if (req.count(http::field::content_length) == 1 && req.count(http::field::transfer_encoding) > 0) std::abort();
  }
  return 0;
}
