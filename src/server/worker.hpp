// One I/O thread: its io_context, its share of the request path
// (proxy::ThreadContext: upstream pools, assignment store, watched clients),
// its sessions. Nothing here is touched by another thread except through post().
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "proxy/context.hpp"
#include "server/app.hpp"
#include "server/parked.hpp"

namespace canaryd::server {

struct SessionHandle {
  boost::beast::tcp_stream* stream = nullptr;
  bool idle = true;  // waiting for the next request (safe to close on drain)
  // While idle between requests: when that began and how long it may last
  // (server.idle_timeout of its generation); the worker's sweep closes it after.
  std::chrono::steady_clock::time_point idle_since{};
  std::chrono::milliseconds idle_limit{0};
  bool reading = false;  // idle with its read (and buffer) queued
  bool demoted = false;  // the sweep ended that read: the session parks its socket
};

class Worker {
 public:
  Worker(App& app, int index) : app_(app), index_(index) {
    ctx_.emplace(ioc_.get_executor());
    idle_timer_.emplace(ioc_.get_executor());
  }
  ~Worker() {
    idle_timer_.reset();
    parked_.close_all();
    ctx_->shutdown();
  }

  boost::asio::io_context& ioc() { return ioc_; }
  App& app() { return app_; }
  int index() const { return index_; }
  proxy::ThreadContext& context() { return *ctx_; }

  void add_session(SessionHandle* s) { sessions_.insert(s); }
  // Parks an idle connection (counted in App::connections until its parked
  // wait ends): when it becomes readable, a new session starts on it; past
  // its idle limit or on a drain it is closed.
  void park(boost::asio::ip::tcp::socket socket, std::string peer_ip, const SessionHandle& idle);
  std::size_t parked() const { return parked_.size(); }
  std::uint64_t trims() const { return trims_; }
  void remove_session(SessionHandle* s) { sessions_.erase(s); }
  // Drain: close connections that wait for a request; busy ones close after
  // their response. `all` cuts busy ones too (past shutdown_grace).
  std::size_t close_sessions(bool all);
  // A session waits for its next request without a timer or a read buffer of
  // its own: this sweep (every kIdleSweep while sessions wait) closes those
  // idle past their limit, and take_buffer / give_buffer lend read buffers,
  // so an idle keep-alive connection holds no buffer at all.
  static constexpr std::chrono::milliseconds kIdleSweep{250};
  static constexpr std::chrono::milliseconds kKeepBuffer{250};  // idle this long: the buffer goes back
  void idle_started(SessionHandle* s, std::chrono::milliseconds limit);
  boost::beast::flat_buffer take_buffer();
  void give_buffer(boost::beast::flat_buffer&& buffer);

  // The current config generation, through a reference owned by this thread.
  // Every request copies it: had they all copied App::runtime, the two
  // threads would bounce one reference count (and atomic<shared_ptr>'s lock)
  // between their caches on every request. A request keeps its generation
  // alive through its copy; the thread's holder of the previous generation
  // goes when the last such request ends.
  const std::shared_ptr<const Runtime>& runtime();

 private:
  App& app_;
  int index_;
  // Before ioc_ (so it outlives it): destroying ioc_ destroys the coroutine
  // frames still parked in it (a cut shutdown), whose watches unregister from
  // the context. Its pools and timer are shut down first, in ~Worker.
  std::optional<proxy::ThreadContext> ctx_;
  // Also before ioc_: its parked sockets are closed in ~Worker, and ioc_'s
  // destruction then frees their cancelled waits into the table's entries.
  ParkedTable parked_;
  boost::asio::io_context ioc_{1};
  std::unordered_set<SessionHandle*> sessions_;
  std::vector<boost::beast::flat_buffer> spare_buffers_;  // at most kSpareBuffers, each emptied
  std::optional<boost::asio::steady_timer> idle_timer_;
  bool idle_armed_ = false;
  void arm_idle_sweep();
  void sweep_idle();
  std::shared_ptr<const Runtime> runtime_;
  std::uint64_t runtime_generation_ = 0;
  friend struct ParkedWait;
  void unpark(ParkedConnection* p, const boost::system::error_code& ec);
  void close_parked(ParkedConnection& p);
  // Gives a burst's freed heap back once its connections have all parked
  // (worker.cpp).
  static constexpr std::size_t kTrimAfterParks = 256;
  static constexpr std::chrono::seconds kTrimEvery{1};
  void maybe_trim(std::chrono::steady_clock::time_point now, std::size_t live_sessions);
  std::size_t trim_mark_ = 0;  // parked connections at the last trim (lowered as they leave)
  std::uint64_t trims_ = 0;
  std::chrono::steady_clock::time_point last_trim_{};
};

}  // namespace canaryd::server
