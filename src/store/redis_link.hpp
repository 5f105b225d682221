// One connection to one Redis node and the loop that keeps it up: the part of
// the Redis client that talks to a socket (internal to src/store). RedisClient
// routes commands over one link (a single node, the Sentinel-discovered
// primary) or several (one per Redis Cluster primary); RedisTopology uses
// links to ask the sentinels and the cluster where the primaries are.
//
// A link belongs to one executor (an I/O thread's io_context, no locks): every
// method except healthy() must run there. Commands are pipelined and answered
// FIFO; each waits on its own timer until its deadline. While disconnected a
// command fails at once and a background loop reconnects with capped
// exponential backoff (50 ms .. 2 s, jittered). Where to connect is asked
// anew before every attempt (Options::endpoint), so a link follows a failover
// by reconnecting: reconnect() drops the current connection (or attempt, or
// backoff wait) and connects again at once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "store/redis_client.hpp"

namespace boost::asio::ssl {
class context;
}

namespace canaryd::store {

class RedisLink : public std::enable_shared_from_this<RedisLink> {
 public:
  using Executor = boost::asio::any_io_executor;
  using Clock = std::chrono::steady_clock;

  struct Options {
    // Asked before each connection attempt; an empty endpoint (nothing known
    // yet, e.g. no sentinel has answered) fails the attempt.
    std::function<Endpoint()> endpoint;
    std::string username;  // AUTH [username] password, when password or username is set
    std::string password;
    int db = 0;                                      // SELECT unless 0
    std::shared_ptr<boost::asio::ssl::context> tls;  // null = plain TCP
    bool tls_verify = true;
    std::chrono::milliseconds connect_timeout{1000};
    // A connection whose oldest unanswered command is older than this has
    // stopped answering and is replaced.
    std::chrono::milliseconds stall_limit{1000};
    // Sent right after AUTH/SELECT, before the connection is published (a
    // subscription: SUBSCRIBE <channel>); empty = nothing.
    std::vector<std::string> setup;
    // A reply no command waits for (a message on a subscribed connection).
    // Unset: such a reply means the pipeline is out of step, and the
    // connection is dropped.
    std::function<void(Reply)> on_push;
    std::function<void()> on_connected;                   // a connection was published
    std::function<void(std::string_view why)> on_failed;  // an attempt failed or a live connection died
    RedisClient::ErrorSink on_error;                      // each failed attempt, as op "connect"
    std::string role = "redis";                           // for the log: redis, sentinel, cluster node
  };

  // The options every link to a Redis data node starts from: the config's
  // user, password, db (0 on a cluster) and TLS, and the deadlines derived
  // from redis.timeout. Sentinel links change the credentials.
  static Options node_options(const config::RedisConfig& config, std::shared_ptr<boost::asio::ssl::context> tls,
                              std::function<Endpoint()> endpoint, std::string role);
  static std::shared_ptr<RedisLink> create(Executor executor, Options options);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // Sends one encoded command and waits for its reply until `deadline`. Never
  // throws. Fails at once when not connected. `asking`: an ASKING goes first
  // on the same connection (a Cluster ASK redirection), its reply dropped.
  // `cmd` is copied into the write buffer when the awaitable starts, so it
  // must live until then (a named string, not a temporary of the co_await).
  boost::asio::awaitable<Reply> exec(std::string_view cmd, Clock::time_point deadline, bool asking = false);
  // Connected now, or by `deadline` when an attempt is in progress (a link
  // just made for a redirection); false at once while backing off.
  boost::asio::awaitable<bool> ready(Clock::time_point deadline);
  // Where to connect has changed: drop the connection, the attempt or the
  // backoff wait, and connect again at once.
  void reconnect();
  void stop();

  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }  // any thread
  bool connected() const { return conn_ != nullptr; }
  bool stopped() const { return stopped_; }
  // The node of the current connection (empty when not connected).
  const Endpoint& endpoint() const { return connected_to_; }
  std::uint64_t connects() const { return connects_; }
  std::size_t in_flight() const;
  const std::string& last_error() const { return last_error_; }

  static std::string encode(const std::vector<std::string>& argv);

 private:
  struct Connection;
  struct Waiter;
  struct Attempt;
  struct Private {};

 public:
  RedisLink(Private, Executor executor, Options options);

 private:
  std::shared_ptr<Waiter> enqueue(const std::shared_ptr<Connection>& conn, std::string_view cmd, bool asking);
  static boost::asio::awaitable<Reply> await_reply(std::shared_ptr<RedisLink> self, std::shared_ptr<Waiter> waiter,
                                                   Clock::time_point deadline);
  static boost::asio::awaitable<void> run(std::shared_ptr<RedisLink> self);
  static boost::asio::awaitable<void> read_loop(std::shared_ptr<RedisLink> self, std::shared_ptr<Connection> conn);
  boost::asio::awaitable<std::shared_ptr<Connection>> establish();
  void start();
  void flush(const std::shared_ptr<Connection>& conn);
  void fail(const std::shared_ptr<Connection>& conn, std::string_view why);
  void wake_ready_waiters();
  void note_failure(const std::string& why);

  Executor executor_;
  Options options_;
  std::shared_ptr<Connection> conn_;  // established, AUTH/SELECT done
  std::shared_ptr<Attempt> attempt_;  // the connection attempt in progress
  Endpoint connected_to_;
  boost::asio::steady_timer retry_timer_;
  std::vector<std::shared_ptr<boost::asio::steady_timer>> ready_waiters_;
  bool stopped_ = false;
  bool kicked_ = false;      // reconnect() asked for an attempt without backoff
  bool no_address_ = false;  // the last attempt had no endpoint to try
  bool starting_ = true;     // the first attempt has not finished yet
  std::uint64_t connects_ = 0;
  std::uint32_t jitter_state_;
  std::string last_error_;
  std::string logged_error_;  // the failure of the current streak, so a streak of one error is logged once
  bool warned_ = false;       // this link logged that failure (so it says when it is connected again)
  std::atomic<bool> healthy_{false};
};

}  // namespace canaryd::store
