#include "store/redis_client.hpp"

#include <hiredis/hiredis.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <optional>
#include <stdexcept>

namespace canaryd::store {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using boost::system::error_code;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
// A connection that lived at least this long was healthy: after it drops,
// reconnect at once instead of backing off (a restart should cost one RTT).
constexpr auto kStableAfter = 1s;
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr std::size_t kInlineArgs = 16;

// RESP-encodes one command with hiredis. Empty on allocation failure.
template <class It>
std::string encode(It first, std::size_t argc) {
  std::array<const char*, kInlineArgs> ptr_inline;
  std::array<std::size_t, kInlineArgs> len_inline;
  std::vector<const char*> ptr_heap;
  std::vector<std::size_t> len_heap;
  const char** ptrs = ptr_inline.data();
  std::size_t* lens = len_inline.data();
  if (argc > kInlineArgs) {
    ptr_heap.resize(argc);
    len_heap.resize(argc);
    ptrs = ptr_heap.data();
    lens = len_heap.data();
  }
  for (std::size_t i = 0; i < argc; ++i, ++first) {
    std::string_view arg(*first);
    ptrs[i] = arg.data();
    lens[i] = arg.size();
  }
  char* out = nullptr;
  int len = redisFormatCommandArgv(&out, static_cast<int>(argc), ptrs, lens);
  if (len < 0 || out == nullptr) return {};
  std::string cmd(out, static_cast<std::size_t>(len));
  redisFreeCommand(out);
  return cmd;
}

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::nil;
      break;
  }
  return out;
}

struct ReaderFree {
  void operator()(redisReader* r) const { redisReaderFree(r); }
};

}  // namespace

// A command awaiting its reply. The caller sleeps on `timer` until the reader
// (or a failure) completes it, or redis.timeout passes; `done` says which came
// first, since a cancel can race with an expiry already queued.
struct RedisClient::Waiter {
  explicit Waiter(const Executor& ex) : timer(ex) {}
  net::steady_timer timer;
  Steady::time_point sent;
  Reply reply;
  bool done = false;
};

// One TCP (or TLS) connection and its pipeline. A new connection is a new
// object, so callbacks of a dead one can never touch its successor.
struct RedisClient::Connection {
  Connection(const Executor& ex, ssl::context* tls_context) : closed(ex), reader(redisReaderCreate()) {
    if (tls_context) {
      tls.emplace(ex, *tls_context);
    } else {
      plain.emplace(ex);
    }
  }

  tcp::socket& lowest() { return tls ? tls->next_layer() : *plain; }

  template <class F>
  auto with_stream(F&& f) {
    return tls ? f(*tls) : f(*plain);
  }

  std::optional<tcp::socket> plain;
  std::optional<ssl::stream<tcp::socket>> tls;
  net::steady_timer closed;  // cancelled when the connection dies; the run loop waits on it
  std::unique_ptr<redisReader, ReaderFree> reader;
  // Sent (or queued) and not yet answered, oldest first. Timed-out waiters
  // stay here (done = true) so their late replies are matched and dropped.
  std::deque<std::shared_ptr<Waiter>> in_flight;
  std::string pending;  // encoded commands waiting for the next write
  std::string writing;  // the buffer of the write in progress
  bool write_active = false;
  bool dead = false;
};

// A connection attempt in progress, so stop() and its deadline can abort it.
struct RedisClient::Attempt {
  explicit Attempt(const Executor& ex) : resolver(ex), deadline(ex) {}
  tcp::resolver resolver;
  net::steady_timer deadline;
  std::shared_ptr<Connection> conn;
  bool aborted = false;

  void abort(RedisClient& client, std::string_view why) {
    aborted = true;
    resolver.cancel();
    deadline.cancel();
    if (conn) client.fail(conn, why);
  }
};

std::shared_ptr<RedisClient> RedisClient::create(Executor executor, config::RedisConfig config, ErrorSink on_error,
                                                 std::shared_ptr<ssl::context> tls) {
  if (config.tls && !tls) tls = make_tls_context(config);
  auto client = std::make_shared<RedisClient>(Private{}, std::move(executor), std::move(config),
                                              std::move(on_error), std::move(tls));
  client->start();
  return client;
}

std::shared_ptr<ssl::context> RedisClient::make_tls_context(const config::RedisConfig& config) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) throw std::runtime_error("redis: cannot load the system CA certificates: " + ec.message());
  if (!config.ca_file.empty()) {
    ctx->load_verify_file(config.ca_file, ec);
    if (ec) throw std::runtime_error("redis.ca_file: cannot load '" + config.ca_file + "': " + ec.message());
  }
  return ctx;
}

RedisClient::RedisClient(Private, Executor executor, config::RedisConfig config, ErrorSink on_error,
                         std::shared_ptr<ssl::context> tls)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      on_error_(std::move(on_error)),
      tls_(std::move(tls)),
      timeout_(std::max(config_.timeout, std::chrono::milliseconds(1))),
      connect_timeout_(std::max(kMinConnectTimeout, 10 * timeout_)),
      // Late replies are normal (a slow Redis answers after our timeout), but
      // a connection whose oldest command is this old has stopped answering.
      stall_limit_(std::max(std::chrono::milliseconds(1000), 50 * timeout_)),
      retry_timer_(executor_),
      jitter_state_(static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(this) >> 4) | 1u) {}

RedisClient::~RedisClient() = default;

void RedisClient::start() {
  std::weak_ptr<RedisClient> weak = shared_from_this();
  net::co_spawn(executor_, run(shared_from_this()), [weak](std::exception_ptr e) {
    // Only allocation failure can throw in the loop; without it there would be
    // no reconnects ever again, so start over.
    if (!e) return;
    if (auto self = weak.lock(); self && !self->stopped_) self->start();
  });
}

std::size_t RedisClient::in_flight() const { return conn_ ? conn_->in_flight.size() : 0; }

void RedisClient::report_error(std::string_view op) const {
  if (on_error_) on_error_(op);
}

net::awaitable<Reply> RedisClient::command(const std::vector<std::string>& argv, std::string_view op) {
  return run_command(shared_from_this(), encode(argv.begin(), argv.size()), op);
}

net::awaitable<Reply> RedisClient::command(std::span<const std::string_view> argv, std::string_view op) {
  return run_command(shared_from_this(), encode(argv.begin(), argv.size()), op);
}

net::awaitable<Reply> RedisClient::command(std::initializer_list<std::string_view> argv, std::string_view op) {
  return run_command(shared_from_this(), encode(argv.begin(), argv.size()), op);
}

net::awaitable<Reply> RedisClient::run_command(std::shared_ptr<RedisClient> self, std::string cmd,
                                               std::string_view op) {
  Reply reply;
  if (cmd.empty()) {
    reply = Reply::failure("encode failed");
  } else if (!self->conn_) {
    // Fail fast: waiting on a dead socket would only add redis.timeout to a
    // request that is going to be decided by hash anyway.
    reply = Reply::failure(self->stopped_ ? "stopped" : "not connected");
  } else {
    auto conn = self->conn_;
    if (!conn->in_flight.empty() && Steady::now() - conn->in_flight.front()->sent > self->stall_limit_) {
      self->fail(conn, "stalled");
      reply = Reply::failure("stalled");
    } else if (conn->in_flight.size() >= kMaxInFlight) {
      reply = Reply::failure("overloaded");
    } else {
      reply = co_await exec(self, conn, std::move(cmd), self->timeout_);
    }
  }
  if (!reply.ok()) self->report_error(op);
  co_return reply;
}

net::awaitable<Reply> RedisClient::exec(std::shared_ptr<RedisClient> self, std::shared_ptr<Connection> conn,
                                        std::string cmd, std::chrono::milliseconds timeout) {
  if (conn->dead) co_return Reply::failure("connection lost");
  auto waiter = std::make_shared<Waiter>(self->executor_);
  waiter->sent = Steady::now();
  conn->in_flight.push_back(waiter);
  conn->pending.append(cmd);
  self->flush(conn);
  waiter->timer.expires_after(timeout);
  co_await waiter->timer.async_wait(kAwait);
  if (!waiter->done) {
    // The slot stays in in_flight so the late reply is matched and dropped;
    // the connection itself is fine until stall_limit_.
    waiter->done = true;
    self->healthy_.store(false, std::memory_order_relaxed);
    co_return Reply::failure("timeout");
  }
  co_return std::move(waiter->reply);
}

void RedisClient::flush(const std::shared_ptr<Connection>& conn) {
  if (conn->write_active || conn->pending.empty() || conn->dead) return;
  conn->write_active = true;
  conn->writing.swap(conn->pending);  // every command queued so far goes out in one write
  conn->with_stream([&](auto& stream) {
    net::async_write(stream, net::buffer(conn->writing),
                     [self = shared_from_this(), conn](const error_code& ec, std::size_t) {
                       conn->write_active = false;
                       conn->writing.clear();
                       if (ec) {
                         self->fail(conn, "write failed");
                         return;
                       }
                       self->flush(conn);
                     });
  });
}

net::awaitable<void> RedisClient::read_loop(std::shared_ptr<RedisClient> self, std::shared_ptr<Connection> conn) {
  std::array<char, kReadBuffer> buf;
  for (;;) {
    auto [ec, n] = co_await conn->with_stream(
        [&](auto& stream) { return stream.async_read_some(net::buffer(buf), kAwait); });
    if (conn->dead) co_return;
    if (ec) {
      self->fail(conn, "connection lost");
      co_return;
    }
    if (redisReaderFeed(conn->reader.get(), buf.data(), n) != REDIS_OK) {
      self->fail(conn, "protocol error");
      co_return;
    }
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(conn->reader.get(), &raw) != REDIS_OK) {
        self->fail(conn, "protocol error");
        co_return;
      }
      if (raw == nullptr) break;
      Reply reply = convert(static_cast<const redisReply*>(raw));
      freeReplyObject(raw);
      if (conn->in_flight.empty()) {
        // A reply nobody asked for: the pipeline is out of step, and every
        // later answer would go to the wrong caller.
        self->fail(conn, "unexpected reply");
        co_return;
      }
      auto waiter = std::move(conn->in_flight.front());
      conn->in_flight.pop_front();
      if (waiter->done) continue;  // its caller timed out already
      waiter->done = true;
      waiter->reply = std::move(reply);
      waiter->timer.cancel();
      if (conn == self->conn_) self->healthy_.store(true, std::memory_order_relaxed);
    }
  }
}

void RedisClient::fail(const std::shared_ptr<Connection>& conn, std::string_view why) {
  if (conn->dead) return;
  conn->dead = true;
  error_code ignored;
  conn->lowest().close(ignored);
  for (auto& waiter : conn->in_flight) {
    if (waiter->done) continue;
    waiter->done = true;
    waiter->reply = Reply::failure(std::string(why));
    waiter->timer.cancel();
  }
  conn->in_flight.clear();
  conn->closed.cancel();
  if (conn_ == conn) {
    conn_.reset();
    healthy_.store(false, std::memory_order_relaxed);
  }
}

net::awaitable<std::shared_ptr<RedisClient::Connection>> RedisClient::establish() {
  auto self = shared_from_this();
  auto at = std::make_shared<Attempt>(executor_);
  attempt_ = at;
  at->deadline.expires_after(connect_timeout_);
  at->deadline.async_wait([self, at](const error_code& ec) {
    if (!ec && !at->aborted) at->abort(*self, "connect timed out");
  });
  auto give_up = [&](std::string why) -> std::shared_ptr<Connection> {
    if (at->aborted && !stopped_) why = "connect timed out";
    last_error_ = std::move(why);
    at->abort(*this, last_error_);
    if (attempt_ == at) attempt_.reset();
    return nullptr;
  };

  auto [rec, endpoints] =
      co_await at->resolver.async_resolve(config_.host, std::to_string(config_.port), kAwait);
  if (at->aborted) co_return give_up("stopped");
  if (rec) co_return give_up("resolve " + config_.host + ": " + rec.message());

  at->conn = std::make_shared<Connection>(executor_, config_.tls ? tls_.get() : nullptr);
  auto conn = at->conn;
  auto [cec, endpoint] = co_await net::async_connect(conn->lowest(), endpoints, kAwait);
  if (at->aborted) co_return give_up("stopped");
  if (cec) co_return give_up("connect " + config_.host + ":" + std::to_string(config_.port) + ": " + cec.message());
  error_code ignored;
  conn->lowest().set_option(tcp::no_delay(true), ignored);

  if (conn->tls) {
    auto& stream = *conn->tls;
    error_code not_ip;
    net::ip::make_address(config_.host, not_ip);
    // SNI carries host names only (RFC 6066); an IP is checked against the SAN.
    if (not_ip && !SSL_set_tlsext_host_name(stream.native_handle(), config_.host.c_str())) {
      co_return give_up("TLS: cannot set SNI");
    }
    error_code vec;
    if (config_.tls_verify) {
      stream.set_verify_mode(ssl::verify_peer, vec);
      if (!vec) stream.set_verify_callback(ssl::host_name_verification(config_.host), vec);
    } else {
      stream.set_verify_mode(ssl::verify_none, vec);
    }
    if (vec) co_return give_up("TLS: " + vec.message());
    auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, kAwait);
    if (at->aborted) co_return give_up("stopped");
    if (hec) co_return give_up("TLS handshake with " + config_.host + ": " + hec.message());
  }

  std::weak_ptr<RedisClient> weak = self;
  net::co_spawn(executor_, read_loop(self, conn), [weak, conn](std::exception_ptr e) {
    if (!e) return;
    if (auto client = weak.lock()) client->fail(conn, "internal error");
  });

  // AUTH and SELECT go through the pipeline before the connection is
  // published, so no caller's command can run against the wrong db.
  if (!config_.password_value.empty()) {
    std::string_view args[] = {"AUTH", config_.password_value};
    Reply r = co_await exec(self, conn, encode(std::begin(args), 2), connect_timeout_);
    if (at->aborted) co_return give_up("stopped");
    // The reply text is Redis's (e.g. WRONGPASS); it never contains the password.
    if (!r.ok()) co_return give_up("AUTH: " + r.str);
  }
  if (config_.db != 0) {
    std::string db = std::to_string(config_.db);
    std::string_view args[] = {"SELECT", db};
    Reply r = co_await exec(self, conn, encode(std::begin(args), 2), connect_timeout_);
    if (at->aborted) co_return give_up("stopped");
    if (!r.ok()) co_return give_up("SELECT " + db + ": " + r.str);
  }
  if (conn->dead) co_return give_up("connection lost during set-up");
  at->deadline.cancel();
  if (attempt_ == at) attempt_.reset();
  co_return conn;
}

net::awaitable<void> RedisClient::run(std::shared_ptr<RedisClient> self) {
  auto backoff = kMinBackoff;
  while (!self->stopped_) {
    auto conn = co_await self->establish();
    if (self->stopped_) {
      if (conn) self->fail(conn, "stopped");
      break;
    }
    if (conn) {
      auto since = Steady::now();
      self->conn_ = conn;
      ++self->connects_;
      self->last_error_.clear();
      self->healthy_.store(true, std::memory_order_relaxed);
      while (!conn->dead) {
        conn->closed.expires_at(Steady::time_point::max());
        co_await conn->closed.async_wait(kAwait);
      }
      if (self->stopped_) break;
      if (Steady::now() - since >= kStableAfter) {
        backoff = kMinBackoff;
        continue;
      }
    } else {
      self->report_error("connect");
    }
    // ±20% jitter so every I/O thread of every replica does not reconnect in step.
    self->jitter_state_ = self->jitter_state_ * 1664525u + 1013904223u;
    double factor = 0.8 + 0.4 * static_cast<double>(self->jitter_state_ >> 8) / static_cast<double>(1u << 24);
    self->retry_timer_.expires_after(
        std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double, std::milli>(backoff.count() * factor)));
    co_await self->retry_timer_.async_wait(kAwait);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void RedisClient::stop() {
  if (stopped_) return;
  stopped_ = true;
  healthy_.store(false, std::memory_order_relaxed);
  retry_timer_.cancel();
  if (attempt_) {
    auto at = std::move(attempt_);
    at->abort(*this, "stopped");
  }
  if (conn_) fail(conn_, "stopped");
}

}  // namespace canaryd::store
