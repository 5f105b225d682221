// The store factory main.cpp calls: builds the in-process store (one, shared
// by every I/O thread) or, with a `redis:` section, one RedisStore per I/O
// thread on that thread's io_context, its errors counted in
// ai_proxy_redis_errors_total{op}. With Sentinel or Cluster, one
// RedisTopology (on the first thread's io_context) watches the primaries for
// every thread's client: one set of sentinel connections per process.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "canaryd/clock.hpp"
#include "canaryd/config.hpp"
#include "store/redis_client.hpp"
#include "store/store.hpp"

namespace boost::asio {
class io_context;
}
namespace canaryd::metrics {
class Metrics;
}

namespace canaryd::store {

class RedisStore;

class Stores {
 public:
  Stores();
  Stores(Stores&&) noexcept;
  Stores& operator=(Stores&&) noexcept;
  ~Stores();

  // The store I/O thread `index` uses. Redis: creates that thread's RedisStore
  // on `ioc` (its connect loop starts when ioc runs); memory: the shared
  // MemoryStore. Call from the thread that owns Stores, before or while the
  // io_contexts run.
  AssignmentStore* for_thread(std::size_t index, boost::asio::io_context& ioc);
  std::string kind() const;  // "memory" or "redis"
  // Every thread's store is healthy (Redis connected and answering in time):
  // what /health reports, whichever thread serves it. Any thread may call it:
  // the stores are all made before the io_contexts run.
  bool healthy() const;
  // Stops the Redis clients: posts stop() to each one's io_context, so it is
  // safe from any thread. Pins still in flight then fail fast.
  void stop();
  // Sentinel/Cluster: the process's topology watcher (made by the first
  // for_thread() call), for other Redis users of the process to share; null
  // before that, and for a single node.
  const std::shared_ptr<RedisTopology>& topology() const { return topology_; }

 private:
  friend Stores make_stores(const config::Config& cfg, std::size_t threads, metrics::Metrics* metrics,
                            const Clock& clock);

  std::unique_ptr<MemoryStore> memory_;
  std::optional<config::RedisConfig> redis_;
  RedisClient::ErrorSink on_error_;
  RedisClient::EventSink on_event_;
  std::shared_ptr<boost::asio::ssl::context> tls_;  // shared by every thread's client
  std::shared_ptr<RedisTopology> topology_;         // shared by every thread's client
  std::vector<std::unique_ptr<RedisStore>> redis_stores_;
};

// Throws std::runtime_error at start-up when rediss:// cannot be set up
// (an unreadable redis.ca_file).
Stores make_stores(const config::Config& cfg, std::size_t threads, metrics::Metrics* metrics, const Clock& clock);

}  // namespace canaryd::store
