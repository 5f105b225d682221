#include "upstream/connection.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

namespace canaryd::upstream {

namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using namespace net::experimental::awaitable_operators;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

namespace {

// Idle pooled connections older than this are closed rather than reused:
// providers close idle keep-alive connections after a while themselves.
constexpr auto kMaxIdle = std::chrono::seconds(30);

Error fail(ErrorKind kind, std::string message) { return Error{kind, std::move(message)}; }

}  // namespace

bool Connection::has_unread_bytes() const {
  if (buffer.size() > 0) return true;
  if (auto* t = std::get_if<Tls>(&stream_)) return SSL_pending(const_cast<Tls*>(t)->native_handle()) > 0;
  return false;
}

bool Connection::stale() const {
  auto& self = const_cast<Connection&>(*this);
  auto& sock = self.tcp().socket();
  if (!sock.is_open() || has_unread_bytes()) return true;
  char byte;
  ssize_t n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  // 0: the peer closed; > 0: bytes nobody asked for (or a TLS close_notify).
  return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

void Connection::close() {
  beast::error_code ec;
  tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
  tcp().close();
}

std::shared_ptr<ssl::context> make_tls_context(const config::UpstreamConfig& cfg) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx->set_default_verify_paths();
  if (!cfg.ca_file.empty()) {
    beast::error_code ec;
    ctx->load_verify_file(cfg.ca_file, ec);
    if (ec) {
      throw std::runtime_error("upstreams." + cfg.name + ".ca_file: cannot load " + cfg.ca_file + ": " + ec.message());
    }
  }
  ctx->set_verify_mode(cfg.tls_verify ? ssl::verify_peer : ssl::verify_none);
  // Resumed sessions skip most of a full handshake when a pooled connection is replaced.
  SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_CLIENT);
  return ctx;
}

Pool::Pool(net::any_io_executor ex, const config::UpstreamConfig& cfg, std::shared_ptr<ssl::context> tls,
           std::uint32_t cap, std::optional<std::uint32_t> idle_cap)
    : ex_(std::move(ex)),
      cfg_(cfg),
      tls_(std::move(tls)),
      cap_(cap == 0 ? 1 : cap),
      idle_cap_(idle_cap.value_or(cfg.max_idle_connections)) {}

Pool::~Pool() {
  for (auto& c : idle_) c.close();
}

void Pool::Idle::close() {
  if (conn) {
    conn->close();
  } else if (bare) {
    beast::error_code ec;
    bare->shutdown(tcp::socket::shutdown_both, ec);
    bare->close(ec);
  }
}

bool Pool::Idle::stale() const {
  if (conn) return conn->stale();
  if (!bare || !bare->is_open()) return true;
  char byte;
  ssize_t n = ::recv(const_cast<tcp::socket&>(*bare).native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

std::unique_ptr<Connection> Pool::revive(Idle& idle) {
  if (idle.conn) return std::move(idle.conn);
  auto c = std::make_unique<Connection>(std::move(*idle.bare));
  c->requests = idle.requests;
  c->idle_since = idle.idle_since;
  return c;
}

std::size_t Pool::compact_idle(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::duration after) {
  std::size_t n = 0;
  for (auto& i : idle_) {
    if (!i.conn || i.conn->is_tls() || now - i.idle_since < after) continue;
    // An idle connection has no operation pending and no unread byte (release
    // checked), so releasing its socket from the stream loses nothing.
    i.requests = i.conn->requests;
    i.bare.emplace(i.conn->tcp().release_socket());
    i.conn.reset();
    ++n;
  }
  return n;
}

void Pool::wake_one() {
  if (waiters_.empty()) return;
  net::steady_timer* t = waiters_.front();
  waiters_.pop_front();
  t->cancel();
}

void Pool::release(std::unique_ptr<Connection> conn, bool reusable) {
  if (!conn) return;
  if (reusable && idle_.size() < idle_cap_ && conn->tcp().socket().is_open() && !conn->has_unread_bytes()) {
    conn->idle_since = std::chrono::steady_clock::now();
    Idle idle;
    idle.idle_since = conn->idle_since;
    idle.conn = std::move(conn);
    idle_.push_back(std::move(idle));
  } else {
    conn->close();
    --open_;
  }
  wake_one();
}

net::awaitable<Pool::Lease> Pool::acquire(bool fresh) {
  auto deadline = std::chrono::steady_clock::now() + cfg_.pool_wait;
  for (;;) {
    if (!fresh) {
      auto now = std::chrono::steady_clock::now();
      while (!idle_.empty()) {
        Idle idle = std::move(idle_.back());  // LIFO: the warmest one
        idle_.pop_back();
        // Peeked every time (one syscall): besides a close, the upstream may
        // have sent bytes after its response, and those would be read as the
        // next user's answer (the stale-reuse retry only covers a close).
        if (now - idle.idle_since > kMaxIdle || idle.stale()) {
          idle.close();
          --open_;
          continue;
        }
        co_return Lease{{}, revive(idle), true};
      }
    } else if (open_ >= cap_ && !idle_.empty()) {
      // Make room for the fresh connection by closing an idle one.
      idle_.front().close();
      idle_.erase(idle_.begin());
      --open_;
    }
    if (open_ < cap_) {
      ++open_;
      Lease lease = co_await connect();
      if (lease.error) {
        --open_;
        wake_one();
      }
      co_return lease;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    net::steady_timer timer(ex_, deadline);
    waiters_.push_back(&timer);
    auto [ec] = co_await timer.async_wait(kTuple);
    if (!ec) {
      // Timed out: take ourselves off the queue.
      std::erase(waiters_, &timer);
      break;
    }
  }
  co_return Lease{fail(ErrorKind::overloaded, "all " + std::to_string(cap_) + " connections to upstream '" + cfg_.name +
                                                  "' are busy (pool_wait exceeded)"),
                  nullptr, false};
}

net::awaitable<Pool::Lease> Pool::connect() {
  ++connects_;
  const bool via_proxy = !cfg_.proxy_host.empty();
  const std::string& host = via_proxy ? cfg_.proxy_host : cfg_.host;
  const std::uint16_t port = via_proxy ? cfg_.proxy_port : cfg_.port;
  auto conn = cfg_.tls ? std::make_unique<Connection>(ex_, *tls_) : std::make_unique<Connection>(ex_);

  // The resolver runs getaddrinfo off the I/O thread; it has no timeout of its
  // own, so race it against the connect deadline.
  tcp::resolver resolver(ex_);
  net::steady_timer timer(ex_, cfg_.connect_timeout);
  auto race = co_await (resolver.async_resolve(host, std::to_string(port), kTuple) || timer.async_wait(kTuple));
  if (race.index() == 1) {
    co_return Lease{fail(ErrorKind::timeout, "resolving " + host + " timed out"), nullptr, false};
  }
  auto [rec, endpoints] = std::get<0>(race);
  if (rec) {
    co_return Lease{fail(ErrorKind::connect_error, "cannot resolve " + host + ": " + rec.message()), nullptr, false};
  }

  auto& tcp_stream = conn->tcp();
  tcp_stream.expires_after(cfg_.connect_timeout);
  auto [cec, ep] = co_await tcp_stream.async_connect(endpoints, kTuple);
  if (cec) {
    if (cec == beast::error::timeout) {
      co_return Lease{fail(ErrorKind::timeout, "connecting to " + host + ":" + std::to_string(port) + " timed out"),
                      nullptr, false};
    }
    co_return Lease{
        fail(ErrorKind::connect_error, "cannot connect to " + host + ":" + std::to_string(port) + ": " + cec.message()),
        nullptr, false};
  }
  tcp_stream.socket().set_option(tcp::no_delay(true));

  if (via_proxy) {
    // HTTP CONNECT tunnel through the egress proxy.
    std::string authority = cfg_.host + ":" + std::to_string(cfg_.port);
    http::request<http::empty_body> req{http::verb::connect, authority, 11};
    req.set(http::field::host, authority);
    auto [wec, wn] = co_await http::async_write(tcp_stream, req, kTuple);
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // a 2xx answer to CONNECT has no body: the tunnel starts
    beast::error_code hec = wec;
    if (!hec) std::tie(hec, std::ignore) = co_await http::async_read_header(tcp_stream, conn->buffer, parser, kTuple);
    if (hec) {
      co_return Lease{fail(hec == beast::error::timeout ? ErrorKind::timeout : ErrorKind::connect_error,
                           "egress proxy " + host + ":" + std::to_string(port) + ": " + hec.message()),
                      nullptr, false};
    }
    if (parser.get().result_int() / 100 != 2) {
      co_return Lease{fail(ErrorKind::connect_error, "egress proxy refused CONNECT " + authority + ": " +
                                                         std::to_string(parser.get().result_int())),
                      nullptr, false};
    }
    if (conn->buffer.size() > 0) {
      co_return Lease{fail(ErrorKind::bad_response, "egress proxy sent data before the tunnel opened"), nullptr, false};
    }
  }

  if (cfg_.tls) {
    auto& tls = conn->tls();
    if (!SSL_set_tlsext_host_name(tls.native_handle(), cfg_.host.c_str())) {
      co_return Lease{fail(ErrorKind::tls_error, "cannot set SNI for " + cfg_.host), nullptr, false};
    }
    if (cfg_.tls_verify) tls.set_verify_callback(ssl::host_name_verification(cfg_.host));
    auto [hec] = co_await tls.async_handshake(ssl::stream_base::client, kTuple);
    if (hec) {
      if (hec == beast::error::timeout) {
        co_return Lease{fail(ErrorKind::timeout, "TLS handshake with " + cfg_.host + " timed out"), nullptr, false};
      }
      std::string why = hec.message();
      long vr = SSL_get_verify_result(tls.native_handle());
      if (vr != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(vr) + ")";
      co_return Lease{fail(ErrorKind::tls_error, "TLS handshake with " + cfg_.host + " failed: " + why), nullptr,
                      false};
    }
  }
  tcp_stream.expires_never();
  co_return Lease{{}, std::move(conn), false};
}

}  // namespace canaryd::upstream
