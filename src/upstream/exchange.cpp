#include "upstream/exchange.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include "http/headers.hpp"
#include "http/wire.hpp"
#include "upstream/response.hpp"

namespace canaryd::upstream {
namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t kReadBuffer = 16 * 1024;

std::string host_header(const config::UpstreamConfig& up) {
  bool default_port = (up.tls && up.port == 443) || (!up.tls && up.port == 80);
  std::string host = up.host.find(':') != std::string::npos ? "[" + up.host + "]" : up.host;
  return default_port ? host : host + ":" + std::to_string(up.port);
}

bool method_has_body(http::verb v) { return v == http::verb::post || v == http::verb::put || v == http::verb::patch; }

}  // namespace

bool Exchange::reusable() const {
  return conn && parser && upstream::reusable_after(*parser, status, head_only, conn->has_unread_bytes());
}

std::string upstream_target(const config::UpstreamConfig& up, std::string_view path, std::string_view query) {
  std::string t;
  t.reserve(up.base_path.size() + path.size() + query.size());
  t += up.base_path;
  t += path.substr(3);  // drop "/v1": base_path carries the provider's own prefix
  t += query;
  return t;
}

std::string upstream_head(const http::request<http::string_body>& req, std::string_view target, std::size_t body_size,
                          const UpstreamTarget& to) {
  const std::string host = host_header(*to.up);
  std::string head;
  head.reserve(1024);
  std::optional<std::size_t> length;
  if (body_size > 0 || method_has_body(req.method())) length = body_size;
  wire::append_upstream_request_head(head, req.method(), target, req.base(),
                                     {host, to.up->api_key_value, to.request_id, to.client_ip}, length);
  return head;
}

bool is_stream_response(const http::fields& f) {
  std::string_view ct = f[http::field::content_type];
  return ct.substr(0, 17) == "text/event-stream";
}

Error classify(const beast::error_code& ec, std::string_view what, const config::UpstreamConfig& up) {
  if (ec == beast::error::timeout)
    return {ErrorKind::timeout, "upstream '" + up.name + "' timed out " + std::string(what)};
  // A close or a reset before the answer: the upstream may have closed an idle
  // pooled connection just as it was reused, so the request may be sent again.
  const bool closed = ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
                      ec == net::error::broken_pipe || ec == net::ssl::error::stream_truncated;
  if (ec.category() == net::error::get_ssl_category() || ec == net::ssl::error::stream_truncated) {
    return {ErrorKind::tls_error,
            "TLS error with upstream '" + up.name + "' " + std::string(what) + ": " + ec.message(), closed};
  }
  if (ec == http::error::body_limit) {
    return {ErrorKind::response_too_large, "response from upstream '" + up.name + "' is over max_response_bytes"};
  }
  if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return {ErrorKind::bad_response, "malformed response from upstream '" + up.name + "': " + ec.message()};
  }
  return {ErrorKind::connect_error, "upstream '" + up.name + "' failed " + std::string(what) + ": " + ec.message(),
          closed};
}

namespace {

struct FinalHead {
  beast::error_code ec;      // transport or parse failure
  std::string_view refused;  // a head canaryd will not relay (static text), else empty
};

// Reads response heads until a final one (upstream/response.hpp: interim heads
// are dropped, 101 and endless interim heads refused). Each head gets its own
// parser (a parser serves one message); bytes after an interim head stay in
// the connection's buffer for the next. Sets ex.status.
net::awaitable<FinalHead> read_final_head(Exchange& ex, const config::UpstreamConfig& up, bool head_only) {
  for (;;) {
    ex.parser = std::make_unique<upstream::ResponseParser>();
    upstream::configure_parser(*ex.parser, up.max_response_bytes, head_only);
    auto [ec, n] = co_await ex.conn->visit(
        [&](auto& s) { return http::async_read_header(s, ex.conn->buffer, *ex.parser, kTuple); });
    if (ec) co_return FinalHead{ec, {}};
    ex.status = ex.parser->get().result_int();
    const upstream::HeadKind kind = upstream::classify_head(ex.status, ex.interim);
    if (kind == upstream::HeadKind::final) co_return FinalHead{};
    if (kind != upstream::HeadKind::interim) co_return FinalHead{{}, upstream::refusal_text(kind)};
  }
}

}  // namespace

net::awaitable<Exchange> start_exchange(std::shared_ptr<upstream::Pool> pool, const config::UpstreamConfig& up,
                                        std::string_view head, std::string_view body, bool head_only,
                                        upstream::Connection** current, const bool* abandoned) {
  Exchange ex;
  ex.pool = std::move(pool);
  ex.current = current;
  ex.head_only = head_only;
  ex.sent = Exchange::Clock::now();
  const auto deadline = ex.sent + up.timeout;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto lease = co_await ex.pool->acquire(attempt > 0);
    if (lease.error) {
      ex.error = std::move(lease.error);
      co_return ex;
    }
    if (abandoned && *abandoned) {
      ex.pool->release(std::move(lease.conn), true);  // unused: still good for the next request
      ex.error = {ErrorKind::connect_error, "the client left before upstream '" + up.name + "' was called"};
      co_return ex;
    }
    ex.conn = std::move(lease.conn);
    ex.interim = 0;
    ex.status = 0;
    *current = ex.conn.get();
    ex.conn->tcp().expires_at(deadline);
    std::array<net::const_buffer, 2> out{net::buffer(head), net::buffer(body)};
    auto [wec, wn] = co_await ex.conn->visit([&](auto& s) { return net::async_write(s, out, kTuple); });
    beast::error_code ec = wec;
    std::string_view refused;
    if (!ec) {
      FinalHead fh = co_await read_final_head(ex, up, head_only);
      ec = fh.ec;
      refused = fh.refused;
    }
    if (!ec && !refused.empty()) {
      ex.status = 0;
      ex.release(false);
      ex.error = {ErrorKind::bad_response,
                  "malformed response from upstream '" + up.name + "': " + std::string(refused)};
      co_return ex;
    }
    if (!ec) {
      ex.first_byte = Exchange::Clock::now();
      co_return ex;
    }
    Error failed = classify(ec, "before responding", up);
    ex.release(false);
    // Retried once on a fresh connection only when a reused one failed before
    // any answer (an interim head counts as an answer).
    if (!(lease.reused && ex.interim == 0 && failed.retry_safe)) {
      ex.error = std::move(failed);
      co_return ex;
    }
  }
  ex.error = {ErrorKind::connect_error, "upstream '" + up.name + "' closed the connection"};
  co_return ex;
}

net::awaitable<Error> read_whole_body(Exchange& ex, const config::UpstreamConfig& up, std::string& body) {
  auto& p = *ex.parser;
  auto& res = p.get();
  const auto deadline = ex.sent + up.timeout;
  if (auto len = p.content_length()) body.reserve(static_cast<std::size_t>(*len));
  // A close-delimited body is counted here (upstream::body_to_eof);
  // Content-Length and chunked bodies keep Beast's exact check.
  const bool to_eof = upstream::body_to_eof(p);
  if (to_eof) p.body_limit(boost::none);
  char buf[kReadBuffer];
  while (!p.is_done()) {
    res.body().data = buf;
    res.body().size = sizeof buf;
    ex.conn->tcp().expires_at(deadline);
    auto [ec, n] = co_await ex.conn->visit([&](auto& s) { return http::async_read(s, ex.conn->buffer, p, kTuple); });
    body.append(buf, sizeof buf - res.body().size);
    if (to_eof && body.size() > up.max_response_bytes) ec = http::error::body_limit;
    if (ec == http::error::need_buffer) continue;
    if (ec) {
      ex.release(false);
      co_return classify(ec, "while sending the body", up);
    }
  }
  ex.release(ex.reusable());
  co_return Error{};
}

}  // namespace canaryd::upstream
