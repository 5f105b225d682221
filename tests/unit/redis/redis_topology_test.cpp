// RedisClient on the topologies teams run (issue 16), each started by the
// test on free loopback ports with Debian's redis-server and redis-sentinel
// and stopped by PID: a primary + replica + 3 sentinels (a switch-over, the
// primary killed under load, pins written before honoured after), a sentinel
// that keeps naming a demoted primary (READONLY makes the client ask again),
// a 3-primary cluster (every key on its slot's primary; a slot migrated under
// load with ASK and MOVED followed and no command failing), an ACL user with
// only the commands canaryd needs, and TLS for Sentinel and Cluster.
//
// The client's io_context runs on a thread of its own, as an I/O thread
// would, so the test thread can kill processes and move slots while commands
// flow. Waits poll with a deadline; measured times are printed as
// "[measured] ...".
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <regex>

#include "metrics/metrics.hpp"
#include "redis_harness.hpp"
#include "store/redis_client.hpp"
#include "store/redis_topology.hpp"
#include "store/stores.hpp"

namespace canaryd::store {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;
using namespace canaryd::redis_harness;
using Steady = std::chrono::steady_clock;

double ms_since(Steady::time_point t) { return std::chrono::duration<double, std::milli>(Steady::now() - t).count(); }

void report(const std::string& what) { std::fprintf(stderr, "[measured] %s\n", what.c_str()); }

// An io_context on its own thread.
class Loop {
 public:
  Loop() : thread_([this] { ioc_.run(); }) {}
  ~Loop() {
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  net::io_context& ioc() { return ioc_; }
  net::any_io_executor executor() { return ioc_.get_executor(); }

  // Runs `fn` on the loop's thread and returns its result.
  template <class F>
  auto call(F fn) -> decltype(fn()) {
    std::promise<decltype(fn())> p;
    auto f = p.get_future();
    net::post(ioc_, [&] {
      if constexpr (std::is_void_v<decltype(fn())>) {
        fn();
        p.set_value();
      } else {
        p.set_value(fn());
      }
    });
    return f.get();
  }
  // Runs a coroutine on the loop and waits for it.
  template <class T>
  T run(net::awaitable<T> aw) {
    std::promise<T> p;
    auto f = p.get_future();
    net::co_spawn(ioc_, std::move(aw), [&p](std::exception_ptr e, T v) {
      if (e)
        p.set_exception(e);
      else
        p.set_value(std::move(v));
    });
    return f.get();
  }

 private:
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_{ioc_.get_executor()};
  std::thread thread_;
};

// Pins issued back to back by `workers` coroutines, each with a new key (or
// keys from `keys`, round robin), every result recorded with its time.
class Load {
 public:
  struct Result {
    Steady::time_point at;
    bool ok;
    std::string why;
    std::string key;
  };

  Load(std::shared_ptr<RedisClient> client, std::string prefix, std::vector<std::string> keys = {})
      : client_(std::move(client)), prefix_(std::move(prefix)), keys_(std::move(keys)) {}

  void start(net::io_context& ioc, int workers) {
    running_ = workers;
    for (int i = 0; i < workers; ++i) net::co_spawn(ioc, worker(this), net::detached);
  }
  void stop() {
    stop_ = true;
    poll_until([&] { return running_ == 0; }, 10s);
  }
  std::vector<Result> results() {
    std::lock_guard lock(mu_);
    return results_;
  }
  int count(bool ok, Steady::time_point since = {}) {
    std::lock_guard lock(mu_);
    return static_cast<int>(
        std::count_if(results_.begin(), results_.end(), [&](const Result& r) { return r.ok == ok && r.at >= since; }));
  }
  // Successes after `since` once no failure followed them: when the client
  // was back for good.
  std::optional<Steady::time_point> back_since(Steady::time_point since) {
    std::lock_guard lock(mu_);
    std::optional<Steady::time_point> first_ok;
    for (const auto& r : results_) {
      if (r.at < since) continue;
      if (!r.ok)
        first_ok.reset();
      else if (!first_ok)
        first_ok = r.at;
    }
    return first_ok;
  }
  // The key of the last command that succeeded.
  std::string last_ok_key() {
    std::lock_guard lock(mu_);
    for (auto it = results_.rbegin(); it != results_.rend(); ++it) {
      if (it->ok) return it->key;
    }
    return "";
  }
  std::map<std::string, int> failure_reasons(Steady::time_point since = {}) {
    std::lock_guard lock(mu_);
    std::map<std::string, int> out;
    for (const auto& r : results_) {
      if (!r.ok && r.at >= since) ++out[r.why];
    }
    return out;
  }

 private:
  std::vector<std::string> next_command() {
    const int n = next_++;
    std::string key = keys_.empty() ? prefix_ + std::to_string(n) : keys_[static_cast<std::size_t>(n) % keys_.size()];
    return {"SET", std::move(key), "canary", "NX", "EX", "600"};
  }
  void record(const Reply& r, const std::string& key) {
    std::lock_guard lock(mu_);
    results_.push_back({Steady::now(), r.ok(), r.ok() ? std::string() : r.str, key});
  }

  static net::awaitable<void> worker(Load* self) {
    net::steady_timer pace(co_await net::this_coro::executor);
    std::vector<std::string> argv;
    Reply r;
    while (!self->stop_) {
      argv = self->next_command();
      r = co_await self->client_->command(argv, "pin");
      self->record(r, argv[1]);
      // A failing client fails fast; pace the loop so a failure streak does
      // not spin (and so a live one is not a benchmark).
      pace.expires_after(r.ok() ? 1ms : 2ms);
      co_await pace.async_wait(net::as_tuple(net::use_awaitable));
    }
    --self->running_;
  }

  std::shared_ptr<RedisClient> client_;
  std::string prefix_;
  std::vector<std::string> keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int> running_{0};
  std::atomic<int> next_{0};
  std::mutex mu_;
  std::vector<Result> results_;
};

class TopologyTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& [loop, client] : clients_) loop->call([c = client] { c->stop(); });
    for (auto& [loop, client] : clients_) {
      poll_until([&] { return client.use_count() == 1; }, 3s);
    }
    clients_.clear();
    loops_.clear();
  }

  // An I/O thread; it lives until the test's clients are stopped.
  Loop& new_loop() { return *loops_.emplace_back(std::make_unique<Loop>()); }

  config::RedisConfig sentinel_config(const SentinelSet& set, std::chrono::milliseconds timeout = 200ms) {
    config::RedisConfig cfg;
    cfg.mode = config::RedisMode::sentinel;
    cfg.master_name = SentinelSet::kMaster;
    for (std::size_t i = 0; i < set.sentinel_ports().size(); ++i) {
      cfg.nodes.push_back({"127.0.0.1", static_cast<std::uint16_t>(set.sentinel_ports()[i])});
    }
    cfg.host = cfg.nodes.front().host;
    cfg.port = cfg.nodes.front().port;
    cfg.timeout = timeout;
    return cfg;
  }

  config::RedisConfig cluster_config(const std::vector<int>& seeds, std::chrono::milliseconds timeout = 200ms) {
    config::RedisConfig cfg;
    cfg.mode = config::RedisMode::cluster;
    for (int p : seeds) cfg.nodes.push_back({"127.0.0.1", static_cast<std::uint16_t>(p)});
    cfg.host = cfg.nodes.front().host;
    cfg.port = cfg.nodes.front().port;
    cfg.timeout = timeout;
    return cfg;
  }

  RedisClient::Options options() {
    RedisClient::Options o;
    o.on_error = [this](std::string_view op) {
      std::lock_guard lock(mu_);
      ++errors_[std::string(op)];
    };
    o.on_event = [this](RedisEvent e) {
      std::lock_guard lock(mu_);
      ++events_[e];
      if (e == RedisEvent::failover) followed_at_ = Steady::now();
    };
    return o;
  }

  std::shared_ptr<RedisClient> make_client(Loop& loop, const config::RedisConfig& cfg, RedisClient::Options o) {
    auto client = loop.call([&] { return RedisClient::create(loop.executor(), cfg, std::move(o)); });
    clients_.emplace_back(&loop, client);
    return client;
  }
  std::shared_ptr<RedisClient> make_client(Loop& loop, const config::RedisConfig& cfg) {
    return make_client(loop, cfg, options());
  }

  static Reply cmd(Loop& loop, const std::shared_ptr<RedisClient>& client, std::vector<std::string> argv) {
    return loop.run(client->command(argv, "other"));
  }
  // Keeps asking until `argv` succeeds (the client is still connecting).
  static bool eventually_ok(Loop& loop, const std::shared_ptr<RedisClient>& client, std::vector<std::string> argv,
                            std::chrono::milliseconds limit = 10s) {
    return poll_until([&] { return cmd(loop, client, argv).ok(); }, limit);
  }

  int event_count(RedisEvent e) {
    std::lock_guard lock(mu_);
    return events_[e];
  }
  double followed_ms(Steady::time_point since) {
    std::lock_guard lock(mu_);
    return followed_at_ ? std::chrono::duration<double, std::milli>(*followed_at_ - since).count() : -1;
  }
  int error_count(const std::string& op) {
    std::lock_guard lock(mu_);
    return errors_[op];
  }

  TempDir dir_;
  std::mutex mu_;
  std::map<std::string, int> errors_;
  std::map<RedisEvent, int> events_;
  std::optional<Steady::time_point> followed_at_;  // the last failover event
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::pair<Loop*, std::shared_ptr<RedisClient>>> clients_;
};

// ---------------------------------------------------------------- key slots

TEST(RedisKeySlot, CrcAndHashTagsAsRedisComputesThem) {
  // The values CLUSTER KEYSLOT gives (checked against redis-server 7.0).
  EXPECT_EQ(RedisClient::key_slot("foo"), 12182);
  EXPECT_EQ(RedisClient::key_slot("123456789"), 12739);  // CRC16/XMODEM check value 0x31C3
  EXPECT_EQ(RedisClient::key_slot("{user1000}.following"), RedisClient::key_slot("{user1000}.followers"));
  EXPECT_EQ(RedisClient::key_slot("{user1000}.following"), RedisClient::key_slot("user1000"));
  EXPECT_EQ(RedisClient::key_slot("foo{}{bar}"), RedisClient::key_slot("foo{}{bar}"));  // empty tag: whole key
  EXPECT_NE(RedisClient::key_slot("foo{}{bar}"), RedisClient::key_slot("bar"));
  EXPECT_EQ(RedisClient::key_slot("foo{{bar}}zap"), RedisClient::key_slot("{bar"));
  // The rollout keys share a slot; pins spread.
  EXPECT_EQ(RedisClient::key_slot("{canaryd}:rollout"), RedisClient::key_slot("{canaryd}:rollout:events"));
  EXPECT_EQ(RedisClient::key_slot("{canaryd}:rollout"), RedisClient::key_slot("{canaryd}:rollout:lease"));
}

TEST_F(TopologyTest, KeySlotMatchesTheServer) {
  RedisServer redis(dir_, {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}, nullptr, "node", true);
  for (std::string key :
       {"foo", "canaryd:pin:0:0123456789abcdef0123456789abcdef", "{canaryd}:rollout", "a{b}c", "{}x"}) {
    EXPECT_EQ(redis.cmd({"CLUSTER", "KEYSLOT", key}), std::to_string(RedisClient::key_slot(key))) << key;
  }
}

// ---------------------------------------------------------------- Sentinel

TEST_F(TopologyTest, SentinelSwitchoverMovesEveryThreadsClientThroughOneWatcher) {
  SentinelSet set(dir_, {});
  ASSERT_TRUE(set.wait_ready()) << "the sentinels did not see each other and the replica";
  const int new_primary = set.replica().port();

  // Two I/O threads, one topology, as Stores makes them.
  Loop& t0 = new_loop();
  Loop& t1 = new_loop();
  const auto cfg = sentinel_config(set);
  auto o = options();
  auto topology = t0.call([&] { return RedisTopology::create(t0.executor(), cfg, {o.on_event, nullptr}); });
  o.topology = topology;
  auto a = make_client(t0, cfg, o);
  auto b = make_client(t1, cfg, o);
  ASSERT_TRUE(eventually_ok(t0, a, {"SET", "before", "canary"}));
  ASSERT_TRUE(eventually_ok(t1, b, {"PING"}));
  EXPECT_EQ(set.primary().cmd({"GET", "before"}), "canary");
  // The watcher is the only one talking to the sentinels: one subscription
  // per sentinel, whatever the number of threads.
  auto clients = set.sentinel_cmd({"CLIENT", "LIST"});
  ASSERT_TRUE(clients);
  int subscribed = 0;
  for (std::size_t pos = 0; (pos = clients->find(" sub=1 ", pos)) != std::string::npos; ++pos) ++subscribed;
  EXPECT_EQ(subscribed, 1) << *clients;
  ASSERT_EQ(set.primary().cmd({"WAIT", "1", "2000"}), "1") << "the replica did not get the pin";

  Load load_a(a, "a:"), load_b(b, "b:");
  load_a.start(t0.ioc(), 2);
  load_b.start(t1.ioc(), 2);
  ASSERT_TRUE(poll_until([&] { return load_a.count(true) > 20 && load_b.count(true) > 20; }, 5s));
  const auto t_switch = Steady::now();
  ASSERT_EQ(set.sentinel_cmd({"SENTINEL", "FAILOVER", SentinelSet::kMaster}), "OK");
  ASSERT_TRUE(poll_until([&] { return set.all_name(new_primary); }, 15s)) << "the sentinels did not switch";
  const double switched_ms = ms_since(t_switch);
  // Both threads write to the new primary again.
  ASSERT_TRUE(poll_until(
      [&] {
        return load_a.back_since(t_switch) && load_b.back_since(t_switch) &&
               set.replica().cmd({"EXISTS", load_a.last_ok_key()}) == "1" &&
               set.replica().cmd({"EXISTS", load_b.last_ok_key()}) == "1";
      },
      5s));
  const auto checked = Steady::now();
  ASSERT_TRUE(poll_until([&] { return load_a.count(true, checked) > 20 && load_b.count(true, checked) > 20; }, 5s));
  load_a.stop();
  load_b.stop();
  EXPECT_EQ(load_a.count(false, checked) + load_b.count(false, checked), 0) << "failures after the client was back";
  const int failed = load_a.count(false, t_switch) + load_b.count(false, t_switch);
  const int total = failed + load_a.count(true, t_switch) + load_b.count(true, t_switch);
  report("Sentinel switch-over (SENTINEL FAILOVER): the watcher followed the new primary after " +
         std::to_string(static_cast<int>(followed_ms(t_switch))) + " ms (every sentinel named it after " +
         std::to_string(static_cast<int>(switched_ms)) + " ms); " + std::to_string(failed) + " of " +
         std::to_string(total) + " pins failed meanwhile (READONLY from the demoted primary: decided by hash)");
  EXPECT_EQ(event_count(RedisEvent::failover), 1);
  EXPECT_EQ(t0.call([&] { return topology->primary(); }).port, new_primary);
  // The pin written before the switch-over is on the new primary.
  EXPECT_EQ(cmd(t1, b, {"GET", "before"}).str, "canary");
  t0.call([&] { topology->stop(); });
}

TEST_F(TopologyTest, SentinelPrimaryKilledUnderLoadIsFollowedWithinTheFailoverTime) {
  SentinelSet set(dir_, {});
  ASSERT_TRUE(set.wait_ready()) << "the sentinels did not see each other and the replica";
  const int new_primary = set.replica().port();
  Loop& t0 = new_loop();
  auto client = make_client(t0, sentinel_config(set, 100ms));
  ASSERT_TRUE(eventually_ok(t0, client, {"SET", "pinned-before", "canary", "EX", "600"}));
  // Asynchronous replication: a pin survives the loss of the primary once a
  // replica has it (WAIT here; docs/redis.md says what that means for pins).
  ASSERT_EQ(set.primary().cmd({"WAIT", "1", "2000"}), "1");

  Load load(client, "k:");
  load.start(t0.ioc(), 4);
  ASSERT_TRUE(poll_until([&] { return load.count(true) > 50; }, 5s));
  const auto killed = Steady::now();
  set.primary().kill9();
  ASSERT_TRUE(poll_until([&] { return set.all_name(new_primary); }, 30s)) << "no failover";
  const double sentinels_ms = ms_since(killed);
  ASSERT_TRUE(poll_until(
      [&] { return load.back_since(killed).has_value() && load.count(true, Steady::now() - 50ms) > 0; }, 10s));
  const auto back = *load.back_since(killed);
  const double follow_ms = std::chrono::duration<double, std::milli>(back - killed).count();
  const double watcher_ms = followed_ms(killed);
  const auto settled = Steady::now();
  ASSERT_TRUE(poll_until([&] { return load.count(true, settled) > 50; }, 5s));
  load.stop();
  const int failed = load.count(false, killed);
  report("Sentinel failover (primary kill -9, down-after 1000 ms): the watcher followed the new primary after " +
         std::to_string(static_cast<int>(watcher_ms)) + " ms, the first pin on it succeeded after " +
         std::to_string(static_cast<int>(follow_ms)) + " ms (every sentinel named it after " +
         std::to_string(static_cast<int>(sentinels_ms)) + " ms); " + std::to_string(failed) + " of " +
         std::to_string(load.count(false, killed) + load.count(true, killed)) +
         " pins (4 loops, back to back) failed fast meanwhile: decided by hash");
  // Within the sentinels' failover time + 2 s.
  EXPECT_LT(follow_ms, sentinels_ms + 2000);
  EXPECT_EQ(load.count(false, settled), 0);
  EXPECT_EQ(cmd(t0, client, {"GET", "pinned-before"}).str, "canary") << "a replicated pin was lost";
  EXPECT_EQ(event_count(RedisEvent::failover), 1);
  for (const auto& [why, n] : load.failure_reasons(killed)) report("  failed: " + why + " x" + std::to_string(n));
}

// A stand-in sentinel: answers SENTINEL MASTER with whatever port the test
// sets, takes SUBSCRIBE and never publishes (a sentinel that missed the
// switch, or a subscription that was down when it happened).
class FakeSentinel {
 public:
  explicit FakeSentinel(Loop& loop)
      : loop_(loop),
        acceptor_(std::make_shared<net::ip::tcp::acceptor>(
            loop.ioc(), net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0))) {
    net::co_spawn(loop.ioc(), serve(acceptor_, state_), net::detached);
  }
  ~FakeSentinel() {
    loop_.call([a = acceptor_] {
      boost::system::error_code ec;
      a->close(ec);
    });
  }
  int port() const { return acceptor_->local_endpoint().port(); }
  void name(int primary_port, int epoch) {
    state_->port = primary_port;
    state_->epoch = epoch;
  }
  int queries() const { return state_->queries; }

 private:
  struct State {
    std::atomic<int> port{0};
    std::atomic<int> epoch{0};
    std::atomic<int> queries{0};
  };

  static std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

  static net::awaitable<void> session(net::ip::tcp::socket socket, std::shared_ptr<State> state) {
    // Owned, not freed at the end: a session still reading when the loop stops is
    // destroyed with its frame, and only a destructor runs then.
    std::unique_ptr<redisReader, void (*)(redisReader*)> owner(redisReaderCreate(), redisReaderFree);
    redisReader* reader = owner.get();
    char buf[4096];
    std::string out;
    boost::system::error_code ec;
    for (;;) {
      std::size_t n = co_await socket.async_read_some(net::buffer(buf), net::redirect_error(net::use_awaitable, ec));
      if (ec || n == 0) break;
      redisReaderFeed(reader, buf, n);
      void* raw = nullptr;
      out.clear();
      while (redisReaderGetReply(reader, &raw) == REDIS_OK && raw) {
        auto* r = static_cast<redisReply*>(raw);
        std::string name = r->elements > 0 ? std::string(r->element[0]->str, r->element[0]->len) : "";
        for (auto& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (name == "SENTINEL") {
          ++state->queries;
          const std::vector<std::string> fields = {"name",         SentinelSet::kMaster,
                                                   "ip",           "127.0.0.1",
                                                   "port",         std::to_string(state->port.load()),
                                                   "flags",        "master",
                                                   "config-epoch", std::to_string(state->epoch.load())};
          out += "*" + std::to_string(fields.size()) + "\r\n";
          for (const auto& f : fields) out += bulk(f);
        } else if (name == "SUBSCRIBE") {
          out += "*3\r\n" + bulk("subscribe") + bulk("+switch-master") + ":1\r\n";
        } else {
          out += "+OK\r\n";
        }
        freeReplyObject(raw);
      }
      co_await net::async_write(socket, net::buffer(out), net::redirect_error(net::use_awaitable, ec));
      if (ec) break;
    }
  }

  static net::awaitable<void> serve(std::shared_ptr<net::ip::tcp::acceptor> acceptor, std::shared_ptr<State> state) {
    for (;;) {
      boost::system::error_code ec;
      auto socket = co_await acceptor->async_accept(net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;
      net::co_spawn(acceptor->get_executor(), session(std::move(socket), state), net::detached);
    }
  }

  Loop& loop_;
  std::shared_ptr<net::ip::tcp::acceptor> acceptor_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

TEST_F(TopologyTest, ReadonlyFromADemotedPrimaryMakesTheClientAskTheSentinelsAgain) {
  RedisServer a(dir_);
  RedisServer b(dir_, {"--replicaof", "127.0.0.1", std::to_string(a.port())});
  Loop& t0 = new_loop();
  FakeSentinel sentinel(t0);
  sentinel.name(a.port(), 1);
  config::RedisConfig cfg;
  cfg.mode = config::RedisMode::sentinel;
  cfg.master_name = SentinelSet::kMaster;
  cfg.nodes = {{"127.0.0.1", static_cast<std::uint16_t>(sentinel.port())}};
  cfg.timeout = 200ms;
  const auto t_start = Steady::now();
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(eventually_ok(t0, client, {"SET", "k", "canary"}));
  report("fake sentinel: first write after " + std::to_string(static_cast<int>(ms_since(t_start))) + " ms");

  // Swap the roles behind the client's back; the sentinel now names b but
  // never says so on its channel.
  ASSERT_EQ(b.cmd({"REPLICAOF", "NO", "ONE"}), "OK");
  ASSERT_EQ(a.cmd({"REPLICAOF", "127.0.0.1", std::to_string(b.port())}), "OK");
  sentinel.name(b.port(), 2);
  const int queries = sentinel.queries();
  const auto t = Steady::now();
  Reply r = cmd(t0, client, {"SET", "k2", "canary"});
  EXPECT_EQ(r.type, Reply::Type::error);
  EXPECT_TRUE(r.str.starts_with("READONLY")) << r.str;
  // Long before the 5 s poll: the READONLY asked the sentinels again.
  ASSERT_TRUE(poll_until([&] { return cmd(t0, client, {"SET", "k3", "canary"}).ok(); }, 2s));
  report("READONLY -> re-discovery -> writing to the new primary after " +
         std::to_string(static_cast<int>(ms_since(t))) + " ms");
  EXPECT_LT(ms_since(t), 2000);
  EXPECT_GT(sentinel.queries(), queries);
  EXPECT_EQ(b.cmd({"GET", "k3"}), "canary");
  EXPECT_EQ(event_count(RedisEvent::failover), 1);
}

TEST_F(TopologyTest, UnknownMasterNameIsAClearErrorAndNothingConnects) {
  SentinelSet set(dir_, {.sentinels = 1, .replica = false});
  ASSERT_TRUE(set.wait_ready(10s));
  Loop& t0 = new_loop();
  auto cfg = sentinel_config(set);
  cfg.master_name = "no-such-master";
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(poll_until(
      [&] { return t0.call([&] { return client->last_error(); }).find("No such master") != std::string::npos; }, 5s))
      << t0.call([&] { return client->last_error(); });
  EXPECT_FALSE(client->healthy());
  EXPECT_FALSE(cmd(t0, client, {"GET", "k"}).ok());
  EXPECT_GT(event_count(RedisEvent::discovery_error), 0);
}

TEST_F(TopologyTest, StoresShareOneWatcherAndCountTheFailover) {
  SentinelSet set(dir_, {});
  ASSERT_TRUE(set.wait_ready());
  config::Config cfg;
  cfg.redis = sentinel_config(set);
  metrics::Metrics::Setup setup;
  metrics::Metrics metrics(setup);
  ManualClock clock;
  Loop& t0 = new_loop();
  Loop& t1 = new_loop();
  auto stores = make_stores(cfg, 2, &metrics, clock);
  AssignmentStore* a = t0.call([&] { return stores.for_thread(0, t0.ioc()); });
  AssignmentStore* b = t1.call([&] { return stores.for_thread(1, t1.ioc()); });
  ASSERT_TRUE(stores.topology());
  ASSERT_TRUE(poll_until([&] { return stores.healthy(); }, 10s));
  EXPECT_TRUE(t0.run(a->pin_canary("p", 60s)));
  EXPECT_EQ(t1.run(b->has_canary_pin("p")), true);
  ASSERT_EQ(set.sentinel_cmd({"SENTINEL", "FAILOVER", SentinelSet::kMaster}), "OK");
  ASSERT_TRUE(poll_until([&] { return set.all_name(set.replica().port()); }, 15s)) << "the sentinels did not switch";
  // Both threads' stores write to the new primary.
  int n = 0;
  ASSERT_TRUE(poll_until(
      [&] {
        const std::string ka = "after-a-" + std::to_string(++n), kb = "after-b-" + std::to_string(n);
        return t0.run(a->pin_canary(ka, 60s)) && t1.run(b->pin_canary(kb, 60s)) &&
               set.replica().cmd({"EXISTS", ka}) == "1" && set.replica().cmd({"EXISTS", kb}) == "1";
      },
      5s));
  EXPECT_TRUE(poll_until([&] { return stores.healthy(); }, 5s));
  const std::string text = metrics.expose();
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(ai_proxy_redis_failovers_total 1\b)"))) << text;
  stores.stop();
  poll_until([] { return false; }, 50ms);  // let the posted stops run before the loops go
}

TEST_F(TopologyTest, SentinelOverTls) {
  Certs certs(dir_);
  certs.issue("node", "IP:127.0.0.1,DNS:localhost");
  SentinelSet set(dir_, {.sentinels = 1, .replica = false, .tls = &certs});
  ASSERT_TRUE(set.wait_ready(10s));
  Loop& t0 = new_loop();
  auto cfg = sentinel_config(set);
  cfg.nodes = {{"127.0.0.1", static_cast<std::uint16_t>(set.sentinel_tls_ports()[0])}};
  cfg.tls = true;
  cfg.ca_file = certs.ca();
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(eventually_ok(t0, client, {"SET", "tls-pin", "canary"})) << t0.call([&] { return client->last_error(); });
  EXPECT_EQ(set.primary().cmd({"GET", "tls-pin"}), "canary");
  // The sentinel named the primary's TLS port, and the client spoke TLS to it.
  auto list = set.primary().cmd({"CLIENT", "LIST"});
  ASSERT_TRUE(list);
  EXPECT_NE(list->find("laddr=127.0.0.1:" + std::to_string(set.primary().tls_port())), std::string::npos) << *list;
}

// ---------------------------------------------------------------- Cluster

std::vector<int> ports_of(ClusterSet& cluster) {
  std::vector<int> out;
  for (std::size_t i = 0; i < cluster.size(); ++i) out.push_back(cluster.data_port(cluster.node(i)));
  return out;
}

TEST_F(TopologyTest, ClusterSendsEveryKeyToItsSlotsPrimary) {
  ClusterSet cluster(dir_);
  Loop& t0 = new_loop();
  // One seed is enough: the others are learnt from CLUSTER SLOTS.
  auto client = make_client(t0, cluster_config({cluster.node(0).port()}));
  ASSERT_TRUE(poll_until([&] { return client->healthy(); }, 10s)) << t0.call([&] { return client->last_error(); });
  constexpr int kKeys = 300;
  int ok = 0;
  for (int i = 0; i < kKeys; ++i) {
    ok += cmd(t0, client, {"SET", "canaryd:pin:0:" + std::to_string(i), "canary", "NX", "EX", "60"}).ok();
  }
  EXPECT_EQ(ok, kKeys);
  int total = 0;
  for (std::size_t n = 0; n < cluster.size(); ++n) {
    const int keys = std::stoi(cluster.node(n).cmd({"DBSIZE"}).value_or("0"));
    EXPECT_GT(keys, kKeys / 6) << "node " << n << " got too few pins: they do not spread";
    total += keys;
  }
  EXPECT_EQ(total, kKeys);
  EXPECT_EQ(event_count(RedisEvent::moved), 0) << "the slot map was not used";
  // A multi-key script on one hash tag runs on the tag's node.
  Reply r = cmd(t0, client,
                {"EVAL", "redis.call('SET', KEYS[1], 'x'); return redis.call('SET', KEYS[2], 'y')", "2",
                 "{canaryd}:rollout", "{canaryd}:rollout:lease"});
  EXPECT_TRUE(r.ok()) << r.str;
  EXPECT_EQ(t0.call([&] { return client->connects(); }), cluster.size());
}

TEST_F(TopologyTest, ClusterSlotMigratedUnderLoadNoCommandFails) {
  ClusterSet cluster(dir_);
  // The client logs in as an ACL user with only what canaryd needs on a
  // cluster (docs/redis.md): ASKING and CLUSTER SLOTS besides the data commands.
  for (std::size_t n = 0; n < cluster.size(); ++n) {
    ASSERT_EQ(
        cluster.node(n).cmd(
            {"ACL",          "SETUSER",  "canaryd",       "on",       ">canaryd-pw", "resetkeys", "~canaryd:*",
             "~{canaryd}:*", "~{mig}:*", "resetchannels", "-@all",    "+get",        "+set",      "+eval",
             "+evalsha",     "+xadd",    "+xread",        "+pexpire", "+ping",       "+asking",   "+cluster|slots"}),
        "OK");
  }
  const int slot = RedisClient::key_slot("mig");
  const std::size_t from = *cluster.owner(slot);
  const std::size_t to = (from + 1) % cluster.size();
  // Keys to migrate: all in one slot ({mig}), written before the load starts.
  std::vector<std::string> keys;
  for (int i = 0; i < 600; ++i) keys.push_back("{mig}:pin:" + std::to_string(i));
  for (int i = 0; i < 400; ++i) ASSERT_EQ(cluster.node(from).cmd({"SET", keys[i], "canary"}), "OK");

  Loop& t0 = new_loop();
  auto cfg = cluster_config(ports_of(cluster), 250ms);
  cfg.username = "canaryd";
  cfg.password_value = "canaryd-pw";
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(poll_until([&] { return client->healthy(); }, 10s)) << t0.call([&] { return client->last_error(); });
  EXPECT_EQ(cmd(t0, client, {"FLUSHALL"}).type, Reply::Type::error);  // NOPERM: the user is limited

  // The load: SET NX on the 600 keys of the migrating slot, round robin (the
  // first 400 exist: found on either side; the others are created wherever
  // the slot is), plus new keys on every slot.
  Load in_slot(client, "", keys), spread(client, "canaryd:pin:1:");
  in_slot.start(t0.ioc(), 3);
  spread.start(t0.ioc(), 1);
  ASSERT_TRUE(poll_until([&] { return in_slot.count(true) > 100; }, 5s));
  const auto started = Steady::now();
  cluster.migrate(slot, from, to, 40, [&] {
    const int before = in_slot.count(true);
    poll_until([&] { return in_slot.count(true) >= before + 30; }, 2s);  // commands flow between batches
  });
  const double migrate_ms = ms_since(started);
  const auto after = Steady::now();
  ASSERT_TRUE(poll_until([&] { return in_slot.count(true, after) > 200; }, 5s));
  in_slot.stop();
  spread.stop();
  report("slot " + std::to_string(slot) + " migrated under load in " + std::to_string(static_cast<int>(migrate_ms)) +
         " ms: " + std::to_string(in_slot.count(true)) + " commands on the slot and " +
         std::to_string(spread.count(true)) + " elsewhere, " + std::to_string(event_count(RedisEvent::ask)) +
         " ASK and " + std::to_string(event_count(RedisEvent::moved)) + " MOVED followed, " +
         std::to_string(in_slot.count(false) + spread.count(false)) + " failed");
  for (const auto& [why, n] : in_slot.failure_reasons()) ADD_FAILURE() << "failed: " << why << " x" << n;
  EXPECT_EQ(in_slot.count(false), 0);
  EXPECT_EQ(spread.count(false), 0);
  EXPECT_GT(event_count(RedisEvent::ask), 0);
  EXPECT_GT(event_count(RedisEvent::moved), 0);
  EXPECT_EQ(error_count("pin"), 0);
  // Every key of the slot is on its new node now, and the client goes there directly.
  EXPECT_EQ(cluster.node(to).cmd({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "600");
  EXPECT_EQ(cluster.node(from).cmd({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "0");
  ASSERT_TRUE(poll_until([&] { return t0.call([&] { return client->topology()->version(); }) >= 2; }, 3s));
  const int moved = event_count(RedisEvent::moved);
  EXPECT_TRUE(cmd(t0, client, {"GET", keys[0]}).ok());
  EXPECT_EQ(event_count(RedisEvent::moved), moved) << "the refreshed slot map still sends the slot to its old node";
}

TEST_F(TopologyTest, ClusterOverTls) {
  Certs certs(dir_);
  certs.issue("node", "IP:127.0.0.1,DNS:localhost");
  ClusterSet cluster(dir_, 3, &certs);
  Loop& t0 = new_loop();
  auto cfg = cluster_config({cluster.data_port(cluster.node(0))});
  cfg.tls = true;
  cfg.ca_file = certs.ca();
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(poll_until([&] { return client->healthy(); }, 10s)) << t0.call([&] { return client->last_error(); });
  int ok = 0;
  for (int i = 0; i < 60; ++i) ok += cmd(t0, client, {"SET", "canaryd:pin:0:" + std::to_string(i), "canary"}).ok();
  EXPECT_EQ(ok, 60);
  for (std::size_t n = 0; n < cluster.size(); ++n) EXPECT_NE(cluster.node(n).cmd({"DBSIZE"}), "0");
}

// ---------------------------------------------------------------- ACL

TEST_F(TopologyTest, AclUserWithOnlyCanarydsCommandsAndAWrongPassword) {
  RedisServer redis(dir_);
  ASSERT_EQ(redis.cmd({"ACL", "SETUSER", "canaryd", "on", ">right-pw", "resetkeys", "~canaryd:*", "~{canaryd}:*",
                       "resetchannels", "-@all", "+get", "+set", "+eval", "+evalsha", "+xadd", "+xread", "+pexpire",
                       "+ping", "+select"}),
            "OK");
  Loop& t0 = new_loop();
  config::RedisConfig cfg;
  cfg.host = "127.0.0.1";
  cfg.port = static_cast<std::uint16_t>(redis.port());
  cfg.timeout = 200ms;
  cfg.username = "canaryd";
  cfg.password_value = "right-pw";
  cfg.db = 2;
  auto client = make_client(t0, cfg);
  ASSERT_TRUE(eventually_ok(t0, client, {"SET", "canaryd:pin:0:x", "canary", "NX", "EX", "60"}))
      << t0.call([&] { return client->last_error(); });
  EXPECT_EQ(cmd(t0, client, {"GET", "canaryd:pin:0:x"}).str, "canary");
  // The rollout's scripts run with the user's rights: GET, SET, XADD, PEXPIRE inside EVAL.
  Reply r = cmd(t0, client,
                {"EVAL",
                 "redis.call('SET', KEYS[1], 'v'); redis.call('PEXPIRE', KEYS[1], 1000); "
                 "return redis.call('XADD', KEYS[2], '*', 'version', '1')",
                 "2", "{canaryd}:rollout:lease", "{canaryd}:rollout:events"});
  EXPECT_TRUE(r.ok()) << r.str;
  EXPECT_TRUE(cmd(t0, client, {"XREAD", "COUNT", "1", "STREAMS", "{canaryd}:rollout:events", "0"}).ok());
  // ... and nothing else.
  r = cmd(t0, client, {"GET", "other:key"});
  EXPECT_TRUE(r.str.starts_with("NOPERM")) << r.str;
  r = cmd(t0, client, {"KEYS", "*"});
  EXPECT_TRUE(r.str.starts_with("NOPERM")) << r.str;
  EXPECT_TRUE(client->healthy());

  auto wrong = cfg;
  wrong.password_value = "wrong-pw";
  auto bad = make_client(t0, wrong);
  ASSERT_TRUE(poll_until([&] { return error_count("connect") >= 1; }, 5s));
  const std::string why = t0.call([&] { return bad->last_error(); });
  EXPECT_NE(why.find("WRONGPASS"), std::string::npos) << why;
  EXPECT_NE(why.find("as canaryd"), std::string::npos) << why;
  EXPECT_EQ(why.find("wrong-pw"), std::string::npos) << "the password leaked into an error";
  EXPECT_FALSE(bad->healthy());
}

}  // namespace
}  // namespace canaryd::store
