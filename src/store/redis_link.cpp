#include "store/redis_link.hpp"

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
#include <map>
#include <mutex>
#include <optional>

#include "common/log.hpp"

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
    default: out.type = Reply::Type::nil; break;
  }
  return out;
}

struct ReaderFree {
  void operator()(redisReader* r) const { redisReaderFree(r); }
};

// Built outside the coroutines: g++ 12 rejects braced lists inside them.
std::vector<std::string> auth_args(const std::string& username, const std::string& password) {
  std::vector<std::string> argv{"AUTH"};
  if (!username.empty()) argv.push_back(username);
  argv.push_back(password);
  return argv;
}

std::vector<std::string> select_args(int db) { return {"SELECT", std::to_string(db)}; }

const std::string& asking_command() {
  static const std::string cmd = RedisLink::encode({"ASKING"});
  return cmd;
}

}  // namespace

// A command awaiting its reply. The caller sleeps on `timer` until the reader
// (or a failure) completes it, or its deadline passes; `done` says which came
// first, since a cancel can race with an expiry already queued.
struct RedisLink::Waiter {
  explicit Waiter(const Executor& ex) : timer(ex) {}
  net::steady_timer timer;
  Steady::time_point sent;
  Reply reply;
  bool done = false;
};

// One TCP (or TLS) connection and its pipeline. A new connection is a new
// object, so callbacks of a dead one can never touch its successor.
struct RedisLink::Connection {
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
  bool flush_posted = false;  // a flush is queued for the end of this turn of the loop
  bool dead = false;
};

// A connection attempt in progress, so stop(), reconnect() and its deadline can abort it.
struct RedisLink::Attempt {
  explicit Attempt(const Executor& ex) : resolver(ex), deadline(ex) {}
  tcp::resolver resolver;
  net::steady_timer deadline;
  std::shared_ptr<Connection> conn;
  bool aborted = false;
  bool timed_out = false;

  void abort(RedisLink& link, std::string_view why) {
    aborted = true;
    resolver.cancel();
    deadline.cancel();
    if (conn) link.fail(conn, why);
  }
};

std::string RedisLink::encode(const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  char* out = nullptr;
  int len = redisFormatCommandArgv(&out, static_cast<int>(argv.size()), ptrs.data(), lens.data());
  if (len < 0 || out == nullptr) return {};
  std::string cmd(out, static_cast<std::size_t>(len));
  redisFreeCommand(out);
  return cmd;
}

RedisLink::Options RedisLink::node_options(const config::RedisConfig& config, std::shared_ptr<ssl::context> tls,
                                           std::function<Endpoint()> endpoint, std::string role) {
  const auto timeout = std::max(config.timeout, std::chrono::milliseconds(1));
  Options o;
  o.endpoint = std::move(endpoint);
  o.username = config.username;
  o.password = config.password_value;
  o.db = config.mode == config::RedisMode::cluster ? 0 : config.db;
  if (config.tls) o.tls = std::move(tls);
  o.tls_verify = config.tls_verify;
  // A connection attempt (resolve, TCP, TLS, AUTH, SELECT) gets far longer
  // than one round trip: redis.timeout is sized for a warm connection.
  o.connect_timeout = std::max(RedisClient::kMinConnectTimeout, 10 * timeout);
  // Late replies are normal (a slow Redis answers after our timeout), but a
  // connection whose oldest command is this old has stopped answering.
  o.stall_limit = std::max(std::chrono::milliseconds(1000), 50 * timeout);
  o.role = std::move(role);
  return o;
}

std::shared_ptr<RedisLink> RedisLink::create(Executor executor, Options options) {
  auto link = std::make_shared<RedisLink>(Private{}, std::move(executor), std::move(options));
  link->start();
  return link;
}

RedisLink::RedisLink(Private, Executor executor, Options options)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      retry_timer_(executor_),
      jitter_state_(static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(this) >> 4) | 1u) {}

RedisLink::~RedisLink() = default;

void RedisLink::start() {
  std::weak_ptr<RedisLink> weak = shared_from_this();
  net::co_spawn(executor_, run(shared_from_this()), [weak](std::exception_ptr e) {
    // Only allocation failure can throw in the loop; without it there would be
    // no reconnects ever again, so start over.
    if (!e) return;
    if (auto self = weak.lock(); self && !self->stopped_) self->start();
  });
}

std::size_t RedisLink::in_flight() const { return conn_ ? conn_->in_flight.size() : 0; }

net::awaitable<Reply> RedisLink::exec(std::string_view cmd, Clock::time_point deadline, bool asking) {
  auto self = shared_from_this();
  if (cmd.empty()) co_return Reply::failure("encode failed");
  // Fail fast: waiting on a dead socket would only add redis.timeout to a
  // request that is going to be decided by hash anyway.
  if (!conn_) co_return Reply::failure(stopped_ ? "stopped" : "not connected");
  auto conn = conn_;
  if (!conn->in_flight.empty() && Steady::now() - conn->in_flight.front()->sent > options_.stall_limit) {
    fail(conn, "stalled");
    co_return Reply::failure("stalled");
  }
  if (conn->in_flight.size() >= RedisClient::kMaxInFlight) co_return Reply::failure("overloaded");
  // Queued before the first suspension: `cmd` need not outlive this call.
  auto waiter = enqueue(conn, cmd, asking);
  co_return co_await await_reply(self, std::move(waiter), deadline);
}

std::shared_ptr<RedisLink::Waiter> RedisLink::enqueue(const std::shared_ptr<Connection>& conn, std::string_view cmd,
                                                      bool asking) {
  if (conn->dead) return nullptr;
  if (asking) {
    // Its reply is matched to a waiter nobody waits for, and dropped.
    auto skip = std::make_shared<Waiter>(executor_);
    skip->sent = Steady::now();
    skip->done = true;
    conn->in_flight.push_back(std::move(skip));
    conn->pending.append(asking_command());
  }
  auto waiter = std::make_shared<Waiter>(executor_);
  waiter->sent = Steady::now();
  conn->in_flight.push_back(waiter);
  conn->pending.append(cmd);
  // The write goes out once the handlers ready now have run, with every
  // command they queue on this connection: one write per turn of the loop,
  // not one per command (with a connection per Cluster primary, a burst of
  // requests would otherwise cost a write per primary per request).
  if (!conn->flush_posted && !conn->write_active) {
    conn->flush_posted = true;
    net::post(executor_, [self = shared_from_this(), conn] {
      conn->flush_posted = false;
      self->flush(conn);
    });
  }
  return waiter;
}

net::awaitable<Reply> RedisLink::await_reply(std::shared_ptr<RedisLink> self, std::shared_ptr<Waiter> waiter,
                                             Clock::time_point deadline) {
  if (!waiter) co_return Reply::failure("connection lost");
  waiter->timer.expires_at(deadline);
  co_await waiter->timer.async_wait(kAwait);
  if (!waiter->done) {
    // The slot stays in in_flight so the late reply is matched and dropped;
    // the connection itself is fine until stall_limit.
    waiter->done = true;
    self->healthy_.store(false, std::memory_order_relaxed);
    co_return Reply::failure("timeout");
  }
  co_return std::move(waiter->reply);
}

net::awaitable<bool> RedisLink::ready(Clock::time_point deadline) {
  auto self = shared_from_this();
  std::shared_ptr<net::steady_timer> timer;
  // Woken when an attempt ends; an attempt cut short by reconnect() is
  // followed by the next one at once, so keep waiting through it.
  while (!conn_ && !stopped_ && (attempt_ || starting_ || kicked_) && Steady::now() < deadline) {
    timer = std::make_shared<net::steady_timer>(executor_);
    timer->expires_at(deadline);
    ready_waiters_.push_back(timer);
    co_await timer->async_wait(kAwait);
  }
  co_return conn_ != nullptr;
}

void RedisLink::wake_ready_waiters() {
  for (auto& t : ready_waiters_) t->cancel();
  ready_waiters_.clear();
}

void RedisLink::flush(const std::shared_ptr<Connection>& conn) {
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

net::awaitable<void> RedisLink::read_loop(std::shared_ptr<RedisLink> self, std::shared_ptr<Connection> conn) {
  std::array<char, kReadBuffer> buf;
  for (;;) {
    auto [ec, n] =
        co_await conn->with_stream([&](auto& stream) { return stream.async_read_some(net::buffer(buf), kAwait); });
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
        if (self->options_.on_push) {
          self->options_.on_push(std::move(reply));
          if (conn->dead) co_return;
          continue;
        }
        // A reply nobody asked for: the pipeline is out of step, and every
        // later answer would go to the wrong caller.
        self->fail(conn, "unexpected reply");
        co_return;
      }
      auto waiter = std::move(conn->in_flight.front());
      conn->in_flight.pop_front();
      if (waiter->done) continue;  // its caller timed out already (or it was an ASKING)
      waiter->done = true;
      waiter->reply = std::move(reply);
      waiter->timer.cancel();
      if (conn == self->conn_) self->healthy_.store(true, std::memory_order_relaxed);
    }
  }
}

void RedisLink::fail(const std::shared_ptr<Connection>& conn, std::string_view why) {
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
    connected_to_ = {};
    healthy_.store(false, std::memory_order_relaxed);
  }
}

namespace {

// Every I/O thread's connection (and the rollout sync's) meets the same
// wrong password at the same moment: the same text is logged once per
// process per minute, not once per connection.
bool first_in_process(const std::string& text) {
  static std::mutex mu;
  static std::map<std::string, Steady::time_point> logged;
  constexpr auto kQuiet = std::chrono::minutes(1);
  const auto now = Steady::now();
  std::lock_guard lock(mu);
  if (logged.size() > 64) logged.clear();
  auto [it, fresh] = logged.try_emplace(text, now);
  if (!fresh && now - it->second < kQuiet) return false;
  it->second = now;
  return true;
}

}  // namespace

void RedisLink::note_failure(const std::string& why) {
  // One line per streak of one error, not one per retry: a wrong password
  // is said once, clearly, and the retries are counted in the metrics.
  if (why == logged_error_) return;
  logged_error_ = why;
  if (!first_in_process(why)) return;
  warned_ = true;
  log::warn("redis: cannot connect", {{"role", options_.role}, {"error", why}});
}

// A connection's steps in order (resolve, TCP, TLS, AUTH, SELECT, the setup
// commands), each bounded by the connect deadline and with its own error: long
// on purpose, as a sequence reads better than a chain of helpers passing it on.
net::awaitable<std::shared_ptr<RedisLink::Connection>> RedisLink::establish() {
  auto self = shared_from_this();
  auto at = std::make_shared<Attempt>(executor_);
  attempt_ = at;
  at->deadline.expires_after(options_.connect_timeout);
  at->deadline.async_wait([self, at](const error_code& ec) {
    if (ec || at->aborted) return;
    at->timed_out = true;
    at->abort(*self, "connect timed out");
  });
  const Endpoint ep = options_.endpoint ? options_.endpoint() : Endpoint{};
  const std::string where = ep.text();
  auto give_up = [&](std::string why) -> std::shared_ptr<Connection> {
    if (at->timed_out) why = "connect " + where + ": timed out";
    if (!at->aborted || at->timed_out) last_error_ = why;
    at->abort(*this, why);
    if (attempt_ == at) attempt_.reset();
    wake_ready_waiters();
    return nullptr;
  };
  if (ep.empty()) {
    no_address_ = true;
    co_return give_up("no address known yet");
  }

  auto [rec, endpoints] = co_await at->resolver.async_resolve(ep.host, std::to_string(ep.port), kAwait);
  if (at->aborted) co_return give_up("stopped");
  if (rec) co_return give_up("resolve " + ep.host + ": " + rec.message());

  at->conn = std::make_shared<Connection>(executor_, options_.tls.get());
  auto conn = at->conn;
  auto [cec, endpoint] = co_await net::async_connect(conn->lowest(), endpoints, kAwait);
  if (at->aborted) co_return give_up("stopped");
  if (cec) co_return give_up("connect " + where + ": " + cec.message());
  error_code ignored;
  conn->lowest().set_option(tcp::no_delay(true), ignored);

  if (conn->tls) {
    auto& stream = *conn->tls;
    error_code not_ip;
    net::ip::make_address(ep.host, not_ip);
    // SNI carries host names only (RFC 6066); an IP is checked against the SAN.
    if (not_ip && !SSL_set_tlsext_host_name(stream.native_handle(), ep.host.c_str())) {
      co_return give_up("TLS: cannot set SNI");
    }
    error_code vec;
    if (options_.tls_verify) {
      stream.set_verify_mode(ssl::verify_peer, vec);
      if (!vec) stream.set_verify_callback(ssl::host_name_verification(ep.host), vec);
    } else {
      stream.set_verify_mode(ssl::verify_none, vec);
    }
    if (vec) co_return give_up("TLS: " + vec.message());
    auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, kAwait);
    if (at->aborted) co_return give_up("stopped");
    if (hec) co_return give_up("TLS handshake with " + where + ": " + hec.message());
  }

  std::weak_ptr<RedisLink> weak = self;
  net::co_spawn(executor_, read_loop(self, conn), [weak, conn](std::exception_ptr e) {
    if (!e) return;
    if (auto link = weak.lock()) link->fail(conn, "internal error");
  });

  // AUTH, SELECT and the set-up commands go through the pipeline before the
  // connection is published, so no caller's command can run unauthenticated
  // or against the wrong db.
  const auto step_deadline = [&] { return Steady::now() + options_.connect_timeout; };
  if (!options_.password.empty() || !options_.username.empty()) {
    auto waiter = enqueue(conn, encode(auth_args(options_.username, options_.password)), false);
    Reply r = co_await await_reply(self, std::move(waiter), step_deadline());
    if (at->aborted) co_return give_up("stopped");
    // The reply text is Redis's (e.g. WRONGPASS); it never contains the password.
    if (!r.ok()) {
      co_return give_up("AUTH" + (options_.username.empty() ? std::string() : " as " + options_.username) + " to " +
                        where + ": " + r.str);
    }
  }
  if (options_.db != 0) {
    auto waiter = enqueue(conn, encode(select_args(options_.db)), false);
    Reply r = co_await await_reply(self, std::move(waiter), step_deadline());
    if (at->aborted) co_return give_up("stopped");
    if (!r.ok()) co_return give_up("SELECT " + std::to_string(options_.db) + " on " + where + ": " + r.str);
  }
  if (!options_.setup.empty()) {
    auto waiter = enqueue(conn, encode(options_.setup), false);
    Reply r = co_await await_reply(self, std::move(waiter), step_deadline());
    if (at->aborted) co_return give_up("stopped");
    if (!r.ok()) co_return give_up(options_.setup.front() + " on " + where + ": " + r.str);
  }
  if (conn->dead) co_return give_up("connection to " + where + " lost during set-up");
  at->deadline.cancel();
  if (attempt_ == at) attempt_.reset();
  connected_to_ = ep;
  co_return conn;
}

net::awaitable<void> RedisLink::run(std::shared_ptr<RedisLink> self) {
  auto backoff = RedisClient::kMinBackoff;
  while (!self->stopped_) {
    self->kicked_ = false;
    self->no_address_ = false;
    auto conn = co_await self->establish();
    self->starting_ = false;
    if (self->stopped_) {
      if (conn) self->fail(conn, "stopped");
      break;
    }
    if (conn) {
      auto since = Steady::now();
      self->conn_ = conn;
      ++self->connects_;
      self->last_error_.clear();
      if (self->warned_) {
        log::info("redis: connected", {{"role", self->options_.role}, {"node", self->connected_to_.text()}});
        self->warned_ = false;
      }
      self->logged_error_.clear();
      self->healthy_.store(true, std::memory_order_relaxed);
      self->wake_ready_waiters();
      if (self->options_.on_connected) self->options_.on_connected();
      while (!conn->dead) {
        conn->closed.expires_at(Steady::time_point::max());
        co_await conn->closed.async_wait(kAwait);
      }
      if (self->stopped_) break;
      if (self->kicked_) {
        backoff = RedisClient::kMinBackoff;
        continue;
      }
      if (self->options_.on_failed) self->options_.on_failed("connection lost");
      if (Steady::now() - since >= kStableAfter) {
        backoff = RedisClient::kMinBackoff;
        continue;
      }
    } else if (self->kicked_) {
      // reconnect() aborted this attempt: the address changed, try the new one now.
      backoff = RedisClient::kMinBackoff;
      continue;
    } else if (self->no_address_) {
      // Nothing to connect to until the topology learns an address (and
      // calls reconnect()); its own failures are counted there.
      backoff = RedisClient::kMaxBackoff;
    } else {
      if (self->options_.on_error) self->options_.on_error("connect");
      self->note_failure(self->last_error_);
      if (self->options_.on_failed) self->options_.on_failed(self->last_error_);
    }
    if (self->stopped_) break;
    // ±20% jitter so every I/O thread of every replica does not reconnect in step.
    self->jitter_state_ = self->jitter_state_ * 1664525u + 1013904223u;
    double factor = 0.8 + 0.4 * static_cast<double>(self->jitter_state_ >> 8) / static_cast<double>(1u << 24);
    self->retry_timer_.expires_after(std::chrono::duration_cast<Steady::duration>(
        std::chrono::duration<double, std::milli>(static_cast<double>(backoff.count()) * factor)));
    co_await self->retry_timer_.async_wait(kAwait);
    backoff = self->kicked_ ? RedisClient::kMinBackoff : std::min(backoff * 2, RedisClient::kMaxBackoff);
  }
}

void RedisLink::reconnect() {
  if (stopped_) return;
  kicked_ = true;
  retry_timer_.cancel();
  if (attempt_) {
    auto at = std::move(attempt_);
    at->abort(*this, "address changed");
  }
  if (conn_) fail(conn_, "address changed");
}

void RedisLink::stop() {
  if (stopped_) return;
  stopped_ = true;
  healthy_.store(false, std::memory_order_relaxed);
  retry_timer_.cancel();
  if (attempt_) {
    auto at = std::move(attempt_);
    at->abort(*this, "stopped");
  }
  if (conn_) fail(conn_, "stopped");
  wake_ready_waiters();
}

}  // namespace canaryd::store
