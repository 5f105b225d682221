// One call to an upstream: write the request head and body on a pooled
// connection, read the response header, then (for a whole body) the rest.
// Shared by the proxy (which relays the answer to its client) and the shadow
// (which only reads it), so the retry of a stale pooled connection, the
// deadlines and the error classes are the same for both.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "canaryd/config.hpp"
#include "canaryd/error.hpp"
#include "upstream/connection.hpp"
#include "upstream/response.hpp"

namespace canaryd::upstream {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

struct Exchange {
  using Clock = std::chrono::steady_clock;
  Error error;
  std::shared_ptr<upstream::Pool> pool;
  std::unique_ptr<upstream::Connection> conn;
  std::unique_ptr<upstream::ResponseParser> parser;
  Clock::time_point sent;        // before acquiring a connection
  Clock::time_point first_byte;  // response header read
  int status = 0;
  bool head_only = false;                    // a HEAD request: the answer is bodiless whatever the upstream sends
  int interim = 0;                           // 1xx interim responses read and dropped before the final one
  upstream::Connection** current = nullptr;  // the caller's "connection in use", cleared on release

  // The connection may carry another request (upstream::reusable_after:
  // complete, keep-alive, nothing received past the response, not bodiless).
  bool reusable() const;

  // Returns the connection to its pool (kept only if `reusable`) and clears
  // `*current`, so that nothing closes it in the pool by mistake.
  void release(bool reusable) {
    if (current && *current == conn.get()) *current = nullptr;
    if (conn) pool->release(std::move(conn), reusable);
  }
};

// The upstream request head for a client request: SPEC §3 header rules, the
// arm's host and key, and a Content-Length for `body_size`.
struct UpstreamTarget {
  const config::UpstreamConfig* up = nullptr;
  std::string_view request_id;
  std::string_view client_ip;
};
std::string upstream_head(const http::request<http::string_body>& req, std::string_view target, std::size_t body_size,
                          const UpstreamTarget& to);

// "/v1/chat/completions?x" -> the upstream's base path + the rest.
std::string upstream_target(const config::UpstreamConfig& up, std::string_view path, std::string_view query);

bool is_stream_response(const http::fields& f);

Error classify(const beast::error_code& ec, std::string_view what, const config::UpstreamConfig& up);

// Sends head + body and reads the response header, within up.timeout. Interim
// 1xx responses (100, 102, 103) are read and dropped; a 101 is refused (a
// bad_response: canaryd does not tunnel). The body limit is
// up.max_response_bytes from the start, so a Content-Length over it fails here.
// A pooled connection the upstream had already closed fails before any response
// byte; that case is retried once on a fresh connection. `*current` names the
// connection in use (for a watcher that closes it when the client leaves);
// `*abandoned`, when given and set once a connection is in hand (the client
// left while it was being made), stops before anything is sent.
net::awaitable<Exchange> start_exchange(std::shared_ptr<upstream::Pool> pool, const config::UpstreamConfig& up,
                                        std::string_view head, std::string_view body, bool head_only,
                                        upstream::Connection** current, const bool* abandoned = nullptr);

// Reads the rest of a whole (non-event-stream) body into `body`, bounded by
// up.max_response_bytes, then returns the connection to its pool (kept only
// when reusable()).
net::awaitable<Error> read_whole_body(Exchange& ex, const config::UpstreamConfig& up, std::string& body);

}  // namespace canaryd::upstream
