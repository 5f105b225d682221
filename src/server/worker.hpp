// One I/O thread: its io_context, its share of the request path
// (proxy::ThreadContext: upstream pools, assignment store, watched clients),
// its sessions. Nothing here is touched by another thread except through post().
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <optional>
#include <unordered_set>

#include "proxy/context.hpp"
#include "server/app.hpp"

namespace canaryd::server {

struct SessionHandle {
  boost::beast::tcp_stream* stream = nullptr;
  bool idle = true;  // waiting for the next request (safe to close on drain)
};

class Worker {
 public:
  Worker(App& app, int index) : app_(app), index_(index) { ctx_.emplace(ioc_.get_executor()); }
  ~Worker() { ctx_->shutdown(); }

  boost::asio::io_context& ioc() { return ioc_; }
  App& app() { return app_; }
  int index() const { return index_; }
  proxy::ThreadContext& context() { return *ctx_; }

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

 private:
  App& app_;
  int index_;
  // Before ioc_ (so it outlives it): destroying ioc_ destroys the coroutine
  // frames still parked in it (a cut shutdown), whose watches unregister from
  // the context. Its pools and timer are shut down first, in ~Worker.
  std::optional<proxy::ThreadContext> ctx_;
  boost::asio::io_context ioc_{1};
  std::unordered_set<SessionHandle*> sessions_;
  std::shared_ptr<const Runtime> runtime_;
  std::uint64_t runtime_generation_ = 0;
};

}  // namespace canaryd::server
