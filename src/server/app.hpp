// What every I/O thread shares: the current config generation, metrics, the
// rollout controller, the assignment store, and the lifecycle flags.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "proxy/context.hpp"

namespace canaryd::store {
class Stores;
}

namespace canaryd::server {

using proxy::Runtime;

// The daemon's shared state: the request path's services (proxy::Services),
// what only canaryd's own endpoints use, the lifecycle flags and the current
// config generation.
struct App : proxy::Services {
  // Every I/O thread's store (each worker holds its own): /health, served on
  // one thread, reports all of them (each thread has its own Redis connection).
  const store::Stores* stores = nullptr;
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};
  std::atomic<std::int64_t> connections{0};
  std::atomic<std::int64_t> parked_connections{0};  // of those, idle and parked (server/parked.hpp)
  std::atomic<std::int64_t> rejected_connections{0};

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
