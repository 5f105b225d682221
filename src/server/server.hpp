// The daemon: I/O threads (one io_context each, Envoy's worker model), the
// listener that hands connections round-robin to them, and the staged
// shutdown of SPEC §6 (fail readiness, wait drain_delay, close the listener,
// let in-flight requests finish within shutdown_grace, then cut).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <thread>
#include <vector>

#include "server/app.hpp"
#include "server/worker.hpp"

namespace canaryd::server {

class Server {
 public:
  // `control` runs the listener, signals and timers (the main thread).
  Server(App& app, boost::asio::io_context& control, int threads);
  ~Server();

  // Binds server.listen; throws std::runtime_error naming the address.
  void listen(const config::ServerConfig& sc);
  std::uint16_t port() const { return port_; }
  void start();  // spawns the I/O threads and the accept loop

  // Staged shutdown; calls `done` on the control thread at the end.
  void shutdown(std::function<void(std::size_t cut)> done);
  // A second signal: cut everything now.
  void cut_now();

  std::vector<std::unique_ptr<Worker>>& workers() { return workers_; }
  // Stops the I/O threads and joins them; the io_contexts stay alive (and
  // own what is left of their coroutines) until the Server is destroyed.
  void join();
  // After the control loop has stopped: closes the listener and runs the
  // control loop's ready handlers once, so that the cancelled accept (which
  // holds a socket of a worker's io_context) completes before the workers go.
  void finish_accepting();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> drain(std::function<void(std::size_t)> done);

  App& app_;
  boost::asio::io_context& control_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>> guards_;
  std::size_t next_ = 0;
  bool stopping_ = false;
};

}  // namespace canaryd::server
