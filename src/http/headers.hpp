// Header rewriting between client and upstream (SPEC §3): hop-by-hop headers
// dropped both ways, the client's Authorization replaced by the upstream key,
// X-Request-ID kept or made, X-Forwarded-For appended, Host set.
#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace canaryd::wire {

namespace http = boost::beast::http;

// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
// Upgrade, Proxy-Authorization, Proxy-Authenticate, and any header the
// Connection header names.
bool is_hop_by_hop(std::string_view name, std::string_view connection_value);

struct UpstreamHeaderContext {
  std::string_view host;     // "api.openai.com" or "127.0.0.1:9101"
  std::string_view api_key;  // empty: no Authorization sent
  std::string_view request_id;
  std::string_view client_ip;  // appended to X-Forwarded-For
};

// Client request headers -> the upstream request's headers. Also drops
// Content-Length (the body may be rewritten; the caller sets it), Host,
// Authorization, Accept-Encoding (canaryd reads `usage` from the body, so it
// asks for identity encoding).
void upstream_request_headers(const http::fields& in, http::fields& out, const UpstreamHeaderContext& ctx);

// The upstream request head written at once: the request line, the fields
// upstream_request_headers makes (same order), Content-Length when given, the
// blank line. No intermediate fields container (one allocation less per field).
void append_upstream_request_head(std::string& out, http::verb method, std::string_view target, const http::fields& in,
                                  const UpstreamHeaderContext& ctx, std::optional<std::size_t> content_length);

// The client response head written at once: the status line, the upstream's
// fields minus hop-by-hop ones and Content-Length (canaryd sets the framing),
// minus any the proxy sets itself
// (`own`, by name, case-insensitively) and any X-Canaryd-* (an upstream cannot
// speak for canaryd), then `own` in order, "Cache-Control: no-cache" when
// `no_cache_unless_set` and the upstream sent none, and the blank line.
struct HeadField {
  std::string_view name;
  std::string_view value;
};
void append_client_response_head(std::string& out, unsigned status, const http::fields& upstream,
                                 std::initializer_list<HeadField> own, bool no_cache_unless_set = false);

// A client-supplied X-Request-ID is kept when it is 1..128 visible ASCII
// characters; otherwise a new random one is made.
std::string request_id_from(std::string_view supplied);

// True when `supplied` (an Authorization header value) is "Bearer <k>" for one
// of `keys`; every key is compared in constant time.
template <class Keys>
bool client_key_ok(std::string_view supplied, const Keys& keys);
bool constant_time_equal(std::string_view a, std::string_view b);

template <class Keys>
bool client_key_ok(std::string_view supplied, const Keys& keys) {
  constexpr std::string_view kBearer = "Bearer ";
  if (supplied.size() <= kBearer.size()) return false;
  bool scheme = true;
  // The scheme is case-insensitive (RFC 7235); the separator is exactly one
  // space (folding case with | 0x20 would also let '\0' pass for it).
  for (std::size_t i = 0; i + 1 < kBearer.size(); ++i) {
    char c = supplied[i];
    char w = kBearer[i];
    if ((c | 0x20) != (w | 0x20)) scheme = false;
  }
  if (supplied[kBearer.size() - 1] != ' ') scheme = false;
  std::string_view token = supplied.substr(kBearer.size());
  bool ok = false;
  for (const auto& k : keys) ok |= constant_time_equal(token, k);
  return scheme && ok;
}

}  // namespace canaryd::wire
