// What every I/O thread shares: the current config generation, metrics, the
// rollout controller, the assignment store, and the lifecycle flags.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/config.hpp"
#include "common/access_log.hpp"
#include "split/split.hpp"

namespace canaryd::metrics {
class Metrics;
}
namespace canaryd::store {
class AssignmentStore;
class Stores;
}

namespace canaryd::server {

class RolloutController;
class Report;
class History;
class Shadow;

// Everything derived from one config generation. Swapped as a whole on reload;
// a request keeps the generation it started with.
struct Runtime {
  explicit Runtime(std::shared_ptr<const config::Config> cfg);

  std::shared_ptr<const config::Config> config;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> tls;  // by upstream name
  split::Splitter splitter;
  std::uint64_t generation = 0;
};

struct App {
  metrics::Metrics* metrics = nullptr;
  RolloutController* rollout = nullptr;
  AccessLog* access_log = nullptr;
  Report* report = nullptr;  // per-arm tokens/cost/TTFB for /admin/report
  History* history = nullptr;  // 15 minutes of per-arm samples for /admin/history and /admin/ui
  Shadow* shadow = nullptr;    // mirrored control requests to the canary, compared (null: shadow off)
  // Every I/O thread's store (each worker holds its own): /health, served on
  // one thread, reports all of them (each thread has its own Redis connection).
  const store::Stores* stores = nullptr;
  int threads = 1;  // I/O threads (pools divide max_connections among them)
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};
  std::atomic<std::int64_t> connections{0};
  std::atomic<std::int64_t> rejected_connections{0};
  std::atomic<std::int64_t> inflight{0};

  // Under a mutex, not std::atomic<shared_ptr>: libstdc++ 12's version
  // unlocks a load with a relaxed store, which ThreadSanitizer rightly reports
  // against a concurrent store. It is off the hot path (Worker::runtime()
  // takes a reference once per generation).
  std::shared_ptr<const Runtime> current() const {
    std::lock_guard lock(runtime_mutex_);
    return runtime_;
  }
  // Swaps in a new generation (start-up, SIGHUP). I/O threads notice the
  // generation number change and take their own reference (Worker::runtime()).
  void publish(std::shared_ptr<const Runtime> rt) {
    const std::uint64_t g = rt->generation;
    {
      std::lock_guard lock(runtime_mutex_);
      runtime_ = std::move(rt);
    }
    generation.store(g, std::memory_order_release);
  }
  std::atomic<std::uint64_t> generation{0};

 private:
  mutable std::mutex runtime_mutex_;
  std::shared_ptr<const Runtime> runtime_;
};

}  // namespace canaryd::server
