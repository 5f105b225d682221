#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>

#include "common/access_log.hpp"
#include "proxy/request.hpp"

namespace canaryd::proxy {
namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);

// Requests canaryd answers itself get an access line too (SPEC §6: one per request).
void log_refusal(const Request& r, ErrorKind kind) {
  if (!r.services.access_log || !r.rt->config->server.access_log) return;
  log::AccessRecord a;
  a.request_id = r.request_id;
  a.method = r.req.method_string();
  a.path = r.path;
  a.status = http_status(kind);
  a.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - r.received).count();
  a.error = error_name(kind);
  r.thread.access(*r.services.access_log, a);
}

}  // namespace

net::awaitable<bool> send_error(beast::tcp_stream& stream, unsigned version, bool keep_alive, ErrorKind kind,
                                std::string_view message, const http::fields& extra,
                                std::chrono::milliseconds timeout) {
  http::response<http::string_body> res{static_cast<http::status>(http_status(kind)), version};
  res.set(http::field::content_type, "application/json");
  for (const auto& f : extra) res.set(f.name_string(), f.value());
  res.body() = openai_error_body(kind, message);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  stream.expires_after(timeout);
  auto [ec, n] = co_await http::async_write(stream, res, kTuple);
  co_return !ec;
}

net::awaitable<bool> write_error(Request& r, ErrorKind kind, std::string_view message) {
  http::fields extra;
  extra.set("X-Request-ID", r.request_id);
  const bool written = co_await send_error(r.client, r.req.version(), r.keep_alive, kind, message, extra,
                                           r.rt->config->server.idle_timeout);
  log_refusal(r, kind);
  co_return written&& r.keep_alive;
}

}  // namespace canaryd::proxy
