// Phase 4: the upstream's answer to the client. A whole body is read
// (bounded by max_response_bytes) and sent with a Content-Length; an event
// stream is relayed chunk by chunk as it arrives, never buffered whole. The
// last write is left to the driver (Outcome::write_pending), so the request
// is counted before the client can see its end.
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <charconv>

#include "http/headers.hpp"
#include "http/wire.hpp"
#include "proxy/active.hpp"
#include "shadow/shadow.hpp"
#include "upstream/quality.hpp"

namespace canaryd::proxy {
namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t kRelayBuffer = 16 * 1024;

}  // namespace

void ActiveRequest::add_arm_headers(http::fields& f) const {
  f.set("X-Request-ID", r_.request_id);
  f.set("X-Canaryd-Arm", arm_name(arm_));
  f.set("X-Canaryd-Experiment", experiment_name());
  f.set("X-Canaryd-Provider", up_->name);
  if (!fallback_.empty()) f.set("X-Canaryd-Fallback", fallback_);
}

net::awaitable<void> ActiveRequest::relay() {
  outcome_.emplace();
  // A HEAD answer is bodiless whatever its Content-Type says.
  if (!ex_->head_only && upstream::is_stream_response(ex_->parser->get())) {
    co_await relay_stream();
  } else {
    co_await relay_whole();
  }
}

net::awaitable<void> ActiveRequest::relay_whole() {
  Outcome& out = *outcome_;
  upstream::Exchange& ex = *ex_;
  std::string body;
  if (Error e = co_await upstream::read_whole_body(ex, *up_, body)) {
    out.error = std::move(e);
    co_return;
  }
  watch_->stop();
  const auto upstream_done = Clock::now();
  if (ex.status / 100 == 2) {
    // One scan of the answer for its usage and (on a split route) its quality signals.
    const auto api = route_ == RouteKind::split ? upstream::answer_api(r_.path) : upstream::AnswerApi::none;
    if (api != upstream::AnswerApi::none) {
      upstream::QualityScanner quality(api, in_.json_expected);
      quality.body(body);
      out.quality = quality.flags();
      out.usage = quality.usage();
    } else if (body.find("\"usage\"") != std::string::npos) {
      out.usage = upstream::parse_usage(body);
    }
  }
  if (pair_) {
    shadow::summarize_body(body, pair_->control);
    pair_->log_text(pair_->control_text, body);
  }
  char length[24];
  const auto [length_end, length_ec] = std::to_chars(length, length + sizeof length, body.size());
  out.pending_head.reserve(1024);
  wire::append_client_response_head(
      out.pending_head, static_cast<unsigned>(ex.status), ex.parser->get(),
      {{"X-Request-ID", r_.request_id},
       {"X-Canaryd-Arm", arm_name(arm_)},
       {"X-Canaryd-Experiment", experiment_name()},
       {"X-Canaryd-Provider", up_->name},
       {fallback_.empty() ? std::string_view() : "X-Canaryd-Fallback", fallback_},
       {"Content-Length", std::string_view(length, static_cast<std::size_t>(length_end - length))},
       {r_.keep_alive ? std::string_view() : "Connection", "close"}});
  out.pending_body = std::move(body);
  out.write_pending = true;
  out.relayed = true;
  out.status = ex.status;
  out.done = upstream_done;
}

net::awaitable<void> ActiveRequest::relay_stream() {
  Outcome& out = *outcome_;
  upstream::Exchange& ex = *ex_;
  auto& p = *ex.parser;
  auto& ures = p.get();
  const auto& sc = cfg_.server;
  char buf[kRelayBuffer];

  p.body_limit(boost::none);
  upstream::SseScanner sse;
  const auto api = upstream::answer_api(r_.path);
  upstream::QualityScanner quality(api, route_ == RouteKind::split && in_.json_expected);
  if (route_ == RouteKind::split && ex.status / 100 == 2) sse.quality = &quality;
  if (shadow::ShadowPair* pair = pair_.get()) {
    sse.on_data = [pair](std::string_view data) {
      pair->control_stream.event(data);
      pair->log_text(pair->control_text, data);
      pair->log_text(pair->control_text, "\n");
    };
  }
  std::string head;
  head.reserve(1024);
  wire::append_client_response_head(head, static_cast<unsigned>(ex.status), ures,
                                    {{"X-Request-ID", r_.request_id},
                                     {"X-Canaryd-Arm", arm_name(arm_)},
                                     {"X-Canaryd-Experiment", experiment_name()},
                                     {"X-Canaryd-Provider", up_->name},
                                     {fallback_.empty() ? std::string_view() : "X-Canaryd-Fallback", fallback_},
                                     {"Transfer-Encoding", "chunked"},
                                     {r_.keep_alive ? std::string_view() : "Connection", "close"}},
                                    /*no_cache_unless_set=*/true);
  r_.client.expires_after(sc.idle_timeout);
  auto [hec, hn] = co_await net::async_write(r_.client, net::buffer(head), kTuple);
  out.relayed = true;
  out.status = ex.status;
  bool upstream_ok = true;
  beast::error_code cec = hec;
  std::string size_line;
  while (!cec && !p.is_done()) {
    ures.body().data = buf;
    ures.body().size = sizeof buf;
    ex.conn->tcp().expires_after(up_->stream_idle_timeout);
    auto [ec, n] =
        co_await ex.conn->visit([&](auto& s) { return http::async_read_some(s, ex.conn->buffer, p, kTuple); });
    const std::size_t got = sizeof buf - ures.body().size;
    if (ec && ec != http::error::need_buffer) {
      upstream_ok = false;
      out.error = upstream::classify(ec, "in the middle of the stream", *up_);
      break;
    }
    if (got == 0) continue;
    sse.feed(std::string_view(buf, got));
    // One chunk per upstream read, framed by hand, sent in one gathered write.
    size_line.clear();
    wire::append_chunk_size(size_line, got);
    std::array<net::const_buffer, 3> chunk{net::buffer(size_line), net::buffer(buf, got), net::buffer("\r\n", 2)};
    r_.client.expires_after(sc.idle_timeout);
    auto [wec, wn] = co_await net::async_write(r_.client, chunk, kTuple);
    cec = wec;
  }
  out.done = Clock::now();
  if (cec) {
    out.client_gone = true;
    ex.release(false);
    co_return;
  }
  if (!upstream_ok) {
    // Headers are out: the only honest signal left is to end the connection
    // without the final chunk, so the client sees a truncated stream.
    ex.release(false);
    out.keep_alive = false;
    co_return;
  }
  ex.release(ex.reusable());
  watch_->stop();
  if (pair_) pair_->control_stream.finish(pair_->control);
  out.usage = sse.usage();
  out.quality = quality.flags();
  out.write_pending = true;  // the final chunk
}

// The answer's last bytes (Outcome::write_pending); sets keep_alive,
// client_write and done.
net::awaitable<void> ActiveRequest::finish_write() {
  Outcome& o = *outcome_;
  r_.client.expires_after(cfg_.server.idle_timeout);
  beast::error_code ec;
  if (o.pending_head.empty()) {
    auto [wec, wn] = co_await net::async_write(r_.client, net::buffer("0\r\n\r\n", 5), kTuple);
    ec = wec;
  } else {
    std::array<net::const_buffer, 2> wire{net::buffer(o.pending_head), net::buffer(o.pending_body)};
    auto [wec, wn] = co_await net::async_write(r_.client, wire, kTuple);
    ec = wec;
  }
  const auto now = Clock::now();
  o.client_write = now - o.done;
  o.done = now;
  o.keep_alive = !ec && r_.keep_alive;
}

}  // namespace canaryd::proxy
