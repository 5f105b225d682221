// canaryd's asynchronous Redis client (SPEC §2 `redis`, §4). hiredis is only
// the RESP codec (redisFormatCommandArgv to encode, redisReader to decode);
// Asio owns the sockets, plain or TLS (Debian's hiredis 0.14 has no TLS and
// managed Redis services require rediss://). So a command is an ordinary
// coroutine on the caller's I/O thread, bounded by redis.timeout, and never
// blocks that thread.
//
// One client per I/O thread (no locks): every method except healthy() and the
// destructor-side post must run on its executor. The topology decides how
// many connections it holds (redis_link.hpp is one connection):
//   standalone  one connection to redis.url's server;
//   sentinel    one connection to the primary the sentinels name; a
//               RedisTopology (shared by every thread's client of a process)
//               asks the sentinels, follows +switch-master and tells each
//               client to reconnect; a READONLY reply asks it to look again;
//   cluster     one connection per primary; each command goes to the primary
//               of its key's slot (the shared RedisTopology holds the slot
//               map), MOVED and ASK are followed within the same timeout.
// Failure is cheap and fast: while disconnected a command fails at once, a
// background loop reconnects with capped exponential backoff (50ms .. 2s), and
// every failed command is reported to the error sink with its `op` label.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "canaryd/config.hpp"

namespace boost::asio::ssl {
class context;
}

namespace canaryd::store {

// One decoded RESP reply, or a transport failure (failed = true: no answer
// from Redis at all — not connected, timed out, connection lost, stopped).
struct Reply {
  enum class Type : std::uint8_t { nil, string, integer, array, status, error };

  Type type = Type::nil;
  bool failed = false;
  long long integer = 0;
  std::string str;  // string, status and error text; for a failure, why
  std::vector<Reply> elements;

  // Redis answered and the answer is not an error reply.
  bool ok() const { return !failed && type != Type::error; }
  static Reply failure(std::string why) {
    Reply r;
    r.failed = true;
    r.str = std::move(why);
    return r;
  }
};

// A Redis node's address.
struct Endpoint {
  std::string host;  // IPv6 without brackets
  std::uint16_t port = 0;

  bool empty() const { return host.empty(); }
  std::string text() const;  // "host:port", "[v6]:port"
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

class RedisLink;
class RedisTopology;

// What the clients and the topology report besides errors, for the metrics.
enum class RedisEvent : std::uint8_t {
  failover,         // a new primary was followed (Sentinel)
  moved,            // a MOVED redirection was followed (Cluster)
  ask,              // an ASK redirection was followed (Cluster)
  discovery_error,  // a sentinel or cluster node did not answer a topology query
};

class RedisClient : public std::enable_shared_from_this<RedisClient> {
 public:
  using Executor = boost::asio::any_io_executor;
  using ErrorSink = std::function<void(std::string_view op)>;
  using EventSink = std::function<void(RedisEvent)>;

  // How long one connection attempt (resolve, connect, TLS, AUTH, SELECT) may
  // take: redis.timeout is sized for one round trip on a warm connection, far
  // too short for a TLS handshake to a managed service.
  static constexpr std::chrono::milliseconds kMinConnectTimeout{1000};
  static constexpr std::chrono::milliseconds kMinBackoff{50};
  static constexpr std::chrono::milliseconds kMaxBackoff{2000};
  // Commands past this many unanswered on one connection fail at once instead
  // of queueing without bound behind a Redis that stopped answering.
  static constexpr std::size_t kMaxInFlight = 65536;

  // Builds the client and starts its connect loop on `executor` (nothing runs
  // until that io_context does). `tls` may be shared by every thread's client;
  // null builds one from `config` (throws on an unreadable ca_file).
  static std::shared_ptr<RedisClient> create(Executor executor, config::RedisConfig config, ErrorSink on_error = {},
                                             std::shared_ptr<boost::asio::ssl::context> tls = nullptr);

  struct Options {
    ErrorSink on_error;
    EventSink on_event;
    std::shared_ptr<boost::asio::ssl::context> tls;  // null: built from the config when it says rediss
    // Sentinel and Cluster: the process's topology watcher, shared by every
    // thread's client (RedisTopology::create). Null: the client makes its own.
    std::shared_ptr<RedisTopology> topology;
  };
  static std::shared_ptr<RedisClient> create(Executor executor, config::RedisConfig config, Options options);

  // The TLS client context for rediss://: system CAs plus redis.ca_file.
  // Throws std::runtime_error naming the file (start-up only).
  static std::shared_ptr<boost::asio::ssl::context> make_tls_context(const config::RedisConfig& config);

  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends one command and waits for its reply, at most redis.timeout. Never
  // throws. The arguments are encoded before this returns, so they need not
  // outlive the awaitable; `op` (the metrics label) must (use a literal).
  // Any failure or error reply is reported to the error sink as `op`.
  boost::asio::awaitable<Reply> command(const std::vector<std::string>& argv, std::string_view op);
  boost::asio::awaitable<Reply> command(std::span<const std::string_view> argv, std::string_view op);
  // g++ 12 rejects a braced list inside a coroutine ("array used as
  // initializer"); there, put the arguments in a std::array and use the span.
  boost::asio::awaitable<Reply> command(std::initializer_list<std::string_view> argv, std::string_view op);

  // Connected and the last answer came in time (Cluster: on every primary's
  // connection). Safe from any thread.
  bool healthy() const;
  // I/O thread only: a connection is established (AUTH/SELECT done; Cluster:
  // the slot map is known and some primary is connected).
  bool connected() const;
  // Cancels everything: pending commands fail, no more reconnects. I/O thread
  // only; from elsewhere post it to executor().
  void stop();
  // Counts a failure the caller found in a reply (e.g. an unexpected type).
  void report_error(std::string_view op) const;

  const Executor& executor() const { return executor_; }
  // For tests and diagnostics (I/O thread): connections established so far,
  // commands awaiting a reply on the current connection, the last connect error.
  std::uint64_t connects() const;
  std::size_t in_flight() const;
  const std::string& last_error() const;
  const std::shared_ptr<RedisTopology>& topology() const { return topology_; }

  // Cluster: the hash slot of a key (CRC16 of the key, or of its {hash tag}).
  static std::uint16_t key_slot(std::string_view key);
  // Cluster: at most this many MOVED/ASK redirections per command.
  static constexpr int kMaxRedirects = 5;

 private:
  class Cluster;
  struct Private {};

 public:
  RedisClient(Private, Executor executor, config::RedisConfig config, Options options);

 private:
  boost::asio::awaitable<Reply> submit(std::string cmd, int slot, std::string_view op);
  static boost::asio::awaitable<Reply> run_command(std::shared_ptr<RedisClient> self, std::string cmd, int slot,
                                                   std::string_view op);
  void start();
  void topology_changed();
  std::shared_ptr<RedisLink> make_node_link(const Endpoint& ep);  // Cluster: a link to one node

  Executor executor_;
  config::RedisConfig config_;
  Options options_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<RedisTopology> topology_;
  bool owns_topology_ = false;
  std::shared_ptr<RedisLink> link_;   // standalone, sentinel
  std::unique_ptr<Cluster> cluster_;  // cluster
  bool stopped_ = false;
  mutable std::string last_error_;  // for last_error() when no link has one
};

}  // namespace canaryd::store
