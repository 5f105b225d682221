#include "server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "responses.hpp"
#include "stats.hpp"

namespace mock {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using beast::error_code;

constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t kHeaderLimit = 64 * 1024;
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);

template <class T>
struct IsTls : std::false_type {};
template <class T>
struct IsTls<ssl::stream<T>> : std::true_type {};

// The per-request behaviour: the options, overridden by X-Mock-* headers.
struct Behaviour {
  int latency_ms = 0;
  double error_rate = 0;
  int error_status = 500;
  int status = 0;
  int stream_chunks = 5;
  int stream_delay_ms = 0;
  bool hang = false;
  ResetMode reset = ResetMode::none;
  bool malformed = false;
  bool truncate = false;
  bool close = false;
};

// The bad header's name when one does not parse, so a test sees its mistake.
std::string resolve_behaviour(const Options& o, const http::request<http::string_body>& req, Behaviour& b) {
  b.latency_ms = o.latency_ms;
  b.error_rate = o.error_rate;
  b.error_status = o.error_status;
  b.status = o.status;
  b.stream_chunks = o.stream_chunks;
  b.stream_delay_ms = o.stream_delay_ms;
  b.hang = o.hang;
  b.reset = o.reset;
  b.malformed = o.malformed;
  b.truncate = o.truncate;
  b.close = o.close;

  auto integer = [&](std::string_view name, int& out, int lo, int hi) {
    auto it = req.find(name);
    if (it == req.end()) return true;
    auto v = it->value();
    int parsed = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), parsed);
    if (ec != std::errc{} || p != v.data() + v.size() || parsed < lo || parsed > hi) return false;
    out = parsed;
    return true;
  };
  auto boolean = [&](std::string_view name, bool& out) {
    auto it = req.find(name);
    if (it == req.end()) return true;
    auto v = it->value();
    if (v == "1" || v == "true" || v == "yes" || v == "on") {
      out = true;
    } else if (v == "0" || v == "false" || v == "no" || v == "off") {
      out = false;
    } else {
      return false;
    }
    return true;
  };

  if (!integer("X-Mock-Latency-Ms", b.latency_ms, 0, 3'600'000)) return "X-Mock-Latency-Ms";
  if (!integer("X-Mock-Error-Status", b.error_status, 100, 599)) return "X-Mock-Error-Status";
  if (!integer("X-Mock-Status", b.status, 0, 599)) return "X-Mock-Status";
  if (!integer("X-Mock-Stream-Chunks", b.stream_chunks, 0, 100'000)) return "X-Mock-Stream-Chunks";
  if (!integer("X-Mock-Stream-Delay-Ms", b.stream_delay_ms, 0, 3'600'000)) return "X-Mock-Stream-Delay-Ms";
  if (!boolean("X-Mock-Hang", b.hang)) return "X-Mock-Hang";
  if (!boolean("X-Mock-Malformed", b.malformed)) return "X-Mock-Malformed";
  if (!boolean("X-Mock-Truncate", b.truncate)) return "X-Mock-Truncate";
  if (!boolean("X-Mock-Close", b.close)) return "X-Mock-Close";
  if (auto it = req.find("X-Mock-Error-Rate"); it != req.end()) {
    std::string v(it->value());
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size() || !(d >= 0 && d <= 1)) return "X-Mock-Error-Rate";
    b.error_rate = d;
  }
  if (auto it = req.find("X-Mock-Reset"); it != req.end()) {
    auto m = parse_reset_mode(it->value());
    if (!m) return "X-Mock-Reset";
    b.reset = *m;
  }
  return {};
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

const boost::system::error_category& http_category() { return error_code(http::error::end_of_stream).category(); }

bool ends_with(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

bool json_true(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

// The name of the first tool's function, when the request asks for tool use.
std::string first_tool_name(const json& j) {
  auto tools = j.find("tools");
  if (tools == j.end() || !tools->is_array() || tools->empty()) return {};
  if (auto choice = j.find("tool_choice"); choice != j.end() && choice->is_string() && *choice == "none") return {};
  const json& t = tools->front();
  if (t.is_object()) {
    if (auto f = t.find("function"); f != t.end() && f->is_object()) {
      if (auto n = f->find("name"); n != f->end() && n->is_string()) return n->get<std::string>();
    }
    if (auto n = t.find("name"); n != t.end() && n->is_string()) return n->get<std::string>();
  }
  return "tool";
}

// What the handler decided; the session writes it.
struct Answer {
  enum class Kind { full, stream, hang, reset } kind = Kind::full;
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  StreamPlan plan;
  bool control = false;  // /mock/*: the fault behaviours do not apply
};

}  // namespace

struct Server::Impl {
  Options opts;
  Responses responses;
  Stats stats;
  std::uint64_t seed;
  std::atomic<std::uint64_t> next_id{1};
  std::vector<std::unique_ptr<net::io_context>> contexts;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  std::unique_ptr<ssl::context> tls;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::signal_set> signals;

  explicit Impl(Options o)
      : opts(std::move(o)),
        responses(opts),
        seed(opts.error_seed ? *opts.error_seed
                             : (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {
    for (int i = 0; i < opts.threads; ++i) {
      contexts.push_back(std::make_unique<net::io_context>(1));
      guards.push_back(net::make_work_guard(*contexts.back()));
    }
    if (!opts.tls_cert.empty()) {
      tls = std::make_unique<ssl::context>(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3);
      tls->use_certificate_chain_file(opts.tls_cert);
      tls->use_private_key_file(opts.tls_key, ssl::context::pem);
    }
    auto& ctx0 = *contexts.front();
    tcp::endpoint ep(net::ip::make_address(opts.host), opts.port);
    acceptor = std::make_unique<tcp::acceptor>(ctx0);
    acceptor->open(ep.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    acceptor->bind(ep);
    acceptor->listen(net::socket_base::max_listen_connections);
    signals = std::make_unique<net::signal_set>(ctx0, SIGINT, SIGTERM);
    signals->async_wait([this](const error_code& ec, int) {
      if (!ec) stop();
    });
  }

  void stop() {
    // Runs on any thread; posting keeps the acceptor on its own thread.
    net::post(*contexts.front(), [this] {
      error_code ignored;
      acceptor->close(ignored);
      for (auto& c : contexts) c->stop();
    });
  }

  net::awaitable<void> accept_loop() {
    std::size_t next = 0;
    for (;;) {
      net::io_context& ctx = *contexts[next++ % contexts.size()];
      net::any_io_executor ex = ctx.get_executor();
      auto [ec, sock] = co_await acceptor->async_accept(ex, kTuple);
      if (ec == net::error::operation_aborted || !acceptor->is_open()) co_return;
      if (ec) {
        // Out of descriptors and the like: back off instead of spinning.
        net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(50));
        co_await t.async_wait(kTuple);
        continue;
      }
      stats.on_tcp_accept();
      error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);  // each SSE event must leave at once
      net::co_spawn(ctx, run_connection(std::move(sock)), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          std::cerr << "mock-upstream: connection failed: " << x.what() << "\n";
        }
      });
    }
  }

  net::awaitable<void> run_connection(tcp::socket sock) {
    if (tls) {
      ssl::stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(sock)), *tls);
      beast::get_lowest_layer(stream).expires_after(kHandshakeTimeout);
      auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, kTuple);
      if (ec) co_return;
      co_await session(stream);
    } else {
      beast::tcp_stream stream(std::move(sock));
      co_await session(stream);
    }
  }

  template <class Stream>
  net::awaitable<void> session(Stream& stream) {
    auto mark = stats.connection();
    beast::flat_buffer buffer;
    for (;;) {
      // A parser serves exactly one message.
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(opts.max_body_bytes);

      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(opts.idle_timeout_s));
      auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, kTuple);
      if (!ec && parser.get()[http::field::expect] == "100-continue" && !parser.is_done()) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [wec, wn] = co_await net::async_write(stream, net::buffer(kContinue), kTuple);
        ec = wec;
      }
      if (!ec && !parser.is_done()) {
        auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kTuple);
        ec = rec;
      }
      if (ec) {
        if (ec.category() == http_category() && ec != http::error::end_of_stream &&
            ec != http::error::partial_message) {
          // A malformed or oversized request: answer, then close.
          int status = ec == http::error::body_limit ? 413 : ec == http::error::header_limit ? 431 : 400;
          std::string msg = status == 413   ? "Request too large"
                            : status == 431 ? "Request header fields too large"
                                            : "Malformed HTTP request: " + ec.message();
          http::response<http::string_body> res{static_cast<http::status>(status), 11};
          res.set(http::field::content_type, "application/json");
          res.body() = responses.error(msg, "invalid_request_error",
                                       status == 413   ? "request_too_large"
                                       : status == 431 ? "request_header_fields_too_large"
                                                       : "invalid_request");
          res.keep_alive(false);
          co_await write_full(stream, res);
        }
        break;
      }

      auto req = parser.release();
      bool keep_alive = co_await serve(stream, req, mark);
      if (!keep_alive) break;
    }
    co_await graceful_close(stream);
  }

  template <class Stream>
  net::awaitable<error_code> write_full(Stream& stream, http::response<http::string_body>& res) {
    decorate(res);
    res.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(kWriteTimeout);
    auto [ec, n] = co_await http::async_write(stream, res, kTuple);
    co_return ec;
  }

  template <class Body>
  void decorate(http::response<Body>& res) {
    res.set(http::field::server, "mock-upstream");
    if (!opts.name.empty()) res.set("X-Mock-Name", opts.name);
  }

  template <class Stream>
  net::awaitable<void> graceful_close(Stream& stream) {
    if constexpr (IsTls<Stream>::value) {
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      co_await stream.async_shutdown(kTuple);
    }
    error_code ignored;
    auto& sock = beast::get_lowest_layer(stream).socket();
    sock.shutdown(tcp::socket::shutdown_send, ignored);
    sock.close(ignored);
  }

  // SO_LINGER 0: close() sends an RST instead of a FIN.
  template <class Stream>
  static void reset_connection(Stream& stream) {
    error_code ignored;
    auto& sock = beast::get_lowest_layer(stream).socket();
    sock.set_option(net::socket_base::linger(true, 0), ignored);
    sock.close(ignored);
  }

  // Serves one request; false when the connection is done (closed, reset or
  // not keep-alive).
  template <class Stream>
  net::awaitable<bool> serve(Stream& stream, http::request<http::string_body>& req, Stats::ConnectionMark& mark) {
    std::string_view target = req.target();
    std::string path(target.substr(0, target.find('?')));

    if (ends_with(path, "/mock/stats") || ends_with(path, "/mock/reset")) {
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      if (ends_with(path, "/mock/reset")) {
        if (req.method() != http::verb::post) {
          res.result(http::status::method_not_allowed);
          res.body() = responses.error("Use POST /mock/reset", "invalid_request_error", "method_not_allowed");
        } else {
          stats.reset();
          res.body() = stats.to_json();
        }
      } else {
        res.body() = stats.to_json();
      }
      res.keep_alive(req.keep_alive());
      auto ec = co_await write_full(stream, res);
      co_return !ec && req.keep_alive();
    }

    Stats::Headers headers;
    headers.reserve(16);
    for (const auto& f : req) headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    const std::uint64_t seq = stats.on_request(mark, path, std::move(headers), req.body());

    Behaviour b;
    Answer answer;
    if (std::string bad = resolve_behaviour(opts, req, b); !bad.empty()) {
      answer.status = 400;
      answer.body = responses.error("invalid " + bad + " header", "invalid_request_error", "invalid_mock_header");
      answer.control = true;
    } else {
      if (b.latency_ms > 0) {
        net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(b.latency_ms));
        co_await t.async_wait(kTuple);
      }
      answer = decide(req, path, b, seq);
    }

    const bool keep_alive = req.keep_alive() && !b.close;
    switch (answer.kind) {
      case Answer::Kind::hang: {
        // Wait for the peer to give up; everything it sends is ignored.
        beast::get_lowest_layer(stream).expires_never();
        std::array<char, 4096> sink;
        for (;;) {
          auto [ec, n] = co_await stream.async_read_some(net::buffer(sink), kTuple);
          if (ec) break;
        }
        reset_connection(stream);
        co_return false;
      }
      case Answer::Kind::reset: reset_connection(stream); co_return false;
      case Answer::Kind::stream: co_return co_await write_stream(stream, answer.plan, b, keep_alive);
      case Answer::Kind::full: break;
    }

    http::response<http::string_body> res{static_cast<http::status>(answer.status), 11};
    res.set(http::field::content_type, answer.content_type);
    if (answer.status == 429) res.set(http::field::retry_after, "1");
    res.keep_alive(keep_alive);
    res.body() = std::move(answer.body);

    if (!answer.control && b.truncate) {
      // Chunked, with half the body and no terminating 0-chunk, then a FIN.
      decorate(res);
      http::response<http::empty_body> head{res.result(), 11};
      for (const auto& f : res) head.set(f.name_string(), f.value());
      head.chunked(true);
      http::response_serializer<http::empty_body> sr{head};
      beast::get_lowest_layer(stream).expires_after(kWriteTimeout);
      auto [ec, n] = co_await http::async_write_header(stream, sr, kTuple);
      if (!ec) {
        std::string_view half(res.body().data(), res.body().size() / 2);
        co_await net::async_write(stream, http::make_chunk(net::buffer(half)), kTuple);
      }
      error_code ignored;
      beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(stream).socket().close(ignored);
      co_return false;
    }
    if (!answer.control && b.reset == ResetMode::mid_stream) {
      // The full Content-Length is promised, half the body arrives, then an RST.
      decorate(res);
      res.prepare_payload();
      http::response_serializer<http::string_body> sr{res};
      beast::get_lowest_layer(stream).expires_after(kWriteTimeout);
      auto [ec, n] = co_await http::async_write_header(stream, sr, kTuple);
      if (!ec) {
        std::string_view half(res.body().data(), res.body().size() / 2);
        co_await net::async_write(stream, net::buffer(half), kTuple);
      }
      reset_connection(stream);
      co_return false;
    }

    auto ec = co_await write_full(stream, res);
    co_return !ec && keep_alive;
  }

  template <class Stream>
  net::awaitable<bool> write_stream(Stream& stream, const StreamPlan& plan, const Behaviour& b, bool keep_alive) {
    http::response<http::empty_body> res{http::status::ok, 11};
    decorate(res);
    res.set(http::field::content_type, "text/event-stream; charset=utf-8");
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(keep_alive);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    auto& lowest = beast::get_lowest_layer(stream);
    lowest.expires_after(kWriteTimeout);
    if (auto [ec, n] = co_await http::async_write_header(stream, sr, kTuple); ec) co_return false;

    const int total = Responses::stream_event_count(plan);
    // --truncate drops the terminator event ([DONE] / response.completed) and the 0-chunk.
    const int to_send = b.truncate ? total - 1 : total;
    net::steady_timer timer(co_await net::this_coro::executor);
    for (int i = 0; i < to_send; ++i) {
      if (i > 0 && b.stream_delay_ms > 0) {
        timer.expires_after(std::chrono::milliseconds(b.stream_delay_ms));
        co_await timer.async_wait(kTuple);
      }
      std::string event = responses.stream_event(plan, i, realtime_us());
      lowest.expires_after(kWriteTimeout);
      // One write per event, so a proxy that buffers shows up as relay delay.
      auto [ec, n] = co_await net::async_write(stream, http::make_chunk(net::buffer(event)), kTuple);
      if (ec) co_return false;
      if (i == 0 && b.reset == ResetMode::mid_stream) {
        reset_connection(stream);
        co_return false;
      }
    }
    if (b.truncate) {
      error_code ignored;
      lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
      lowest.socket().close(ignored);
      co_return false;
    }
    lowest.expires_after(kWriteTimeout);
    auto [ec, n] = co_await net::async_write(stream, http::make_chunk_last(), kTuple);
    co_return !ec && keep_alive;
  }

  Answer error_answer(int status, std::string body) {
    Answer a;
    a.status = status;
    a.body = std::move(body);
    return a;
  }

  Answer decide(const http::request<http::string_body>& req, const std::string& path, const Behaviour& b,
                std::uint64_t seq) {
    Answer a;
    if (b.hang) {
      a.kind = Answer::Kind::hang;
      return a;
    }
    if (b.reset == ResetMode::before) {
      a.kind = Answer::Kind::reset;
      return a;
    }
    if (!opts.require_key.empty()) {
      auto auth = req[http::field::authorization];
      if (auth != "Bearer " + opts.require_key) {
        return error_answer(401,
                            responses.error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"));
      }
    }
    if (b.status != 0 && (b.status < 200 || b.status >= 300)) {
      return error_answer(b.status, responses.error_for_status(b.status));
    }
    if (b.error_rate > 0) {
      // Deterministic in the request's sequence number since the last reset.
      double u = static_cast<double>(splitmix64(seed ^ splitmix64(seq)) >> 11) * 0x1.0p-53;
      if (u < b.error_rate) return error_answer(b.error_status, responses.mock_failure());
    }

    Endpoint endpoint;
    http::verb want = http::verb::post;
    if (ends_with(path, "/chat/completions")) {
      endpoint = Endpoint::chat;
    } else if (ends_with(path, "/completions")) {
      endpoint = Endpoint::completions;
    } else if (ends_with(path, "/embeddings")) {
      endpoint = Endpoint::embeddings;
    } else if (ends_with(path, "/responses")) {
      endpoint = Endpoint::responses;
    } else if (ends_with(path, "/models")) {
      endpoint = Endpoint::models;
      want = http::verb::get;
    } else {
      return error_answer(404, responses.error("Unknown request URL: " + std::string(req.method_string()) + " " + path,
                                               "invalid_request_error", "unknown_url"));
    }
    if (req.method() != want) {
      return error_answer(405, responses.error("Method not allowed: use " + std::string(http::to_string(want)),
                                               "invalid_request_error", "method_not_allowed"));
    }
    if (endpoint == Endpoint::models) {
      if (b.malformed) return malformed_answer();
      a.body = responses.models();
      return a;
    }

    json j = json::parse(req.body(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return error_answer(400, responses.error("We could not parse the JSON body of your request. (HINT: This likely "
                                               "means you aren't using your HTTP library correctly.)",
                                               "invalid_request_error", "invalid_json"));
    }
    auto model = j.find("model");
    if (model == j.end() || !model->is_string()) {
      return error_answer(
          400, responses.error("you must provide a model parameter", "invalid_request_error", "missing_model"));
    }
    std::string model_json = model->dump(-1, ' ', false, json::error_handler_t::replace);
    const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t created = realtime_us() / 1'000'000;

    if (endpoint == Endpoint::embeddings) {
      auto input = j.find("input");
      int inputs = 0;
      if (input != j.end() && input->is_string()) {
        inputs = 1;
      } else if (input != j.end() && input->is_array() && !input->empty()) {
        bool tokens = std::all_of(input->begin(), input->end(), [](const json& e) { return e.is_number_integer(); });
        inputs = tokens ? 1 : static_cast<int>(input->size());
      }
      if (inputs == 0) {
        return error_answer(400, responses.error("'input' must be a non-empty string or array", "invalid_request_error",
                                                 "invalid_input"));
      }
      if (b.malformed) return malformed_answer();
      auto fmt = j.find("encoding_format");
      bool base64 = fmt != j.end() && fmt->is_string() && *fmt == "base64";
      a.body = responses.embeddings(model_json, inputs, base64);
      return a;
    }

    std::string id_str = (endpoint == Endpoint::chat          ? "chatcmpl-mock-"
                          : endpoint == Endpoint::completions ? "cmpl-mock-"
                                                              : "resp_mock_") +
                         std::to_string(id);
    std::string tool = endpoint == Endpoint::chat ? first_tool_name(j) : std::string();

    if (json_true(j, "stream")) {
      a.kind = Answer::Kind::stream;
      a.plan.endpoint = endpoint;
      a.plan.model_json = std::move(model_json);
      a.plan.id = std::move(id_str);
      a.plan.created = created;
      a.plan.tool_name = std::move(tool);
      a.plan.chunks = b.stream_chunks;
      a.plan.malformed = b.malformed;
      if (auto so = j.find("stream_options"); so != j.end() && so->is_object()) {
        a.plan.include_usage = json_true(*so, "include_usage");
      }
      return a;
    }
    if (b.malformed) return malformed_answer();
    switch (endpoint) {
      case Endpoint::chat:
        a.body = tool.empty() ? responses.chat(model_json, id_str, created)
                              : responses.chat_tool_call(model_json, id_str, created, tool);
        break;
      case Endpoint::completions: a.body = responses.completion(model_json, id_str, created); break;
      default: a.body = responses.response(model_json, id_str, created); break;
    }
    return a;
  }

  Answer malformed_answer() {
    Answer a;
    a.body = responses.malformed();
    return a;
  }
};

Server::Server(Options opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}
Server::~Server() = default;

unsigned short Server::port() const { return impl_->acceptor->local_endpoint().port(); }

void Server::run() {
  auto& impl = *impl_;
  net::co_spawn(*impl.contexts.front(), impl.accept_loop(), net::detached);
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < impl.contexts.size(); ++i) {
    threads.emplace_back([ctx = impl.contexts[i].get()] { ctx->run(); });
  }
  impl.contexts.front()->run();
  for (auto& t : threads) t.join();
}

void Server::stop() { impl_->stop(); }

}  // namespace mock
