// One I/O thread: its io_context, its upstream connection pools, its
// sessions. Nothing here is touched by another thread except through post().
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "server/app.hpp"
#include "upstream/connection.hpp"

namespace canaryd::store {
class AssignmentStore;
}

namespace canaryd::server {

struct SessionHandle {
  boost::beast::tcp_stream* stream = nullptr;
  bool idle = true;  // waiting for the next request (safe to close on drain)
};

// A proxied call waiting on its upstream, watched for its client leaving.
// Registered for the call's duration (RAII); the worker checks every watched
// client socket every kSweep with one recv(MSG_PEEK): on EOF or a reset it
// marks the call gone and closes its upstream connection, so the provider
// stops generating. A per-request async_wait on the client socket (what this
// replaced) cost an epoll_ctl syscall and a cancellation-slot race on every
// request; the sweep costs nothing per request and one peek per watched call
// per tick. Bytes waiting on the socket are a pipelined request, not a
// disconnect.
class Worker;
class ClientWatch {
 public:
  ClientWatch(Worker& worker, int fd, upstream::Connection** current);
  ~ClientWatch();
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  bool gone() const { return gone_; }
  const bool* gone_flag() const { return &gone_; }
  // The upstream part is over (only the client is written to now): a client
  // that closes after reading its answer must not count as gone.
  void stop();

 private:
  friend class Worker;
  Worker& worker_;
  int fd_;
  upstream::Connection** current_;
  std::size_t index_ = 0;
  bool gone_ = false;
  bool watched_ = false;
};

class Worker {
 public:
  static constexpr std::chrono::milliseconds kSweep{50};

  Worker(App& app, int index) : app_(app), index_(index) {}

  boost::asio::io_context& ioc() { return ioc_; }
  App& app() { return app_; }
  int index() const { return index_; }

  // The pool for an upstream of the given config generation. Pools of an older
  // generation stay alive as long as a request holds them.
  std::shared_ptr<upstream::Pool> pool(const Runtime& rt, const config::UpstreamConfig& up, int threads);

  store::AssignmentStore* store = nullptr;

  void add_session(SessionHandle* s) { sessions_.insert(s); }
  void remove_session(SessionHandle* s) { sessions_.erase(s); }
  // Drain: close connections that wait for a request; busy ones close after
  // their response. `all` cuts busy ones too (past shutdown_grace).
  std::size_t close_sessions(bool all);

  // The current config generation, through a reference owned by this thread.
  // Every request copies it: had they all copied App::runtime, the two
  // threads would bounce one reference count (and atomic<shared_ptr>'s lock)
  // between their caches on every request. A request keeps its generation
  // alive through its copy; the thread's holder of the previous generation
  // goes when the last such request ends.
  const std::shared_ptr<const Runtime>& runtime();

  void watch(ClientWatch* w);
  void unwatch(ClientWatch* w);

 private:
  App& app_;
  int index_;
  // Before ioc_: destroying ioc_ destroys the coroutine frames still parked
  // in it (a cut shutdown), whose ClientWatch unregisters from this list.
  std::vector<ClientWatch*> watches_;
  boost::asio::io_context ioc_{1};
  std::uint64_t pools_generation_ = 0;
  std::map<std::string, std::shared_ptr<upstream::Pool>> pools_;
  std::unordered_set<SessionHandle*> sessions_;
  boost::asio::steady_timer sweep_timer_{ioc_};
  std::shared_ptr<const Runtime> runtime_;
  std::uint64_t runtime_generation_ = 0;
  bool sweep_armed_ = false;

  void arm_sweep();
  void sweep();
};

}  // namespace canaryd::server
