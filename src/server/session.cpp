#include "server/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <tuple>

#include "http/headers.hpp"
#include "http/strict.hpp"
#include "http/target.hpp"
#include "proxy/request.hpp"
#include "server/endpoints.hpp"

namespace canaryd::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);

// The session in its worker's table and in App::connections. A resumed
// (parked) connection was counted when it first came; one that parks again
// stays counted, by the worker's parked table.
struct SessionGuard {
  Worker& worker;
  SessionHandle handle;
  bool counted = true;
  SessionGuard(Worker& w, beast::tcp_stream* s, bool already_counted) : worker(w), handle{s, true} {
    worker.add_session(&handle);
    if (!already_counted) worker.app().connections.fetch_add(1, std::memory_order_relaxed);
  }
  ~SessionGuard() {
    worker.remove_session(&handle);
    if (counted) worker.app().connections.fetch_sub(1, std::memory_order_relaxed);
  }
};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// After a refusal the client may still be sending (the rest of a body over
// the limit): closing with unread input makes the kernel answer with a reset,
// which can destroy the refusal before the client reads it. So, like nginx's
// lingering_close, stop sending, then read and discard for a bounded time and
// amount until the client closes.
net::awaitable<void> lingering_close(beast::tcp_stream& stream) {
  constexpr auto kLingerTime = std::chrono::seconds(2);
  constexpr std::size_t kLingerBytes = 4 * 1024 * 1024;
  beast::error_code ec;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
  const auto until = std::chrono::steady_clock::now() + kLingerTime;
  char scratch[4096];
  std::size_t total = 0;
  while (!ec && total < kLingerBytes) {
    stream.expires_at(until);
    auto [rec, n] = co_await stream.async_read_some(net::buffer(scratch), kTuple);
    ec = rec;
    total += n;
  }
}

// Answers a request the parser refused, then the connection closes: after a
// framing error nothing more on it can be trusted.
net::awaitable<void> refuse(beast::tcp_stream& stream, ErrorKind kind, std::string_view message,
                            std::chrono::milliseconds timeout) {
  const http::fields none;
  if (co_await proxy::send_error(stream, 11, /*keep_alive=*/false, kind, message, none, timeout)) {
    co_await lingering_close(stream);
  }
}

std::size_t field_count(const http::fields& f) { return static_cast<std::size_t>(std::distance(f.begin(), f.end())); }

// Chunked trailers are dropped: Beast merges them into the header fields after
// the body, where they would pick the arm (X-Canary), the request id, the
// sticky key, or be forwarded upstream unchecked by the strict head rules.
void drop_trailers(http::fields& f, std::size_t header_fields) {
  auto it = f.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(header_fields));
  while (it != f.end()) it = f.erase(it);
}

// Bytes the parser may hold unconsumed: a head, or a chunked body's trailer
// section (Beast does not bound trailers by header_limit); past it a read
// fails with buffer_overflow (431).
constexpr std::size_t kReadChunk = 4096;

bool quiet_close(const beast::error_code& ec) {
  // closed, slow client cut off, or drain: nothing to answer
  return ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
         ec == net::error::operation_aborted || ec == net::error::connection_reset;
}

// Reads the head until the strict check (http/strict.hpp, on the raw bytes,
// before Beast parses it) says complete. False: the connection ends (closed,
// or refused here).
net::awaitable<bool> read_checked_head(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                       const config::ServerConfig& sc) {
  stream.expires_after(sc.header_timeout);  // the whole head within header_timeout
  auto bytes = [&] { return std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size()); };
  auto head = wire::strict::check_request_head(bytes());
  while (head.status == wire::strict::HeadStatus::incomplete && buffer.size() <= sc.max_header_bytes) {
    auto [rec, n] = co_await stream.async_read_some(buffer.prepare(kReadChunk), kTuple);
    if (rec) co_return false;  // closed, slow client cut off, or drain
    buffer.commit(n);
    head = wire::strict::check_request_head(bytes());
  }
  if (head.status == wire::strict::HeadStatus::bad) {
    co_await refuse(stream, ErrorKind::bad_request, std::string("malformed HTTP request: ") + std::string(head.reason),
                    sc.idle_timeout);
    co_return false;
  }
  if (head.status == wire::strict::HeadStatus::incomplete) {
    co_await refuse(stream, ErrorKind::header_too_large, "request header fields too large", sc.idle_timeout);
    co_return false;
  }
  co_return true;
}

// One whole request: the checked head, Beast's parse of it, 100-continue,
// the body within max_body_bytes, trailers dropped. nullopt: the connection
// ends (closed, or refused here).
net::awaitable<std::optional<http::request<http::string_body>>> read_request(beast::tcp_stream& stream,
                                                                             beast::flat_buffer& buffer,
                                                                             const config::ServerConfig& sc) {
  std::optional<http::request<http::string_body>> none;
  if (!co_await read_checked_head(stream, buffer, sc)) co_return none;
  const std::string over_limit = "request body is over the limit of " + std::to_string(sc.max_body_bytes) + " bytes";
  http::request_parser<http::string_body> parser;
  parser.header_limit(sc.max_header_bytes);
  parser.body_limit(sc.max_body_bytes);
  auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, kTuple);
  if (hec) {
    if (hec == http::error::header_limit) {
      co_await refuse(stream, ErrorKind::header_too_large, "request header fields too large", sc.idle_timeout);
    } else if (hec == http::error::body_limit) {
      // Beast checks a declared Content-Length against body_limit while
      // reading the header: the body is over the limit and still unread.
      co_await refuse(stream, ErrorKind::payload_too_large, over_limit, sc.idle_timeout);
    } else if (!quiet_close(hec)) {
      co_await refuse(stream, ErrorKind::bad_request, "malformed HTTP request: " + hec.message(), sc.idle_timeout);
    }
    co_return none;
  }
  if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
    http::response<http::empty_body> cont{http::status::continue_, 11};
    stream.expires_after(sc.idle_timeout);
    auto [cec, cn] = co_await http::async_write(stream, cont, kTuple);
    if (cec) co_return none;
  }
  const std::size_t header_fields = field_count(parser.get());
  if (!parser.is_done()) {
    // The body may be large and the link slow: the idle timeout bounds each read.
    stream.expires_after(sc.idle_timeout);
    auto [bec, bn] = co_await http::async_read(stream, buffer, parser, kTuple);
    if (bec) {
      if (bec == http::error::body_limit) {
        co_await refuse(stream, ErrorKind::payload_too_large, over_limit, sc.idle_timeout);
      } else if (bec == http::error::buffer_overflow) {
        co_await refuse(stream, ErrorKind::header_too_large,
                        "request trailer fields (or a chunk header) over server.max_header_bytes", sc.idle_timeout);
      } else if (!quiet_close(bec)) {
        co_await refuse(stream, ErrorKind::bad_request, "malformed HTTP request body: " + bec.message(),
                        sc.idle_timeout);
      }
      co_return none;
    }
  }
  stream.expires_never();
  std::optional<http::request<http::string_body>> req(parser.release());
  drop_trailers(*req, header_fields);
  co_return req;
}

// Routes one request on its normalised path: a path that leaves /v1/ (or
// cannot be normalised) is refused and never forwarded, /v1/* is proxied,
// everything else is canaryd's own. Returns whether the connection goes on.
net::awaitable<bool> dispatch(Worker& worker, const std::shared_ptr<const Runtime>& rt, beast::tcp_stream& stream,
                              http::request<http::string_body>& req, const std::string& peer_ip) {
  App& app = worker.app();
  wire::target::Target target = wire::target::normalize(req.target());
  proxy::Request ctx{app,
                     worker.context(),
                     rt,
                     stream,
                     req,
                     peer_ip,
                     wire::request_id_from(req["X-Request-ID"]),
                     {},
                     {},
                     std::chrono::steady_clock::now(),
                     req.keep_alive()};
  if (app.draining.load(std::memory_order_relaxed)) ctx.keep_alive = false;
  ctx.path = std::move(target.path);
  ctx.query = target.query;
  const bool api = starts_with(req.target(), "/v1/");
  if (!target.ok || (api && !starts_with(ctx.path, "/v1/"))) {
    // The upstream would get a path outside base_url's prefix with canaryd's key.
    if (!target.ok) ctx.path = "-";
    std::string why = target.ok ? std::string("the request path leaves /v1/ once its dot-segments are removed")
                                : std::string(target.reason);
    co_return co_await proxy::write_error(ctx, ErrorKind::bad_request, "invalid request path: " + why);
  }
  if (api) co_return co_await handle_api(ctx);
  co_return co_await handle_own(worker, ctx);
}

// One request read and answered. Its own frame: while the session waits for
// the next request, nothing of this one (the parsed request, its fields and
// body) is held.
net::awaitable<bool> serve_one(Worker& worker, const std::shared_ptr<const Runtime>& rt, beast::tcp_stream& stream,
                               beast::flat_buffer& buffer, const std::string& peer_ip) {
  std::optional<http::request<http::string_body>> req = co_await read_request(stream, buffer, rt->config->server);
  // Two statements: g++ 12 miscompiles a co_await in the right operand of &&.
  if (!req) co_return false;
  co_return co_await dispatch(worker, rt, stream, *req, peer_ip);
}

}  // namespace

net::awaitable<void> run_session(Worker& worker, net::ip::tcp::socket socket, std::string peer_ip, bool resumed) {
  App& app = worker.app();
  beast::error_code ec;
  if (peer_ip.empty()) {
    socket.set_option(net::ip::tcp::no_delay(true), ec);
    auto remote = socket.remote_endpoint(ec);
    peer_ip = ec ? std::string("0.0.0.0") : remote.address().to_string();
    if (remote.address().is_v6() && remote.address().to_v6().is_v4_mapped()) {
      peer_ip = net::ip::make_address_v4(net::ip::v4_mapped, remote.address().to_v6()).to_string();
    }
  }

  beast::tcp_stream stream(std::move(socket));
  SessionGuard guard(worker, &stream, resumed);
  beast::flat_buffer buffer = worker.take_buffer();
  for (bool first = true;; first = false) {
    auto rt = worker.runtime();
    const auto& sc = rt->config->server;
    guard.handle.idle = true;
    if (app.draining.load(std::memory_order_relaxed) && !first && buffer.size() == 0) break;
    // Between requests (a pipelined one would already be in the buffer): no
    // timer of its own, the worker's sweep closes it past idle_timeout. A
    // client that sends again soon finds the read already queued with the
    // buffer (no syscall). Idle past Worker::kKeepBuffer, the sweep ends that
    // read and the session ends: its buffer goes back to the pool, its socket
    // to the worker's parked table, where it waits for readability without
    // a coroutine frame, a tcp_stream or a buffer; a new session starts on it
    // when the client sends again.
    if (!first && buffer.size() == 0) {
      worker.idle_started(&guard.handle, sc.idle_timeout);
      stream.expires_never();
      guard.handle.reading = true;
      auto [rec, n] = co_await stream.async_read_some(buffer.prepare(kReadChunk), kTuple);
      guard.handle.reading = false;
      if (rec == net::error::operation_aborted && guard.handle.demoted && guard.handle.idle_limit.count() != 0) {
        worker.give_buffer(std::move(buffer));
        worker.park(stream.release_socket(), std::move(peer_ip), guard.handle);
        guard.counted = false;  // the parked table holds its count now
        co_return;
      }
      if (rec) break;  // closed, idle timeout or a drain cut
      buffer.commit(n);
    }
    buffer.max_size(std::max<std::size_t>(sc.max_header_bytes, buffer.size()) + kReadChunk);
    guard.handle.idle = false;
    if (!co_await serve_one(worker, rt, stream, buffer, peer_ip)) break;
  }
  worker.give_buffer(std::move(buffer));
  stream.expires_after(std::chrono::seconds(1));
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
  stream.close();
}

}  // namespace canaryd::server
