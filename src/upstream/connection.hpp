// One connection to an upstream, plain HTTP or TLS, and the per-thread pool
// that keeps them alive between requests. Each I/O thread has its own pools
// (Envoy's worker model), so nothing here is shared between threads.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

#include "canaryd/config.hpp"
#include "canaryd/error.hpp"

namespace canaryd::upstream {

namespace net = boost::asio;
namespace beast = boost::beast;

class Connection {
 public:
  using Plain = beast::tcp_stream;
  using Tls = beast::ssl_stream<beast::tcp_stream>;

  explicit Connection(const net::any_io_executor& ex) : stream_(std::in_place_type<Plain>, ex) {}
  Connection(const net::any_io_executor& ex, net::ssl::context& tls) : stream_(std::in_place_type<Tls>, ex, tls) {}
  // A plain connection rebuilt around the socket of a compacted idle one.
  explicit Connection(net::ip::tcp::socket&& socket) : stream_(std::in_place_type<Plain>, std::move(socket)) {}

  beast::tcp_stream& tcp() {
    if (auto* t = std::get_if<Tls>(&stream_)) return beast::get_lowest_layer(*t);
    return std::get<Plain>(stream_);
  }
  bool is_tls() const { return std::holds_alternative<Tls>(stream_); }
  Tls& tls() { return std::get<Tls>(stream_); }

  // Calls f with the stream to read and write HTTP on (plain or TLS).
  template <class F>
  decltype(auto) visit(F&& f) {
    return std::visit(std::forward<F>(f), stream_);
  }

  // Response bytes received and not consumed: in the read buffer, or (TLS)
  // decrypted and waiting in OpenSSL. Any of them means the connection is out
  // of step with its requests.
  bool has_unread_bytes() const;
  // The peer closed it, or sent something unasked (unread bytes, or bytes
  // waiting in the socket): not safe to reuse.
  bool stale() const;
  void close();

  beast::flat_buffer buffer;   // read buffer, kept across responses
  std::uint64_t requests = 0;  // responses completed on this connection
  std::chrono::steady_clock::time_point idle_since{};

 private:
  std::variant<Plain, Tls> stream_;
};

// TLS client context for one upstream: system CAs (+ ca_file), peer
// verification unless tls_verify is false. Throws at start-up on a bad ca_file.
std::shared_ptr<net::ssl::context> make_tls_context(const config::UpstreamConfig& cfg);

class Pool {
 public:
  // `cap` is this thread's share of the upstream's max_connections.
  Pool(net::any_io_executor ex, const config::UpstreamConfig& cfg, std::shared_ptr<net::ssl::context> tls,
       std::uint32_t cap, std::optional<std::uint32_t> idle_cap = std::nullopt);  // default: the config's
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  struct Lease {
    Error error;
    std::unique_ptr<Connection> conn;
    bool reused = false;
  };

  // An idle keep-alive connection, else a new one (resolve, connect, CONNECT
  // through the egress proxy, TLS handshake), waiting up to `pool_wait` for a
  // slot when the pool is at its cap. `fresh` skips idle connections.
  net::awaitable<Lease> acquire(bool fresh = false);
  // Returns a connection: kept for reuse only after a complete keep-alive
  // response, otherwise closed.
  void release(std::unique_ptr<Connection> conn, bool reusable);

  // Plain idle connections idle for `after` or longer keep only their socket:
  // the stream (its two timers), the read buffer and the Connection are
  // freed, and rebuilt when the socket is next leased. After a burst the
  // connections the pool keeps were allocated amid the burst's frames, each
  // piece pinning a heap page of its own once the rest is freed; this lets
  // those pages go back (Worker's sweep calls it before it trims). Returns
  // how many it compacted. TLS connections keep their state (OpenSSL's).
  std::size_t compact_idle(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::duration after);

  const config::UpstreamConfig& config() const { return cfg_; }
  std::size_t open() const { return open_; }
  std::size_t idle() const { return idle_.size(); }
  std::uint64_t connects() const { return connects_; }

 private:
  net::awaitable<Lease> connect();
  void wake_one();

  net::any_io_executor ex_;
  const config::UpstreamConfig cfg_;  // a copy: the pool may outlive its config generation
  std::shared_ptr<net::ssl::context> tls_;
  std::uint32_t cap_;
  std::uint32_t idle_cap_;  // idle connections kept; one released beyond it is closed
  struct Idle {
    std::unique_ptr<Connection> conn;          // null once compacted
    std::optional<net::ip::tcp::socket> bare;  // the compacted connection's socket
    std::uint64_t requests = 0;
    std::chrono::steady_clock::time_point idle_since{};
    void close();
    bool stale() const;
  };
  std::vector<Idle> idle_;
  static std::unique_ptr<Connection> revive(Idle& idle);
  std::size_t open_ = 0;  // idle + leased + connecting
  std::uint64_t connects_ = 0;
  std::deque<net::steady_timer*> waiters_;
};

}  // namespace canaryd::upstream
