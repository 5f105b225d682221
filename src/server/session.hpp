// A client connection: reads requests with limits and deadlines, answers
// canaryd's own endpoints and hands proxied routes to the proxy.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "server/app.hpp"
#include "server/worker.hpp"

namespace canaryd::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

net::awaitable<void> run_session(Worker& worker, net::ip::tcp::socket socket);

enum class RouteKind { split, control_only };

// Everything about one request the proxy needs.
struct RequestContext {
  App& app;
  Worker& worker;
  std::shared_ptr<const Runtime> rt;
  beast::tcp_stream& client;
  http::request<http::string_body>& req;
  std::string peer_ip;
  std::string request_id;
  std::string path;   // the target's path, normalised (http_target.hpp)
  std::string_view query;  // the target's query from '?' on, as sent (a view into req)
  std::chrono::steady_clock::time_point received;  // request fully read
  bool keep_alive = true;
  std::uint64_t rollout_epoch = 0;  // the rollout epoch the request was split under (set by proxy())
};

// Proxies one request; returns whether the client connection may be reused.
net::awaitable<bool> proxy(RequestContext& ctx, RouteKind route);

// Writes one of canaryd's own error responses (OpenAI shape).
net::awaitable<bool> write_error(RequestContext& ctx, ErrorKind kind, std::string_view message);

}  // namespace canaryd::server
