// The data plane in one process: proxy::proxy() and upstream::start_exchange
// against scripted upstreams on loopback sockets of the test's own
// io_context (no canaryd process, no mock binary). What it pins down: the
// stale pooled connection is retried once and only when that is safe; an
// event stream written in arbitrary pieces reaches the client byte for byte
// with its usage read; a failed canary attempt falls back to control and
// both attempts are accounted to their arms.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "canaryd/clock.hpp"
#include "metrics/metrics.hpp"
#include "proxy/context.hpp"
#include "proxy/request.hpp"
#include "rollout/controller.hpp"
#include "upstream/exchange.hpp"

namespace canaryd::proxy {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

// One request as the scripted upstream read it.
struct Seen {
  int connection = 0;
  std::string head;
  std::string body;
};

// A scripted upstream: for each request, `script(index, seen)` returns the
// bytes to write, as pieces written one after another with `gap` between them
// (a stream that arrives in arbitrary reads), and whether to close after.
struct Reply {
  std::vector<std::string> pieces;
  bool close = false;
  bool close_without_answer = false;  // read the request, then close: a server that dropped an idle connection
};

class FakeUpstream {
 public:
  using Script = std::function<Reply(int index, const Seen& seen)>;

  FakeUpstream(net::io_context& ioc, Script script, std::chrono::milliseconds gap = 0ms)
      : ioc_(ioc),
        acceptor_(std::make_shared<tcp::acceptor>(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0))),
        state_(std::make_shared<State>()),
        gap_(gap) {
    state_->script = std::move(script);
    net::co_spawn(ioc, accept_loop(acceptor_, state_, gap_), net::detached);
  }
  ~FakeUpstream() { acceptor_->close(); }

  std::string base_url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_->local_endpoint().port()) + "/v1";
  }
  const std::vector<Seen>& seen() const { return state_->seen; }
  int connections() const { return state_->connections; }

 private:
  struct State {
    Script script;
    std::vector<Seen> seen;
    int connections = 0;
  };

  static net::awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor, std::shared_ptr<State> st,
                                          std::chrono::milliseconds gap) {
    for (;;) {
      auto [ec, socket] = co_await acceptor->async_accept(kTuple);
      if (ec) co_return;
      net::co_spawn(acceptor->get_executor(), serve(std::move(socket), st, st->connections++, gap), net::detached);
    }
  }

  static net::awaitable<void> serve(tcp::socket socket, std::shared_ptr<State> st, int connection,
                                    std::chrono::milliseconds gap) {
    std::string buf;
    for (;;) {
      auto [ec, n] = co_await net::async_read_until(socket, net::dynamic_buffer(buf), "\r\n\r\n", kTuple);
      if (ec) co_return;
      Seen seen{connection, buf.substr(0, n), {}};
      buf.erase(0, n);
      std::size_t length = 0;
      if (auto at = seen.head.find("Content-Length: "); at != std::string::npos)
        length = std::stoul(seen.head.substr(at + 16));
      while (buf.size() < length) {
        char tmp[4096];
        auto [rec, got] = co_await socket.async_read_some(net::buffer(tmp), kTuple);
        if (rec) co_return;
        buf.append(tmp, got);
      }
      seen.body = buf.substr(0, length);
      buf.erase(0, length);
      st->seen.push_back(seen);
      Reply reply = st->script(static_cast<int>(st->seen.size()) - 1, seen);
      if (reply.close_without_answer) co_return;
      net::steady_timer timer(socket.get_executor());
      for (std::size_t i = 0; i < reply.pieces.size(); ++i) {
        if (i > 0 && gap.count() > 0) {
          timer.expires_after(gap);
          co_await timer.async_wait(kTuple);
        }
        auto [wec, wn] = co_await net::async_write(socket, net::buffer(reply.pieces[i]), kTuple);
        if (wec) co_return;
      }
      if (reply.close) co_return;
    }
  }

  net::io_context& ioc_;
  std::shared_ptr<tcp::acceptor> acceptor_;
  std::shared_ptr<State> state_;
  std::chrono::milliseconds gap_;
};

std::string json_answer(std::string_view tag, int status = 200) {
  std::string body =
      R"({"tag":")" + std::string(tag) + R"(","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})";
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

config::Config test_config(const std::string& control_url, const std::string& canary_url, double weight) {
  std::string yaml = "server:\n  access_log: false\nupstreams:\n  ctl:\n    base_url: \"" + control_url +
                     "\"\n    timeout: 2s\n  cny:\n    base_url: \"" + canary_url +
                     "\"\n    timeout: 2s\nsplit:\n  control: ctl\n  canary: cny\n  pin_ttl: 0s\n"
                     "rollout:\n  steps:\n    - { weight: " +
                     std::to_string(weight) +
                     " }\n  analysis:\n    min_requests: 1000000\npricing:\n  \"gpt-4.1\": { input: 8, output: 32 }\n";
  return config::load_string(yaml, "test.yaml");
}

template <class T>
T run(net::io_context& ioc, net::awaitable<T> aw) {
  std::optional<T> out;
  std::exception_ptr err;
  net::co_spawn(ioc, std::move(aw), [&](std::exception_ptr e, T v) {
    err = e;
    out = std::move(v);
  });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!out && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(10ms);
  if (err) std::rethrow_exception(err);
  if (!out) throw std::runtime_error("the coroutine did not finish within 10 s");
  return std::move(*out);
}

// ---------------------------------------------------------------- the stale-connection retry

class ExchangeTest : public ::testing::Test {
 protected:
  net::io_context ioc_;
  upstream::Connection* current_ = nullptr;

  net::awaitable<int> call(std::shared_ptr<upstream::Pool> pool, const config::UpstreamConfig& up) {
    const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
    upstream::Exchange ex = co_await upstream::start_exchange(pool, up, head, "{}", false, &current_);
    if (ex.error) co_return -static_cast<int>(ex.error.kind);
    std::string body;
    Error e = co_await upstream::read_whole_body(ex, up, body);
    co_return e ? -static_cast<int>(e.kind) : ex.status;
  }
};

TEST_F(ExchangeTest, AReusedConnectionClosedBeforeItsAnswerIsRetriedOnceOnAFreshOne) {
  // Request 1 is answered (keep-alive); request 2 arrives on the pooled
  // connection and the upstream closes it without answering, as a server
  // dropping an idle connection does; the retry on a new connection is answered.
  FakeUpstream fake(ioc_, [](int i, const Seen&) {
    if (i == 1) return Reply{{}, false, true};
    return Reply{{json_answer("t" + std::to_string(i))}};
  });
  config::Config cfg = test_config(fake.base_url(), fake.base_url(), 0);
  const auto& up = cfg.control();
  auto pool = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4);
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  EXPECT_EQ(pool->idle(), 1u);
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  EXPECT_EQ(pool->connects(), 2u);
  ASSERT_EQ(fake.seen().size(), 3u);
  EXPECT_EQ(fake.seen()[1].connection, 0);  // the pooled one
  EXPECT_EQ(fake.seen()[2].connection, 1);  // the retry
}

TEST_F(ExchangeTest, AFreshConnectionClosedBeforeItsAnswerIsNotRetried) {
  FakeUpstream fake(ioc_, [](int, const Seen&) { return Reply{{}, false, true}; });
  config::Config cfg = test_config(fake.base_url(), fake.base_url(), 0);
  const auto& up = cfg.control();
  auto pool = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4);
  EXPECT_EQ(run(ioc_, call(pool, up)), -static_cast<int>(ErrorKind::connect_error));
  EXPECT_EQ(fake.seen().size(), 1u);  // sent once: nothing says the upstream did not act on it
}

TEST_F(ExchangeTest, IdleConnectionsBeyondTheIdleLimitAreClosed) {
  FakeUpstream fake(ioc_, [](int i, const Seen&) { return Reply{{json_answer("i" + std::to_string(i))}}; });
  config::Config cfg = test_config(fake.base_url(), fake.base_url(), 0);
  const auto& up = cfg.control();
  // max_idle_connections 0: every answered connection closes, none is reused.
  auto none = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4, 0);
  EXPECT_EQ(run(ioc_, call(none, up)), 200);
  EXPECT_EQ(none->idle(), 0u);
  EXPECT_EQ(run(ioc_, call(none, up)), 200);
  EXPECT_EQ(none->connects(), 2u);
  // The config's default keeps it.
  EXPECT_EQ(up.max_idle_connections, 64u);
  auto kept = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4);
  EXPECT_EQ(run(ioc_, call(kept, up)), 200);
  EXPECT_EQ(kept->idle(), 1u);
  EXPECT_EQ(run(ioc_, call(kept, up)), 200);
  EXPECT_EQ(kept->connects(), 1u);
}

TEST_F(ExchangeTest, ACompactedIdleConnectionIsReusedAndStillRetiredWhenTheUpstreamClosesIt) {
  // Request 3 is answered and then the upstream closes that connection.
  FakeUpstream fake(ioc_, [](int i, const Seen&) { return Reply{{json_answer("c" + std::to_string(i))}, i == 2}; });
  config::Config cfg = test_config(fake.base_url(), fake.base_url(), 0);
  const auto& up = cfg.control();
  auto pool = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4);
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  const auto now = std::chrono::steady_clock::now();
  EXPECT_EQ(pool->compact_idle(now, 1h), 0u);  // not idle long enough
  EXPECT_EQ(pool->compact_idle(now + 2h, 1h), 1u);
  EXPECT_EQ(pool->compact_idle(now + 2h, 1h), 0u);  // once
  EXPECT_EQ(pool->idle(), 1u);
  // The socket alone is rebuilt into a connection: same TCP connection.
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);  // answered, then closed by the upstream
  EXPECT_EQ(pool->connects(), 1u);
  EXPECT_EQ(pool->compact_idle(std::chrono::steady_clock::now() + 2h, 1h), 1u);
  // Its close is found (peek) or the request is retried on a fresh connection.
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  EXPECT_EQ(pool->connects(), 2u);
  ASSERT_EQ(fake.seen().size() >= 4u, true);
  EXPECT_EQ(fake.seen()[1].connection, 0);
  EXPECT_EQ(fake.seen()[2].connection, 0);
  EXPECT_EQ(fake.seen().back().connection, 1);
}

TEST_F(ExchangeTest, AnInterimAnswerThenACloseIsNotRetried) {
  // The upstream answered (100 Continue) before it closed: it read the request.
  FakeUpstream fake(ioc_, [](int i, const Seen&) {
    if (i == 1) return Reply{{"HTTP/1.1 100 Continue\r\n\r\n"}, true};
    return Reply{{json_answer("a")}};
  });
  config::Config cfg = test_config(fake.base_url(), fake.base_url(), 0);
  const auto& up = cfg.control();
  auto pool = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, nullptr, 4);
  EXPECT_EQ(run(ioc_, call(pool, up)), 200);
  EXPECT_LT(run(ioc_, call(pool, up)), 0);
  EXPECT_EQ(fake.seen().size(), 2u);
}

// ---------------------------------------------------------------- the whole proxy, in process

// A client connection to a proxy::proxy() call: a loopback socket pair.
class ProxyTest : public ::testing::Test {
 protected:
  struct Result {
    int status = 0;
    std::string arm, provider, fallback, body;
  };

  net::io_context ioc_;
  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<rollout::RolloutController> rollout_;
  Services services_;
  std::optional<ThreadContext> thread_;
  std::shared_ptr<const Runtime> rt_;

  void SetUp() override { thread_.emplace(ioc_.get_executor()); }
  void TearDown() override { thread_->shutdown(); }

  void start(config::Config cfg) {
    auto shared = std::make_shared<const config::Config>(std::move(cfg));
    rt_ = std::make_shared<const Runtime>(shared);
    metrics_ = std::make_unique<metrics::Metrics>(*shared);
    rollout_ = std::make_unique<rollout::RolloutController>(*shared, metrics_.get(), SystemClock::instance());
    services_.metrics = metrics_.get();
    services_.experiments = {{"default", rollout_.get(), nullptr, nullptr}};
  }

  // Serves one request with proxy::proxy() on the server end of a socket
  // pair and reads the answer on the client end.
  net::awaitable<Result> exchange(std::string body, std::string header = "", std::string value = "") {
    auto ex = co_await net::this_coro::executor;
    tcp::acceptor acceptor(ex, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket client(ex);
    co_await client.async_connect(acceptor.local_endpoint(), net::use_awaitable);
    beast::tcp_stream server(co_await acceptor.async_accept(net::use_awaitable));

    http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
    req.set(http::field::host, "canaryd");
    req.set(http::field::content_type, "application/json");
    if (!header.empty()) req.set(header, value);
    req.body() = std::move(body);
    req.prepare_payload();
    Request r{services_, *thread_,
              rt_,       server,
              req,       "127.0.0.1",
              "req-1",   "/v1/chat/completions",
              "",        std::chrono::steady_clock::now(),
              true};
    const bool keep = co_await proxy(r, RouteKind::split);
    EXPECT_TRUE(keep);

    beast::flat_buffer buf;
    http::response<http::string_body> res;
    co_await http::async_read(client, buf, res, net::use_awaitable);
    co_return Result{res.result_int(), std::string(res["X-Canaryd-Arm"]), std::string(res["X-Canaryd-Provider"]),
                     std::string(res["X-Canaryd-Fallback"]), res.body()};
  }

  double metric(const std::string& line_prefix) const {
    const std::string text = metrics_->expose();
    double sum = 0;
    for (std::size_t at = text.find(line_prefix); at != std::string::npos; at = text.find(line_prefix, at + 1)) {
      if (at > 0 && text[at - 1] != '\n') continue;
      const std::size_t sp = text.find(' ', text.find('}', at) == std::string::npos ? at : text.find('}', at));
      sum += std::stod(text.substr(sp + 1));
    }
    return sum;
  }
};

const std::string kChat = R"({"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]})";

TEST_F(ProxyTest, AStreamWrittenInArbitraryPiecesIsRelayedWholeWithItsUsage) {
  std::string events;
  for (int i = 0; i < 5; ++i)
    events += "data: {\"choices\":[{\"delta\":{\"content\":\"w" + std::to_string(i) + "\"}}]}\n\n";
  events += "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":22}}\n\ndata: [DONE]\n\n";
  // The chunked body cut at awkward places: inside a size line, inside an event, inside the final chunk.
  std::string wire = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::size_t half = events.size() / 2;
  char size1[32], size2[32];
  std::snprintf(size1, sizeof size1, "%zx\r\n", half);
  std::snprintf(size2, sizeof size2, "%zx\r\n", events.size() - half);
  wire += size1 + events.substr(0, half) + "\r\n" + size2 + events.substr(half) + "\r\n0\r\n\r\n";
  std::vector<std::string> pieces;
  for (std::size_t at = 0, step = 1; at < wire.size(); at += step, step = step % 37 + 3)
    pieces.push_back(wire.substr(at, step));
  FakeUpstream control(
      ioc_, [&](int, const Seen&) { return Reply{pieces}; }, 1ms);
  start(test_config(control.base_url(), control.base_url(), 0));
  Result r = run(ioc_, exchange(kChat));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.arm, "control");
  EXPECT_EQ(r.body, events);  // de-chunked by the client: exactly the upstream's events
  EXPECT_EQ(metric("ai_proxy_tokens_total{model=\"gpt-4.1\",provider=\"ctl\",type=\"prompt\"}"), 11);
  EXPECT_EQ(metric("ai_proxy_tokens_total{model=\"gpt-4.1\",provider=\"ctl\",type=\"completion\"}"), 22);
}

TEST_F(ProxyTest, AFailedCanaryAttemptFallsBackAndBothAttemptsAreAccounted) {
  FakeUpstream canary(ioc_, [](int, const Seen&) { return Reply{{json_answer("canary", 503)}}; });
  FakeUpstream control(ioc_, [](int, const Seen& s) {
    EXPECT_NE(s.body.find("\"model\":\"gpt-4.1\""), std::string::npos);
    return Reply{{json_answer("control")}};
  });
  start(test_config(control.base_url(), canary.base_url(), 100));
  Result r = run(ioc_, exchange(R"({"model":"gpt-4.1","messages":[]})"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.arm, "control");
  EXPECT_EQ(r.provider, "ctl");
  EXPECT_EQ(r.fallback, "5xx");
  EXPECT_NE(r.body.find("\"tag\":\"control\""), std::string::npos);
  EXPECT_EQ(canary.seen().size(), 1u);
  EXPECT_EQ(control.seen().size(), 1u);
  // Each attempt in its arm's window and in the requests counter.
  nlohmann::json arms = rollout_->status()["arms"];
  EXPECT_EQ(arms["canary"]["requests"], 1);
  EXPECT_EQ(arms["canary"]["errors"], 1);
  EXPECT_EQ(arms["control"]["requests"], 1);
  EXPECT_EQ(arms["control"]["errors"], 0);
  EXPECT_EQ(metric("ai_proxy_requests_total{model=\"gpt-4.1\",provider=\"cny\",status=\"error\"}"), 1);
  EXPECT_EQ(metric("ai_proxy_requests_total{model=\"gpt-4.1\",provider=\"ctl\",status=\"success\"}"), 1);
  EXPECT_EQ(metric("ai_proxy_fallbacks_total{experiment=\"default\",from=\"cny\",reason=\"5xx\",to=\"ctl\"}"), 1);
  EXPECT_EQ(services_.inflight.load(), 0);
}

TEST_F(ProxyTest, AForcedArmNeverFallsBack) {
  FakeUpstream canary(ioc_, [](int, const Seen&) { return Reply{{json_answer("canary", 503)}}; });
  FakeUpstream control(ioc_, [](int, const Seen&) { return Reply{{json_answer("control")}}; });
  start(test_config(control.base_url(), canary.base_url(), 0));
  // X-Canary: canary forces the arm (the rollout is at weight 0 here).
  Result r = run(ioc_, exchange(R"({"model":"gpt-4.1","messages":[]})", "X-Canary", "canary"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.arm, "canary");
  EXPECT_EQ(r.fallback, "");
  EXPECT_EQ(control.seen().size(), 0u);
}

}  // namespace
}  // namespace canaryd::proxy
