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
  r.services.access_log->write(a);
}

}  // namespace

net::awaitable<bool> write_error(Request& r, ErrorKind kind, std::string_view message) {
  http::response<http::string_body> res{static_cast<http::status>(http_status(kind)), r.req.version()};
  res.set(http::field::content_type, "application/json");
  res.set("X-Request-ID", r.request_id);
  res.body() = openai_error_body(kind, message);
  res.keep_alive(r.keep_alive);
  res.prepare_payload();
  r.client.expires_after(r.rt->config->server.idle_timeout);
  auto [ec, n] = co_await http::async_write(r.client, res, kTuple);
  log_refusal(r, kind);
  co_return !ec && r.keep_alive;
}

}  // namespace canaryd::proxy
