// One I/O thread: its io_context, its upstream connection pools, its
// sessions. Nothing here is touched by another thread except through post().
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>

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

class Worker {
 public:
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

 private:
  App& app_;
  int index_;
  boost::asio::io_context ioc_{1};
  std::uint64_t pools_generation_ = 0;
  std::map<std::string, std::shared_ptr<upstream::Pool>> pools_;
  std::unordered_set<SessionHandle*> sessions_;
};

}  // namespace canaryd::server
