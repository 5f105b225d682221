// Shares the rollout state across replicas through Redis (SPEC §5, issue
// requirement 6). Runs on the control thread's io_context with its own Redis
// connections, never on an I/O thread, so the request path never waits on it.
//
//   {<ns>}:rollout         rollout::encode(Status), the shared state with its version
//   {<ns>}:rollout:lease   the advance lease: the replica id, SET PX, renewed every poll
//   {<ns>}:rollout:events  a stream (XADD MAXLEN ~100) with one entry per written change
//
// One RolloutSync per experiment (issue 17). The experiment "default" (the
// top-level split) keeps the keys above; any other experiment E has its own
// three, {<ns>:E}:rollout, {<ns>:E}:rollout:lease and {<ns>:E}:rollout:events
// (one hash tag per experiment: its script touches its slot alone), and no
// layout from before issue 16 to keep in step.
//
// The three keys share the hash tag {<ns>}, so on Redis Cluster they live in
// one slot and the compare-and-set, the lease check and the event stay one
// script (issue 16). canaryd before issue 16 used <ns>:rollout... (no tag):
// on a single node or Sentinel both layouts are kept in step (every script
// reads the newer state of the two, writes both, takes the lease in both), so
// old and new replicas share one state through a rolling upgrade; on a
// cluster, where the old layout never worked, a state found only under the
// old key is copied to the new one (SET NX) when first read.
//
// Every write is a compare-and-set in one Lua script: stored version ==
// expected (or no key), and for an analysis advance the caller still holds
// the lease; else the script answers the stored state and the controller
// re-applies its queued operations on it. Changes reach the other replicas
// through a blocking XREAD on the events stream (a dedicated connection:
// RedisClient is request/response and cannot take SUBSCRIBE's push messages,
// while XREAD BLOCK is an ordinary reply), with a read every 500 ms as the
// safety net. While Redis is down each replica keeps its last known state,
// still rolls back locally, advances nothing (no lease), and writes its
// changes once Redis is back.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "canaryd/config.hpp"
#include "rollout/controller.hpp"
#include "store/redis_client.hpp"

namespace canaryd::store {

class RolloutSync : public std::enable_shared_from_this<RolloutSync> {
 public:
  // How often the stored state is read and the lease renewed.
  static constexpr std::chrono::milliseconds kPollInterval{500};
  // How long start-up waits for the stored state before serving anyway (the
  // canary gets no traffic until it has been read).
  static constexpr std::chrono::milliseconds kStartupWait{3000};
  // How long one XREAD blocks on the events stream.
  static constexpr std::chrono::milliseconds kEventsBlock{1000};

  // Puts `controller` in shared mode. Nothing runs until start() and the
  // executor's io_context runs. `on_error` counts Redis failures (op "rollout").
  // `topology`: Sentinel/Cluster, the process's watcher (Stores::topology());
  // null = one of its own for its two connections. Throws at start-up only
  // (an unreadable redis.ca_file).
  // `controller.experiment()` names the keys.
  static std::shared_ptr<RolloutSync> create(boost::asio::any_io_executor executor, const config::Config& config,
                                             rollout::RolloutController& controller,
                                             store::RedisClient::ErrorSink on_error = {},
                                             std::shared_ptr<RedisTopology> topology = nullptr);

  void start();
  // Control thread: stops the loops and the Redis connections.
  void stop();
  // The stored state has been read (or found absent) at least once.
  bool loaded() const;
  const std::string& replica_id() const { return replica_id_; }
  // Lease time to live: long enough to ride out a few missed renewals, short
  // enough that a dead holder's successor takes over within seconds:
  // max(3s, 3 x analysis.interval), from the interval in force (a reload that
  // changes it applies at the next renewal).
  std::chrono::milliseconds lease_ttl() const;

  struct Private {};
  RolloutSync(Private, boost::asio::any_io_executor executor, const config::Config& config,
              rollout::RolloutController& controller, store::RedisClient::ErrorSink on_error,
              std::shared_ptr<RedisTopology> topology);

  // The keys, for tests and docs: the hash-tagged layout and the one before it.
  struct Keys {
    std::string state, lease, events;
  };
  // `experiment`: "default" (or "") is the top-level split's, whose keys are
  // those of canaryd before issue 17.
  static Keys keys(const std::string& ns, const std::string& experiment = "");
  static Keys legacy_keys(const std::string& ns);

 private:
  using Loop = boost::asio::awaitable<void> (*)(std::shared_ptr<RolloutSync>);
  void spawn(Loop loop);
  static boost::asio::awaitable<void> run(std::shared_ptr<RolloutSync> self);
  static boost::asio::awaitable<void> watch(std::shared_ptr<RolloutSync> self);
  boost::asio::awaitable<void> sync_once();
  boost::asio::awaitable<bool> renew_lease();
  boost::asio::awaitable<bool> copy_legacy_state();
  void wake();
  std::vector<std::string> lease_args() const;
  std::vector<std::string> cas_args(const rollout::RolloutController::SharedWrite& write) const;
  std::vector<std::string> read_args() const;
  std::vector<std::string> xread_args(const std::string& last) const;

  boost::asio::any_io_executor executor_;
  rollout::RolloutController& controller_;
  Keys keys_;
  Keys legacy_;
  // Single node and Sentinel: the layout before issue 16 is kept in step too.
  bool both_layouts_ = true;
  bool legacy_checked_ = false;  // cluster: the old layout's state was looked for
  std::string replica_id_;
  std::shared_ptr<store::RedisClient> client_;   // state, lease
  std::shared_ptr<store::RedisClient> events_;   // XREAD BLOCK only
  std::shared_ptr<RedisTopology> own_topology_;  // when no process watcher was given
  boost::asio::steady_timer wake_timer_;
  boost::asio::steady_timer events_timer_;
  bool wake_pending_ = false;
  bool stopped_ = false;
};

}  // namespace canaryd::store
