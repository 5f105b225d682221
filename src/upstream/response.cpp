#include "upstream/response.hpp"

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <optional>
#include <string>

namespace canaryd::upstream {

namespace net = boost::asio;
namespace beast = boost::beast;

void configure_parser(ResponseParser& parser, std::uint64_t max_body, bool head_only) {
  parser.header_limit(kMaxResponseHead);
  parser.body_limit(max_body);
  if (head_only) parser.skip(true);
}

HeadKind classify_head(int status, int& interim_seen) {
  if (status == 101) return HeadKind::switched;
  if (status < 100 || status >= 200) return HeadKind::final;
  return ++interim_seen > kMaxInterim ? HeadKind::too_many_interim : HeadKind::interim;
}

std::string_view refusal_text(HeadKind kind) {
  switch (kind) {
    case HeadKind::switched: return "101 Switching Protocols to a proxied request";
    case HeadKind::too_many_interim: return "more than 8 interim (1xx) responses";
    default: return "";
  }
}

bool body_to_eof(const ResponseParser& parser) {
  return !parser.is_done() && !parser.chunked() && !parser.content_length();
}

bool reusable_after(const ResponseParser& parser, int status, bool head_only, bool unread_bytes) {
  if (!parser.is_done() || !parser.keep_alive()) return false;
  if (head_only || status == 204 || status == 304) return false;
  return !unread_bytes;
}

// (One function, ~80 lines: the framing rules of RFC 9112 §6.3 in order.)
ParsedResponse parse_response(std::string_view wire, std::uint64_t max_body, bool head_only, std::size_t step,
                              bool peer_closed) {
  ParsedResponse out;
  if (step == 0) step = std::max<std::size_t>(wire.size(), 1);
  std::string pending;  // received and not consumed: the connection's read buffer
  std::size_t fed = 0;
  auto receive = [&] {
    if (fed >= wire.size()) return false;
    const std::size_t n = std::min(step, wire.size() - fed);
    pending.append(wire.substr(fed, n));
    fed += n;
    return true;
  };
  auto leftover = [&] { return pending.size() + (wire.size() - fed); };
  // put() on what is pending; erases what the parser took.
  auto put = [&](ResponseParser& p, beast::error_code& ec) {
    if (pending.empty()) {
      ec = http::error::need_more;
      return;
    }
    const std::size_t used = p.put(net::buffer(pending.data(), pending.size()), ec);
    pending.erase(0, used);
  };

  std::optional<ResponseParser> parser;
  for (;;) {
    parser.emplace();
    configure_parser(*parser, max_body, head_only);
    while (!parser->is_header_done()) {
      beast::error_code ec;
      put(*parser, ec);
      if (ec == http::error::need_more) {
        if (receive()) continue;
        out.ec = peer_closed ? beast::error_code(http::error::partial_message) : ec;
        out.leftover = leftover();
        return out;
      }
      if (ec) {
        out.ec = ec;
        return out;
      }
    }
    const int status = parser->get().result_int();
    out.kind = classify_head(status, out.interim);
    if (out.kind == HeadKind::interim) continue;
    if (out.kind != HeadKind::final) {
      out.leftover = leftover();
      return out;
    }
    out.status = status;
    break;
  }

  ResponseParser& p = *parser;
  const bool to_eof = body_to_eof(p);
  if (to_eof) p.body_limit(boost::none);
  char body[4096];
  while (!p.is_done()) {
    p.get().body().data = body;
    p.get().body().size = sizeof body;
    beast::error_code ec;
    put(p, ec);
    out.body_bytes += sizeof body - p.get().body().size;
    if (to_eof && out.body_bytes > max_body) ec = http::error::body_limit;
    if (ec == http::error::need_buffer) continue;
    if (ec == http::error::need_more) {
      if (receive()) continue;
      if (!peer_closed) break;  // it stalls: a live reader times out
      p.put_eof(ec);
      if (ec) out.ec = ec;
      break;
    }
    if (ec) {
      out.ec = ec;
      break;
    }
  }
  out.complete = !out.ec && p.is_done();
  out.leftover = leftover();
  out.reusable = out.complete && reusable_after(p, out.status, head_only, out.leftover > 0);
  return out;
}

}  // namespace canaryd::upstream
