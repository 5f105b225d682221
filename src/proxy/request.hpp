// One request on its way through the proxy: what the session read, and the
// services and thread resources it is served with. The session builds it;
// proxy() runs its life; write_error() answers with canaryd's own error.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "canaryd/error.hpp"
#include "proxy/context.hpp"

namespace canaryd::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

enum class RouteKind { split, control_only };

struct Request {
  Services& services;
  ThreadContext& thread;
  std::shared_ptr<const Runtime> rt;
  beast::tcp_stream& client;
  http::request<http::string_body>& req;
  std::string peer_ip;
  std::string request_id;
  std::string path;                                // the target's path, normalised (http/target.hpp)
  std::string_view query;                          // the target's query from '?' on, as sent (a view into req)
  std::chrono::steady_clock::time_point received;  // request fully read
  bool keep_alive = true;
  std::uint64_t rollout_epoch = 0;  // the rollout epoch the request was split under (set by proxy())
};

// Proxies one request; returns whether the client connection may be reused.
net::awaitable<bool> proxy(Request& r, RouteKind route);

// The one writer of canaryd's own error responses: the status and OpenAI body
// of the kind's row in the error table, `extra` headers (request id, arm
// headers), keep-alive or Connection: close. Returns whether the write
// succeeded.
net::awaitable<bool> send_error(beast::tcp_stream& stream, unsigned version, bool keep_alive, ErrorKind kind,
                                std::string_view message, const http::fields& extra, std::chrono::milliseconds timeout);

// send_error for a request canaryd answers itself (a bad body, an unknown
// route, the admin API's refusals), with its access log line.
net::awaitable<bool> write_error(Request& r, ErrorKind kind, std::string_view message);

}  // namespace canaryd::proxy
