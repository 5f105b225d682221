// What the request path works with besides the request itself: the services
// every I/O thread shares (Services, owned by the daemon) and one I/O thread's
// own resources (ThreadContext: its upstream pools, its assignment store, the
// clients it watches). server/ owns and wires them; proxy/ only uses them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <optional>

#include "admin/experiment.hpp"
#include "canaryd/config.hpp"
#include "proxy/runtime.hpp"
#include "upstream/connection.hpp"

namespace canaryd::metrics {
class Metrics;
}
namespace canaryd::rollout {
class RolloutController;
}
namespace canaryd::log {
class AccessLog;
class AccessBatch;
struct AccessRecord;
}  // namespace canaryd::log
namespace canaryd::admin {
class Report;
}
namespace canaryd::shadow {
class Shadow;
}
namespace canaryd::store {
class AssignmentStore;
}

namespace canaryd::proxy {

// Shared by every I/O thread (each pointer may be null: that part is off).
struct Services {
  metrics::Metrics* metrics = nullptr;
  // Each experiment's rollout, report (per-arm tokens/cost/TTFB for
  // /admin/report) and history, indexed like config.experiments; set before
  // the server starts, never changed after.
  admin::Experiments experiments;
  log::AccessLog* access_log = nullptr;
  shadow::Shadow* shadow = nullptr;  // mirrored control requests to the canary (null: shadow off)
  int threads = 1;                   // I/O threads (pools divide max_connections among them)
  std::atomic<std::int64_t> inflight{0};
};

class WatchList;

// A proxied call waiting on its upstream, watched for its client leaving.
// Registered for the call's duration (RAII); the thread checks every watched
// client socket every WatchList::kSweep with one recv(MSG_PEEK): on EOF or a
// reset it marks the call gone and closes its upstream connection, so the
// provider stops generating. A per-request async_wait on the client socket
// (what this replaced) cost an epoll_ctl syscall and a cancellation-slot race
// on every request; the sweep costs nothing per request and one peek per
// watched call per tick. Bytes waiting on the socket are a pipelined request,
// not a disconnect.
class ClientWatch {
 public:
  ClientWatch(WatchList& list, int fd, upstream::Connection** current);
  ~ClientWatch();
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  bool gone() const { return gone_; }
  const bool* gone_flag() const { return &gone_; }
  // The upstream part is over (only the client is written to now): a client
  // that closes after reading its answer must not count as gone.
  void stop();

 private:
  friend class WatchList;
  WatchList& list_;
  int fd_;
  upstream::Connection** current_;
  std::size_t index_ = 0;
  bool gone_ = false;
  bool watched_ = false;
};

// One I/O thread's watched calls and the timer that sweeps them; the timer
// runs only while something is watched, so an idle thread does not wake up.
class WatchList {
 public:
  static constexpr std::chrono::milliseconds kSweep{50};

  explicit WatchList(const boost::asio::any_io_executor& ex) : timer_(std::in_place, ex) {}
  void watch(ClientWatch* w);
  void unwatch(ClientWatch* w);
  // Drops the timer before its io_context goes; the list itself must outlive
  // the io_context (its parked coroutine frames unregister their watches
  // when it destroys them).
  void shutdown() { timer_.reset(); }

 private:
  void arm();
  void sweep();

  std::vector<ClientWatch*> watches_;
  std::optional<boost::asio::steady_timer> timer_;
  bool armed_ = false;
};

// One I/O thread's share of the request path. Nothing here is touched by
// another thread. It outlives the thread's io_context (see WatchList); call
// shutdown() before that io_context is destroyed.
class ThreadContext {
 public:
  explicit ThreadContext(const boost::asio::any_io_executor& ex);
  ~ThreadContext();
  // Flushes the access lines, drops the pools and the timers, before the
  // thread's io_context goes.
  void shutdown();

  // One access line into this thread's batch (log::AccessBatch), flushed
  // within its interval; `log` is the process's access log (Services).
  void access(log::AccessLog& log, const log::AccessRecord& record);
  // Hands the waiting access lines to the writer (at shutdown, once the thread has stopped).
  void flush_access();

  // The pool for an upstream of the given config generation. Pools of an older
  // generation stay alive as long as a request holds them. `threads` divides
  // the upstream's max_connections.
  std::shared_ptr<upstream::Pool> pool(const Runtime& rt, const config::UpstreamConfig& up, int threads);
  // Pool::compact_idle over this thread's pools (the worker's idle sweep).
  std::size_t compact_idle_pools(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::duration after);

  store::AssignmentStore* store = nullptr;

 private:
  boost::asio::any_io_executor executor_;
  std::uint64_t pools_generation_ = 0;
  std::map<std::string, std::shared_ptr<upstream::Pool>> pools_;
  std::unique_ptr<log::AccessBatch> access_;
  std::optional<boost::asio::steady_timer> access_flush_;

 public:
  WatchList watches;
};

}  // namespace canaryd::proxy
