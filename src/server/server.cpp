#include "server/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.hpp"
#include "server/session.hpp"

namespace canaryd::server {

namespace beast = boost::beast;

namespace net = boost::asio;
using tcp = net::ip::tcp;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

Server::Server(App& app, net::io_context& control, int threads) : app_(app), control_(control), acceptor_(control) {
  for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>(app, i));
  app_.threads = threads;
}

Server::~Server() { join(); }

void Server::listen(const config::ServerConfig& sc) {
  beast::error_code ec;
  auto address = net::ip::make_address(sc.listen_host, ec);
  if (ec) throw std::runtime_error("server.listen: invalid address '" + sc.listen_host + "'");
  tcp::endpoint ep(address, sc.listen_port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep, ec);
  if (ec) throw std::runtime_error("server.listen: cannot bind " + sc.listen + ": " + ec.message());
  acceptor_.listen(4096, ec);
  if (ec) throw std::runtime_error("server.listen: cannot listen on " + sc.listen + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
}

void Server::start() {
  for (auto& w : workers_) {
    guards_.push_back(
        std::make_unique<net::executor_work_guard<net::io_context::executor_type>>(w->ioc().get_executor()));
    threads_.emplace_back([w = w.get()] { w->ioc().run(); });
  }
  net::co_spawn(control_, accept_loop(), net::detached);
}

net::awaitable<void> Server::accept_loop() {
  while (acceptor_.is_open()) {
    Worker& w = *workers_[next_++ % workers_.size()];
    auto [ec, socket] = co_await acceptor_.async_accept(w.ioc(), kTuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) break;
      // EMFILE and friends: back off a little instead of spinning.
      log::warn("accept failed", {{"error", ec.message()}});
      net::steady_timer t(control_, std::chrono::milliseconds(50));
      co_await t.async_wait(kTuple);
      continue;
    }
    auto rt = app_.current();
    if (app_.connections.load(std::memory_order_relaxed) >= rt->config->server.max_connections) {
      app_.rejected_connections.fetch_add(1, std::memory_order_relaxed);
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    // Started on its worker's thread, so its frames come from that thread's
    // heap and recycling caches: allocated here, they would interleave with
    // the sockets' reactor state (also allocated here, and long-lived) and
    // keep this heap's pages from going back once the frames are freed.
    net::post(w.ioc(), [&w, s = std::move(socket)]() mutable {
      net::co_spawn(w.ioc(), run_session(w, std::move(s), {}, /*resumed=*/false), net::detached);
    });
  }
}

void Server::shutdown(std::function<void(std::size_t)> done) {
  if (stopping_) return;
  stopping_ = true;
  net::co_spawn(control_, drain(std::move(done)), net::detached);
}

net::awaitable<void> Server::drain(std::function<void(std::size_t)> done) {
  auto rt = app_.current();
  const auto& sc = rt->config->server;
  app_.draining.store(true);
  log::info("draining: /ready answers 503", {{"drain_delay_ms", sc.drain_delay.count()}});
  net::steady_timer timer(control_, sc.drain_delay);
  co_await timer.async_wait(kTuple);
  beast::error_code ec;
  acceptor_.close(ec);
  log::info("listener closed; waiting for in-flight requests", {{"connections", app_.connections.load()},
                                                                {"inflight", app_.inflight.load()},
                                                                {"shutdown_grace_ms", sc.shutdown_grace.count()}});
  for (auto& w : workers_) net::post(w->ioc(), [w = w.get()] { w->close_sessions(false); });
  auto deadline = std::chrono::steady_clock::now() + sc.shutdown_grace;
  while (app_.connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(kTuple);
    // Keep-alive connections that finished their request since the last pass.
    for (auto& w : workers_) net::post(w->ioc(), [w = w.get()] { w->close_sessions(false); });
  }
  std::size_t cut = static_cast<std::size_t>(std::max<std::int64_t>(0, app_.inflight.load()));
  if (app_.connections.load() > 0) cut_now();
  done(cut);
}

void Server::cut_now() {
  beast::error_code ec;
  acceptor_.close(ec);
  for (auto& w : workers_) net::post(w->ioc(), [w = w.get()] { w->close_sessions(true); });
}

void Server::finish_accepting() {
  beast::error_code ec;
  acceptor_.close(ec);
  control_.restart();
  control_.poll();
}

void Server::join() {
  guards_.clear();
  for (auto& w : workers_) w->ioc().stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace canaryd::server
