// Where the primaries are, for Redis behind Sentinel and for Redis Cluster
// (issue 16). One RedisTopology per process is shared by every I/O thread's
// RedisClient: it alone talks to the sentinels (or asks the cluster for its
// slot map), and after each change it posts a notification to every client's
// own executor, where the client reconnects (Sentinel) or re-routes
// (Cluster). So a failover costs one subscription per sentinel per process,
// not per thread, and every thread follows within the same instant.
//
//   Sentinel  per sentinel: a connection subscribed to +switch-master and a
//             connection for SENTINEL MASTER <name>. All sentinels are asked
//             at once and the answer with the highest config-epoch wins (a
//             sentinel cut off during a failover still names the old
//             primary). A +switch-master message is applied at once and
//             confirmed by asking again.
//   Cluster   CLUSTER SLOTS from one node, the next on failure (the seeds,
//             then every primary seen); the map is replaced when it differs.
//
// Clients ask for a new look with refresh() (a READONLY reply, a MOVED, a lost
// connection); requests are coalesced and spaced kMinRefreshInterval apart.
// Without a request the topology looks again every kPollInterval. Everything
// is asynchronous on the topology's executor, bounded by timeouts; state read
// by clients (primary(), slot_map()) is a snapshot under a mutex.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "canaryd/config.hpp"
#include "store/redis_client.hpp"

namespace boost::asio::ssl {
class context;
}

namespace canaryd::store {

class RedisLink;

class RedisTopology : public std::enable_shared_from_this<RedisTopology> {
 public:
  using Executor = boost::asio::any_io_executor;

  static constexpr std::size_t kSlots = 16384;
  static constexpr std::chrono::milliseconds kMinRefreshInterval{100};
  static constexpr std::chrono::milliseconds kPollInterval{5000};
  // A query to a sentinel or a cluster node: not on the request path, so
  // longer than a pin's redis.timeout, and short enough that a dead one does
  // not hold a failover up.
  static constexpr std::chrono::milliseconds kMinQueryTimeout{500};

  struct SlotMap {
    static constexpr std::uint16_t kNoOwner = 0xffff;
    std::vector<Endpoint> primaries;
    std::vector<std::uint16_t> owner = std::vector<std::uint16_t>(kSlots, kNoOwner);  // slot -> primaries index
    bool operator==(const SlotMap&) const = default;
  };

  struct Options {
    RedisClient::EventSink on_event;
    std::shared_ptr<boost::asio::ssl::context> tls;  // required when the config says rediss
  };

  // For a sentinel or cluster config (null for standalone). Starts at once
  // on `executor` (nothing runs until its io_context does).
  static std::shared_ptr<RedisTopology> create(Executor executor, const config::RedisConfig& config, Options options);
  ~RedisTopology();
  RedisTopology(const RedisTopology&) = delete;
  RedisTopology& operator=(const RedisTopology&) = delete;

  // Any thread.
  config::RedisMode mode() const { return config_.mode; }
  Endpoint primary() const;                         // Sentinel: empty before the first answer
  std::shared_ptr<const SlotMap> slot_map() const;  // Cluster: null before the first answer
  std::uint64_t version() const;                    // bumped by every change
  std::string last_error() const;                   // why the last look failed ("" after a good one)
  // Runs `on_change` on `executor` after every change, as long as `owner` lives.
  void watch(Executor executor, std::weak_ptr<void> owner, std::function<void()> on_change);
  void refresh();
  void stop();

  const Executor& executor() const { return executor_; }

 private:
  struct Private {};

 public:
  RedisTopology(Private, Executor executor, const config::RedisConfig& config, Options options);

 private:
  struct Watcher {
    Executor executor;
    std::weak_ptr<void> owner;
    std::function<void()> on_change;
  };
  struct SentinelAnswer;

  void start();
  static boost::asio::awaitable<void> run(std::shared_ptr<RedisTopology> self);
  boost::asio::awaitable<bool> look();
  boost::asio::awaitable<bool> ask_sentinels();
  boost::asio::awaitable<bool> ask_cluster();
  static boost::asio::awaitable<void> ask_sentinel(std::shared_ptr<RedisTopology> self, std::size_t index,
                                                   std::shared_ptr<std::vector<SentinelAnswer>> answers,
                                                   std::shared_ptr<boost::asio::steady_timer> done,
                                                   std::shared_ptr<std::size_t> pending);
  void on_sentinel_message(const Reply& message);
  void set_primary(const Endpoint& next, std::string_view how);
  void set_slot_map(std::shared_ptr<const SlotMap> next);
  void notify();
  void fail_look(std::string why);
  std::shared_ptr<RedisLink> make_link(std::function<Endpoint()> endpoint, std::string role,
                                       std::vector<std::string> setup = {});

  Executor executor_;
  config::RedisConfig config_;
  Options options_;
  std::chrono::milliseconds query_timeout_;

  // Sentinel: one query and one subscribed link per sentinel. Cluster: one
  // query link whose endpoint walks `candidates_`.
  std::vector<std::shared_ptr<RedisLink>> query_links_;
  std::vector<std::shared_ptr<RedisLink>> subscriptions_;
  std::vector<Endpoint> candidates_;
  std::size_t cursor_ = 0;

  boost::asio::steady_timer wake_;
  bool refresh_pending_ = false;
  bool stopped_ = false;
  // +switch-master messages heard (on our executor): a query in flight when
  // one arrives answered before that switch, so its answer is discarded.
  std::uint64_t switches_heard_ = 0;
  std::string logged_error_;

  mutable std::mutex mu_;  // guards the snapshot below and watchers_
  Endpoint primary_;
  std::shared_ptr<const SlotMap> slot_map_;
  std::uint64_t version_ = 0;
  std::string last_error_;
  std::vector<Watcher> watchers_;
};

}  // namespace canaryd::store
