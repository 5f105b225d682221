// RedisClient / RedisStore / Stores against a real redis-server (and stunnel
// for rediss://), each started by the test on a free loopback port and stopped
// by PID. Time is real here (the client's deadlines are Asio timers); waits are
// polling loops with deadlines, never fixed sleeps.
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "metrics/metrics.hpp"
#include "redis_harness.hpp"
#include "store/redis_client.hpp"
#include "store/redis_store.hpp"
#include "store/stores.hpp"

namespace canaryd::store {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;
using namespace canaryd::redis_harness;
using Steady = std::chrono::steady_clock;

// ---------------------------------------------------------------- fixture

class RedisTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& c : clients_) c->stop();
    // Let every coroutine see the stop and let go of its client.
    wait_until(
        [&] {
          for (auto& c : clients_) {
            if (c.use_count() > 1) return false;
          }
          return true;
        },
        3s);
    clients_.clear();
  }

  config::RedisConfig config_for(int port, std::chrono::milliseconds timeout = 300ms) {
    config::RedisConfig cfg;
    cfg.url = "redis://127.0.0.1:" + std::to_string(port) + "/0";
    cfg.host = "127.0.0.1";
    cfg.port = static_cast<std::uint16_t>(port);
    cfg.timeout = timeout;
    return cfg;
  }

  std::shared_ptr<RedisClient> make_client(const config::RedisConfig& cfg) {
    auto client =
        RedisClient::create(ioc_.get_executor(), cfg, [this](std::string_view op) { ++errors_[std::string(op)]; });
    clients_.push_back(client);
    return client;
  }

  bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
    auto deadline = Steady::now() + limit;
    while (Steady::now() < deadline) {
      if (pred()) return true;
      ioc_.run_for(5ms);
    }
    return pred();
  }

  template <class T>
  T run_co(net::awaitable<T> aw, std::chrono::milliseconds limit = 10s) {
    auto out = std::make_shared<std::optional<T>>();
    auto err = std::make_shared<std::exception_ptr>();
    net::co_spawn(ioc_, std::move(aw), [out, err](std::exception_ptr e, T v) {
      *err = e;
      *out = std::move(v);
    });
    auto deadline = Steady::now() + limit;
    while (!out->has_value() && Steady::now() < deadline) ioc_.run_one_for(10ms);
    if (*err) std::rethrow_exception(*err);
    if (!out->has_value()) throw std::runtime_error("coroutine did not finish in time");
    return std::move(**out);
  }

  // The proxy's pin step for a user the hash puts on `hash`: canary ->
  // pin_canary, control -> has_canary_pin. The arm in force, nullopt when the
  // store failed.
  static net::awaitable<std::optional<Arm>> pin(AssignmentStore& store, std::string key, Arm hash,
                                                std::chrono::seconds ttl) {
    if (hash == Arm::canary) {
      bool ok = co_await store.pin_canary(std::move(key), ttl);
      co_return ok ? std::optional<Arm>(Arm::canary) : std::nullopt;
    }
    std::optional<bool> has = co_await store.has_canary_pin(std::move(key));
    if (!has) co_return std::nullopt;
    co_return *has ? Arm::canary : Arm::control;
  }

  // Runs one pin step and measures it.
  std::pair<std::optional<Arm>, std::chrono::milliseconds> timed_pin(AssignmentStore& store, std::string key, Arm arm) {
    auto start = Steady::now();
    auto result = run_co(pin(store, std::move(key), arm, 60s));
    return {result, std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start)};
  }

  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_{ioc_.get_executor()};
  TempDir dir_;
  std::map<std::string, int> errors_;
  std::vector<std::shared_ptr<RedisClient>> clients_;
};

// ---------------------------------------------------------------- tests

TEST_F(RedisTest, OnlyCanaryPinsAreStoredAndFound) {
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port()));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s)) << client->last_error();
  RedisStore store(client);
  EXPECT_EQ(store.name(), "redis");
  EXPECT_TRUE(store.healthy());

  EXPECT_TRUE(run_co(store.pin_canary("canaryd:pin:0:a", 60s)));
  EXPECT_TRUE(run_co(store.pin_canary("canaryd:pin:0:a", 60s)));  // exists already: still fine
  EXPECT_EQ(run_co(store.has_canary_pin("canaryd:pin:0:a")), true);
  EXPECT_EQ(run_co(store.has_canary_pin("canaryd:pin:0:b")), false);
  EXPECT_EQ(sync_cmd(redis.port(), {"GET", "canaryd:pin:0:a"}), "canary");
  EXPECT_EQ(sync_cmd(redis.port(), {"EXISTS", "canaryd:pin:0:b"}), "0");  // a lookup writes nothing
  // A control pin left by an older canaryd is no canary pin.
  ASSERT_EQ(sync_cmd(redis.port(), {"SET", "canaryd:pin:0:c", "control"}), "OK");
  EXPECT_EQ(run_co(store.has_canary_pin("canaryd:pin:0:c")), false);
  EXPECT_EQ(sync_cmd(redis.port(), {"DBSIZE"}), "2");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(RedisTest, PinTtlIsAppliedOnceAndKept) {
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port()));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  EXPECT_TRUE(run_co(store.pin_canary("k:ttl", 120s)));
  auto ttl = sync_cmd(redis.port(), {"TTL", "k:ttl"});
  ASSERT_TRUE(ttl);
  EXPECT_GE(std::stoi(*ttl), 110);
  EXPECT_LE(std::stoi(*ttl), 120);
  // NX: a later pin does not extend the first one's TTL.
  EXPECT_TRUE(run_co(store.pin_canary("k:ttl", 3600s)));
  ttl = sync_cmd(redis.port(), {"TTL", "k:ttl"});
  ASSERT_TRUE(ttl);
  EXPECT_LE(std::stoi(*ttl), 120);

  // ttl 0 = pinning off: nothing stored.
  EXPECT_TRUE(run_co(store.pin_canary("k:zero", 0s)));
  EXPECT_EQ(sync_cmd(redis.port(), {"EXISTS", "k:zero"}), "0");
}

TEST_F(RedisTest, ForeignValueUnderThePinKeyIsAFailure) {
  RedisServer redis(dir_);
  ASSERT_EQ(sync_cmd(redis.port(), {"SET", "k:odd", "banana"}), "OK");
  auto client = make_client(config_for(redis.port()));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  EXPECT_EQ(run_co(store.has_canary_pin("k:odd")), std::nullopt);
  EXPECT_EQ(errors_["pin"], 1);
}

TEST_F(RedisTest, RawCommandsAndReplyTypes) {
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port()));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  Reply r = run_co(client->command(std::vector<std::string>{"RPUSH", "l", "a", std::string("b\0c", 3)}, "other"));
  EXPECT_EQ(r.type, Reply::Type::integer);
  EXPECT_EQ(r.integer, 2);
  r = run_co(client->command(std::vector<std::string>{"LRANGE", "l", "0", "-1"}, "other"));
  ASSERT_EQ(r.type, Reply::Type::array);
  ASSERT_EQ(r.elements.size(), 2u);
  EXPECT_EQ(r.elements[1].str, std::string("b\0c", 3));  // binary-safe
  r = run_co(client->command({"PING"}, "other"));
  EXPECT_EQ(r.type, Reply::Type::status);
  EXPECT_EQ(r.str, "PONG");
  r = run_co(client->command({"GET", "l"}, "get"));  // WRONGTYPE
  EXPECT_EQ(r.type, Reply::Type::error);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(errors_["get"], 1);
  r = run_co(client->command({"GET", "missing"}, "get"));
  EXPECT_EQ(r.type, Reply::Type::nil);
  EXPECT_TRUE(r.ok());
}

TEST_F(RedisTest, AuthWithPassword) {
  RedisServer redis(dir_, {"--requirepass", "s3cret-pw"});
  auto cfg = config_for(redis.port());
  cfg.password_value = "s3cret-pw";
  auto client = make_client(cfg);
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s)) << client->last_error();
  RedisStore store(client);
  EXPECT_EQ(run_co(pin(store, "k:auth", Arm::canary, 60s)), Arm::canary);
  EXPECT_EQ(sync_cmd(redis.port(), {"GET", "k:auth"}, "s3cret-pw"), "canary");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(RedisTest, WrongPasswordNeverConnects) {
  RedisServer redis(dir_, {"--requirepass", "s3cret-pw"});
  auto cfg = config_for(redis.port());
  cfg.password_value = "wrong";
  auto client = make_client(cfg);
  ASSERT_TRUE(wait_until([&] { return errors_["connect"] >= 2; }, 5s));
  EXPECT_FALSE(client->healthy());
  EXPECT_FALSE(client->connected());
  EXPECT_NE(client->last_error().find("AUTH"), std::string::npos) << client->last_error();
  EXPECT_EQ(client->last_error().find("wrong"), std::string::npos) << "the password leaked into an error";
  RedisStore store(client);
  auto [arm, took] = timed_pin(store, "k:x", Arm::canary);
  EXPECT_EQ(arm, std::nullopt);
  EXPECT_LT(took, 50ms) << "a disconnected client must fail fast";
  EXPECT_EQ(errors_["pin"], 1);
}

TEST_F(RedisTest, DbFromTheUrlIsSelected) {
  RedisServer redis(dir_);
  auto cfg = config_for(redis.port());
  cfg.db = 3;
  auto client = make_client(cfg);
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s)) << client->last_error();
  RedisStore store(client);
  EXPECT_EQ(run_co(pin(store, "k:db", Arm::canary, 60s)), Arm::canary);
  EXPECT_EQ(sync_cmd(redis.port(), {"EXISTS", "k:db"}, "", 3), "1");
  EXPECT_EQ(sync_cmd(redis.port(), {"EXISTS", "k:db"}, "", 0), "0");
}

TEST_F(RedisTest, PipelinesAThousandConcurrentPinsOnOneConnection) {
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port(), 3000ms));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  constexpr int kPins = 1000;
  int answered = 0;
  int canary = 0;
  for (int i = 0; i < kPins; ++i) {
    // Every key twice: pinned (hash canary), then looked up (hash control). The
    // lookup is pipelined behind the SET on the same connection, so it finds the pin.
    std::string key = "k:pipe:" + std::to_string(i / 2);
    Arm proposed = i % 2 == 0 ? Arm::canary : Arm::control;
    net::co_spawn(ioc_, pin(store, key, proposed, 60s), [&](std::exception_ptr e, std::optional<Arm> arm) {
      if (!e && arm) {
        ++answered;
        canary += *arm == Arm::canary;
      }
    });
  }
  std::size_t max_in_flight = 0;
  auto deadline = Steady::now() + 10s;
  while (answered < kPins && Steady::now() < deadline) {
    ioc_.run_one_for(10ms);
    max_in_flight = std::max(max_in_flight, client->in_flight());
  }
  EXPECT_EQ(answered, kPins);
  EXPECT_EQ(canary, kPins);
  EXPECT_GT(max_in_flight, 100u) << "commands were not pipelined";
  EXPECT_EQ(client->connects(), 1u);
  EXPECT_EQ(sync_cmd(redis.port(), {"DBSIZE"}), std::to_string(kPins / 2));
  EXPECT_TRUE(errors_.empty());
}

TEST_F(RedisTest, RedisKilledThenRestartedOnTheSamePort) {
  constexpr auto kTimeout = 100ms;
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port(), kTimeout));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  ASSERT_EQ(run_co(pin(store, "k:r", Arm::canary, 60s)), Arm::canary);

  redis.kill9();
  auto [arm, took] = timed_pin(store, "k:r", Arm::control);
  EXPECT_EQ(arm, std::nullopt);
  EXPECT_LT(took, kTimeout + 200ms);
  ASSERT_TRUE(wait_until([&] { return !client->healthy() && !client->connected(); }, 2s));
  EXPECT_FALSE(store.healthy());
  auto [arm2, took2] = timed_pin(store, "k:r", Arm::control);
  EXPECT_EQ(arm2, std::nullopt);
  EXPECT_LT(took2, 50ms) << "a disconnected client must fail fast";
  EXPECT_GE(errors_["pin"], 2);
  ASSERT_TRUE(wait_until([&] { return errors_["connect"] >= 2; }, 5s)) << "reconnects are not attempted";

  redis.start();  // same port, empty data (no persistence)
  std::optional<Arm> back;
  ASSERT_TRUE(wait_until(
      [&] {
        back = run_co(pin(store, "k:r", Arm::control, 60s));
        return back.has_value();
      },
      6s))
      << client->last_error();
  EXPECT_EQ(back, Arm::control);
  EXPECT_TRUE(client->healthy());
  EXPECT_EQ(client->connects(), 2u);
}

TEST_F(RedisTest, ClientPauseCostsAtMostTheTimeout) {
  constexpr auto kTimeout = 100ms;
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port(), kTimeout));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  ASSERT_EQ(run_co(pin(store, "k:p", Arm::canary, 60s)), Arm::canary);

  auto paused_at = Steady::now();
  ASSERT_EQ(sync_cmd(redis.port(), {"CLIENT", "PAUSE", "2000"}), "OK");
  // Concurrent pins, all started together.
  constexpr int kConcurrent = 20;
  int finished = 0;
  std::chrono::milliseconds slowest{0};
  for (int i = 0; i < kConcurrent; ++i) {
    auto start = Steady::now();
    net::co_spawn(ioc_, pin(store, "k:p" + std::to_string(i), Arm::control, 60s),
                  [&, start](std::exception_ptr, std::optional<Arm> arm) {
                    EXPECT_EQ(arm, std::nullopt);
                    slowest =
                        std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start));
                    ++finished;
                  });
  }
  ASSERT_TRUE(wait_until([&] { return finished == kConcurrent; }, 2s));
  EXPECT_LT(slowest, kTimeout + 200ms);
  // And one after another, while the pause lasts.
  for (int i = 0; i < 3; ++i) {
    auto [arm, took] = timed_pin(store, "k:seq" + std::to_string(i), Arm::control);
    EXPECT_EQ(arm, std::nullopt);
    EXPECT_LT(took, kTimeout + 200ms);
  }
  ASSERT_LT(Steady::now() - paused_at, 1900ms) << "machine too slow for this test's premise";
  EXPECT_FALSE(client->healthy());
  EXPECT_EQ(errors_["pin"], kConcurrent + 3);

  // After the pause the same connection answers again; the late replies were dropped.
  std::optional<Arm> back;
  ASSERT_TRUE(wait_until(
      [&] {
        back = run_co(pin(store, "k:p", Arm::control, 60s));
        return back.has_value();
      },
      5s));
  EXPECT_EQ(back, Arm::canary);
  EXPECT_TRUE(client->healthy());
  EXPECT_EQ(client->connects(), 1u);
}

TEST_F(RedisTest, AConnectionThatStopsAnsweringIsReplaced) {
  // timeout 20ms: the stall limit is max(1s, 50 x timeout) = 1s.
  RedisServer redis(dir_);
  auto client = make_client(config_for(redis.port(), 20ms));
  ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s));
  RedisStore store(client);
  auto paused_at = Steady::now();
  ASSERT_EQ(sync_cmd(redis.port(), {"CLIENT", "PAUSE", "2500"}), "OK");
  // Keep asking, as live traffic would; past the stall limit the connection is replaced.
  ASSERT_TRUE(wait_until(
      [&] {
        (void)run_co(pin(store, "k:s", Arm::canary, 60s));
        return client->connects() >= 2;
      },
      2400ms));
  EXPECT_GE(Steady::now() - paused_at, 1s);
  ASSERT_TRUE(wait_until([&] { return run_co(pin(store, "k:s", Arm::canary, 60s)).has_value(); }, 5s));
  EXPECT_TRUE(client->healthy());
}

// A server that answers a command with two replies: the second is nobody's.
// The client must drop the connection (the pipeline is out of step) rather
// than hand "evil" to the next command, on this connection or a new one.
net::awaitable<void> double_replying_server(std::shared_ptr<net::ip::tcp::acceptor> acceptor,
                                            std::shared_ptr<int> connections) {
  for (;;) {
    boost::system::error_code aec;
    auto socket = co_await acceptor->async_accept(net::redirect_error(net::use_awaitable, aec));
    if (aec) co_return;
    const bool first = (*connections)++ == 0;
    char buf[4096];
    for (;;) {
      boost::system::error_code ec;
      std::size_t n = co_await socket.async_read_some(net::buffer(buf), net::redirect_error(net::use_awaitable, ec));
      if (ec || n == 0) break;
      std::string_view reply =
          first ? std::string_view("$3\r\nfoo\r\n$4\r\nevil\r\n") : std::string_view("$4\r\ngood\r\n");
      co_await net::async_write(socket, net::buffer(reply), net::redirect_error(net::use_awaitable, ec));
      if (ec) break;
    }
  }
}

TEST_F(RedisTest, AReplyNobodyAskedForDropsTheConnection) {
  auto acceptor =
      std::make_shared<net::ip::tcp::acceptor>(ioc_, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  auto connections = std::make_shared<int>(0);
  net::co_spawn(ioc_, double_replying_server(acceptor, connections), net::detached);
  auto client = make_client(config_for(acceptor->local_endpoint().port()));
  ASSERT_TRUE(wait_until([&] { return client->connected(); }, 5s)) << client->last_error();
  auto get = [&] { return run_co(client->command(std::vector<std::string>{"GET", "k"}, "get")); };
  Reply first = get();
  ASSERT_TRUE(first.ok()) << first.str;
  EXPECT_EQ(first.str, "foo");
  std::vector<std::string> seen;
  ASSERT_TRUE(wait_until(
      [&] {
        Reply r = get();
        if (r.ok()) seen.push_back(r.str);
        return r.ok() && r.str == "good";
      },
      5s));
  for (const auto& s : seen) EXPECT_NE(s, "evil");
  EXPECT_GE(*connections, 2);
  EXPECT_GE(client->connects(), 2u);
  acceptor->close();
}

TEST_F(RedisTest, NothingListeningFailsFastAndCountsConnectErrors) {
  auto client = make_client(config_for(free_port(), 100ms));
  ASSERT_TRUE(wait_until([&] { return errors_["connect"] >= 3; }, 5s));
  RedisStore store(client);
  auto [arm, took] = timed_pin(store, "k", Arm::canary);
  EXPECT_EQ(arm, std::nullopt);
  EXPECT_LT(took, 50ms);
  EXPECT_EQ(errors_["pin"], 1);
  EXPECT_FALSE(store.healthy());
}

// ---------------------------------------------------------------- TLS

class RedisTlsTest : public RedisTest {
 protected:
  static void sh(const std::string& cmd) { ASSERT_EQ(std::system((cmd + " >/dev/null 2>&1").c_str()), 0) << cmd; }

  // A test CA and, signed by it, a server certificate for `name`.
  void make_certs() {
    std::string d = dir_.path().string();
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh("openssl req -x509 " + ec + " -days 2 -subj '/CN=canaryd test CA' -keyout " + d + "/ca.key -out " + d +
       "/ca.crt");
    for (std::string name : {"localhost", "other.example"}) {
      std::ofstream(d + "/" + name + ".ext")
          << "subjectAltName=DNS:" << name << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
      sh("openssl req " + ec + " -subj '/CN=" + name + "' -keyout " + d + "/" + name + ".key -out " + d + "/" + name +
         ".csr");
      sh("openssl x509 -req -in " + d + "/" + name + ".csr -CA " + d + "/ca.crt -CAkey " + d +
         "/ca.key -CAcreateserial -days 2 -extfile " + d + "/" + name + ".ext -out " + d + "/" + name + ".crt");
    }
  }

  // stunnel terminating TLS in front of redis with the certificate for `name`.
  int start_stunnel(const std::string& name, int redis_port) {
    int port = free_port();
    std::string d = dir_.path().string();
    std::string conf = d + "/stunnel-" + name + ".conf";
    std::ofstream(conf) << "foreground = yes\npid =\ndebug = 4\n[redis]\naccept = 127.0.0.1:" << port
                        << "\nconnect = 127.0.0.1:" << redis_port << "\ncert = " << d << "/" << name
                        << ".crt\nkey = " << d << "/" << name << ".key\n";
    stunnels_.emplace_back(std::vector<std::string>{stunnel_binary(), conf}, d + "/stunnel-" + name + ".log");
    if (!poll_until([&] { return tcp_accepts(port); }, 10s)) ADD_FAILURE() << "stunnel did not start";
    return port;
  }

  static std::string stunnel_binary() {
    return std::system("command -v stunnel4 >/dev/null 2>&1") == 0 ? "stunnel4" : "stunnel";
  }

  config::RedisConfig tls_config(int port) {
    auto cfg = config_for(port, 1000ms);
    cfg.url = "rediss://localhost:" + std::to_string(port) + "/0";
    cfg.tls = true;
    cfg.host = "localhost";
    cfg.ca_file = dir_.file("ca.crt");
    return cfg;
  }

  std::vector<Child> stunnels_;
};

TEST_F(RedisTlsTest, VerifiedTlsWorksAndAWrongNameIsRefused) {
  make_certs();
  RedisServer redis(dir_);
  int good = start_stunnel("localhost", redis.port());
  int bad = start_stunnel("other.example", redis.port());

  {
    auto client = make_client(tls_config(good));
    ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s)) << client->last_error();
    RedisStore store(client);
    EXPECT_EQ(run_co(pin(store, "k:tls", Arm::canary, 60s)), Arm::canary);
    EXPECT_EQ(run_co(pin(store, "k:tls", Arm::control, 60s)), Arm::canary);
    EXPECT_TRUE(errors_.empty());
  }
  {
    auto client = make_client(tls_config(bad));
    ASSERT_TRUE(wait_until([&] { return errors_["connect"] >= 1; }, 5s));
    EXPECT_FALSE(client->healthy());
    EXPECT_NE(client->last_error().find("TLS handshake"), std::string::npos) << client->last_error();
    RedisStore store(client);
    EXPECT_EQ(run_co(pin(store, "k:tls", Arm::control, 60s)), std::nullopt);
    EXPECT_EQ(errors_["pin"], 1);
  }
  {
    auto cfg = tls_config(good);
    cfg.ca_file.clear();  // the system CAs do not know the test CA
    auto client = make_client(cfg);
    int before = errors_["connect"];
    ASSERT_TRUE(wait_until([&] { return errors_["connect"] > before; }, 5s));
    EXPECT_FALSE(client->healthy());
  }
  {
    auto cfg = tls_config(bad);
    cfg.tls_verify = false;
    auto client = make_client(cfg);
    ASSERT_TRUE(wait_until([&] { return client->healthy(); }, 5s)) << client->last_error();
    RedisStore store(client);
    EXPECT_EQ(run_co(pin(store, "k:tls", Arm::control, 60s)), Arm::canary);
  }
}

TEST(RedisTlsContext, UnreadableCaFileIsAStartUpError) {
  config::RedisConfig cfg;
  cfg.tls = true;
  cfg.ca_file = "/nonexistent/ca.pem";
  EXPECT_THROW(RedisClient::make_tls_context(cfg), std::runtime_error);
}

// ---------------------------------------------------------------- factory

TEST_F(RedisTest, StoresWithoutRedisShareOneMemoryStore) {
  config::Config cfg;
  ManualClock clock;
  auto stores = make_stores(cfg, 2, nullptr, clock);
  EXPECT_EQ(stores.kind(), "memory");
  net::io_context other;
  AssignmentStore* a = stores.for_thread(0, ioc_);
  AssignmentStore* b = stores.for_thread(1, other);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a->name(), "memory");
  stores.stop();
}

TEST_F(RedisTest, StoresWithRedisGiveEachThreadItsOwnStoreAndCountErrors) {
  config::Config cfg;
  cfg.redis = config_for(free_port(), 100ms);  // nothing listens there
  metrics::Metrics::Setup setup;
  metrics::Metrics metrics(setup);
  ManualClock clock;
  auto stores = make_stores(cfg, 2, &metrics, clock);
  EXPECT_EQ(stores.kind(), "redis");
  AssignmentStore* a = stores.for_thread(0, ioc_);
  AssignmentStore* b = stores.for_thread(1, ioc_);
  ASSERT_NE(a, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(stores.for_thread(0, ioc_), a);
  EXPECT_EQ(a->name(), "redis");
  EXPECT_FALSE(stores.healthy());
  EXPECT_EQ(run_co(pin(*a, "k", Arm::canary, 60s)), std::nullopt);
  std::string text = metrics.expose();
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(ai_proxy_redis_errors_total\{op="pin"\} 1\b)"))) << text;
  stores.stop();
  ioc_.run_for(20ms);
}

TEST_F(RedisTest, StoresHealthyReportsEveryThreadsConnection) {
  RedisServer redis(dir_);
  config::Config cfg;
  cfg.redis = config_for(redis.port());
  ManualClock clock;
  // Thread 1's io_context, not run yet, so its client cannot connect. Declared
  // before the stores: its client's timer must go before it does.
  net::io_context other;
  auto stores = make_stores(cfg, 2, nullptr, clock);
  AssignmentStore* a = stores.for_thread(0, ioc_);
  AssignmentStore* b = stores.for_thread(1, other);
  ASSERT_TRUE(wait_until([&] { return a->healthy(); }, 5s));
  EXPECT_FALSE(b->healthy());
  // /health is served by one thread; it must see the other thread's connection.
  EXPECT_FALSE(stores.healthy());
  auto deadline = Steady::now() + 5s;
  while (!b->healthy() && Steady::now() < deadline) {
    other.run_for(5ms);
    ioc_.run_for(1ms);
  }
  ASSERT_TRUE(b->healthy());
  EXPECT_TRUE(stores.healthy());
  stores.stop();
  ioc_.run_for(20ms);
  other.run_for(20ms);
}

}  // namespace
}  // namespace canaryd::store
