// The proxied request's life in phases: inspect the body, decide the arm,
// send to the upstream (retrying a stale pooled connection once), fall back to
// control when the canary fails before any byte reached the client, relay the
// response (event by event for streams), then account for it.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <array>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <optional>

#include "common/access_log.hpp"
#include "common/json_scan.hpp"
#include "metrics/metrics.hpp"
#include "upstream/exchange.hpp"
#include "http/headers.hpp"
#include "admin/report.hpp"
#include "rollout/controller.hpp"
#include "proxy/request.hpp"
#include "shadow/shadow.hpp"
#include "http/wire.hpp"
#include "store/store.hpp"
#include "upstream/usage.hpp"

namespace canaryd::proxy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t kRelayBuffer = 16 * 1024;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// canaryd's own time before the answering attempt was sent: from receiving the
// request to `ex.sent`, minus the upstream time of earlier (failed, fallen
// back) attempts, which is the provider's, not canaryd's.
Clock::duration before_upstream(const Request& ctx, const upstream::Exchange& ex, Clock::duration earlier_upstream) {
  return (ex.sent - ctx.received) - earlier_upstream;
}

// What the body says, read once.
struct Inspected {
  std::string model;             // as requested ("" when none)
  std::optional<json::Span> model_span;
  bool stream = false;
  std::optional<std::string> user;
};

struct HeaderView final : split::HeaderLookup {
  const http::fields& f;
  explicit HeaderView(const http::fields& fields) : f(fields) {}
  std::optional<std::string_view> get(std::string_view name) const override {
    auto it = f.find(name);
    if (it == f.end()) return std::nullopt;
    return it->value();
  }
  std::vector<std::string_view> get_all(std::string_view name) const override {
    std::vector<std::string_view> out;
    auto [first, last] = f.equal_range(name);
    for (auto it = first; it != last; ++it) out.push_back(it->value());
    return out;
  }
};

struct Outcome {
  Error error;                 // canaryd-made failure (no upstream response relayed)
  int status = 0;              // status sent to the client
  bool relayed = false;        // an upstream response (or part of it) reached the client
  bool keep_alive = false;
  bool client_gone = false;
  std::optional<upstream::Usage> usage;
  Clock::time_point done;          // the upstream finished (or the relay stopped)
  Clock::duration client_write{};  // time spent writing to the client after the upstream finished
  // The last write to the client, left to the caller so that the metrics
  // count the request before the client can see its end (a client that reads
  // /metrics right after its answer must find it counted).
  bool write_pending = false;
  std::string pending_head;        // non-streaming: head + body
  std::string pending_body;        // (a stream's pending write is its final chunk)
};

void add_arm_headers(http::fields& f, const Request& ctx, Arm arm, const config::UpstreamConfig& up,
                     std::string_view fallback) {
  f.set("X-Request-ID", ctx.request_id);
  f.set("X-Canaryd-Arm", arm_name(arm));
  f.set("X-Canaryd-Provider", up.name);
  if (!fallback.empty()) f.set("X-Canaryd-Fallback", fallback);
}

// Relays an upstream response whose header has been read.
// `pair`: this request is shadowed; its answer is summarized for the comparison.
net::awaitable<Outcome> relay(Request& ctx, upstream::Exchange& ex, Arm arm, const config::UpstreamConfig& up,
                              std::string_view fallback, shadow::ShadowPair* pair, ClientWatch& watch) {
  Outcome out;
  auto& p = *ex.parser;
  auto& ures = p.get();
  // A HEAD answer is bodiless whatever its Content-Type says.
  const bool streaming = !ex.head_only && upstream::is_stream_response(ures);
  const auto& sc = ctx.rt->config->server;
  char buf[kRelayBuffer];

  // A response without a body (204, 304, HEAD) is complete already.
  if (!streaming) {
    // Non-streaming: read it whole (bounded), read `usage`, send with a length.
    std::string body;
    if (Error e = co_await upstream::read_whole_body(ex, up, body)) {
      out.error = std::move(e);
      co_return out;
    }
    watch.stop();
    auto upstream_done = Clock::now();
    if (ex.status / 100 == 2 && body.find("\"usage\"") != std::string::npos) out.usage = upstream::parse_usage(body);
    if (pair) {
      summarize_body(body, pair->control);
      pair->log_text(pair->control_text, body);
    }

    http::fields fields;
    wire::client_response_headers(ures, fields);
    add_arm_headers(fields, ctx, arm, up, fallback);
    fields.set(http::field::content_length, std::to_string(body.size()));
    if (!ctx.keep_alive) fields.set(http::field::connection, "close");
    out.pending_head.reserve(512);
    wire::append_response_head(out.pending_head, static_cast<unsigned>(ex.status), fields);
    out.pending_body = std::move(body);
    out.write_pending = true;
    out.relayed = true;
    out.status = ex.status;
    out.done = upstream_done;
    co_return out;
  }

  // Streaming: forward bytes as they arrive, never buffering the whole body.
  p.body_limit(boost::none);
  upstream::SseScanner sse;
  if (pair) {
    sse.on_data = [pair](std::string_view data) {
      pair->control_stream.event(data);
      pair->log_text(pair->control_text, data);
      pair->log_text(pair->control_text, "\n");
    };
  }
  http::fields fields;
  wire::client_response_headers(ures, fields);
  add_arm_headers(fields, ctx, arm, up, fallback);
  if (fields[http::field::cache_control].empty()) fields.set(http::field::cache_control, "no-cache");
  fields.set(http::field::transfer_encoding, "chunked");
  if (!ctx.keep_alive) fields.set(http::field::connection, "close");
  std::string head;
  head.reserve(512);
  wire::append_response_head(head, static_cast<unsigned>(ex.status), fields);
  ctx.client.expires_after(sc.idle_timeout);
  auto [hec, hn] = co_await net::async_write(ctx.client, net::buffer(head), kTuple);
  out.relayed = true;
  out.status = ex.status;
  bool upstream_ok = true;
  beast::error_code cec = hec;
  std::string size_line;
  while (!cec && !p.is_done()) {
    ures.body().data = buf;
    ures.body().size = sizeof buf;
    ex.conn->tcp().expires_after(up.stream_idle_timeout);
    auto [ec, n] = co_await ex.conn->visit([&](auto& s) { return http::async_read_some(s, ex.conn->buffer, p, kTuple); });
    std::size_t got = sizeof buf - ures.body().size;
    if (ec && ec != http::error::need_buffer) {
      upstream_ok = false;
      out.error = upstream::classify(ec, "in the middle of the stream", up);
      break;
    }
    if (got == 0) continue;
    sse.feed(std::string_view(buf, got));
    // One chunk per upstream read, framed by hand, sent in one gathered write.
    size_line.clear();
    wire::append_chunk_size(size_line, got);
    std::array<net::const_buffer, 3> chunk{net::buffer(size_line), net::buffer(buf, got), net::buffer("\r\n", 2)};
    ctx.client.expires_after(sc.idle_timeout);
    auto [wec, wn] = co_await net::async_write(ctx.client, chunk, kTuple);
    cec = wec;
  }
  if (cec) {
    out.client_gone = true;
    ex.release(false);
    out.done = Clock::now();
    co_return out;
  }
  if (!upstream_ok) {
    // Headers are out: the only honest signal left is to end the connection
    // without the final chunk, so the client sees a truncated stream.
    ex.release(false);
    out.keep_alive = false;
    out.done = Clock::now();
    co_return out;
  }
  ex.release(ex.reusable());
  watch.stop();
  if (pair) pair->control_stream.finish(pair->control);
  out.usage = sse.usage();
  out.done = Clock::now();
  out.write_pending = true;  // the final chunk
  co_return out;
}

// The response's last bytes (see Outcome::write_pending); sets keep_alive,
// client_write and done.
net::awaitable<void> finish_write(Request& ctx, Outcome& o) {
  ctx.client.expires_after(ctx.rt->config->server.idle_timeout);
  beast::error_code ec;
  if (o.pending_head.empty()) {
    auto [wec, wn] = co_await net::async_write(ctx.client, net::buffer("0\r\n\r\n", 5), kTuple);
    ec = wec;
  } else {
    std::array<net::const_buffer, 2> wire{net::buffer(o.pending_head), net::buffer(o.pending_body)};
    auto [wec, wn] = co_await net::async_write(ctx.client, wire, kTuple);
    ec = wec;
  }
  const auto now = Clock::now();
  o.client_write = now - o.done;
  o.done = now;
  o.keep_alive = !ec && ctx.keep_alive;
}

// Which failures of the canary may go to control (fallback.on).
std::string_view fallback_reason(const upstream::Exchange& ex) {
  if (ex.error) {
    switch (ex.error.kind) {
      case ErrorKind::connect_error: return "connect_error";
      case ErrorKind::tls_error: return "tls_error";
      case ErrorKind::timeout: return "timeout";
      case ErrorKind::bad_response: return "5xx";
      default: return "";
    }
  }
  if (ex.status == 429) return "429";
  if (ex.status >= 500) return "5xx";
  return "";
}

bool listed(const std::vector<std::string>& on, std::string_view reason) {
  for (const auto& r : on) {
    if (r == reason) return true;
  }
  return false;
}

metrics::Metrics::Status metric_status(const upstream::Exchange& ex) {
  if (ex.error.kind == ErrorKind::timeout) return metrics::Metrics::Status::timeout;
  if (ex.error || ex.status >= 400) return metrics::Metrics::Status::error;
  return metrics::Metrics::Status::success;
}

// Counts as an error in the analysis window: the upstream's failures, never
// the client's own 4xx (400/404/413/422: its request). 429 is the provider's;
// so are 401 and 403: canaryd always sends the arm's own key (the client's
// Authorization is never forwarded), so a refused key is that arm's
// misconfiguration, and a canary answering 401 must be rolled back.
bool analysis_error(const upstream::Exchange& ex) {
  return ex.error || ex.status >= 500 || ex.status == 429 || ex.status == 401 || ex.status == 403;
}


struct Decision {
  Arm arm = Arm::control;
  bool forced = false;
  bool pinned = false;
  std::string_view sticky_source;
};

std::string_view source_name(split::KeySource::Kind k) {
  switch (k) {
    case split::KeySource::Kind::header: return "header";
    case split::KeySource::Kind::body_user: return "body_user";
    case split::KeySource::Kind::client_ip: return "client_ip";
  }
  return "";
}

// SPEC §4: override, then rollback, then the pin (upgrade-only), then the hash.
net::awaitable<Decision> decide(Request& ctx, RouteKind route, const split::HeaderLookup& headers,
                                const std::optional<std::string>& user) {
  Decision d;
  if (route == RouteKind::control_only) co_return d;
  const config::Config& cfg = *ctx.rt->config;
  auto override_arm = split::parse_override(headers.get(cfg.split.override_header));
  if (override_arm) {
    d.arm = *override_arm;
    d.forced = true;
    co_return d;
  }
  rollout::RolloutController* ro = ctx.services.rollout;
  const std::uint32_t threshold = ro ? ro->threshold() : 0;
  const bool rolled_back = !ro || ro->rolled_back() || threshold == 0;
  if (rolled_back) co_return d;
  std::optional<std::string_view> body_user;
  if (user) body_user = *user;
  split::StickyKey key = ctx.rt->splitter.sticky_key(headers, body_user, ctx.peer_ip);
  d.sticky_source = key.random ? std::string_view("random") : source_name(key.source);
  if (key.random && ctx.services.metrics) ctx.services.metrics->add_random_key();
  Arm hash = ctx.rt->splitter.hash_arm(key.value, threshold);
  std::optional<Arm> pin;
  if (cfg.split.pin_ttl.count() > 0 && !key.random && ctx.thread.store) {
    std::string_view ns = cfg.redis ? std::string_view(cfg.redis->ns) : std::string_view("canaryd");
    std::string pkey = store::pin_key(ns, ro->epoch(), key.value);
    // Only canary pins are stored (store.hpp): one store call either way.
    if (hash == Arm::canary) {
      (void)co_await ctx.thread.store->pin_canary(std::move(pkey),
                                                  std::chrono::duration_cast<std::chrono::seconds>(cfg.split.pin_ttl));
    } else {
      std::optional<bool> has = co_await ctx.thread.store->has_canary_pin(std::move(pkey));
      if (has.value_or(false)) pin = Arm::canary;
    }
  }
  split::Decision sd = split::decide(std::nullopt, false, hash, pin);
  d.arm = sd.arm;
  d.pinned = sd.pinned;
  co_return d;
}

// One upstream attempt into the metrics and the analysis window.
// `earlier_upstream`: upstream time of the attempts before this one (see before_upstream).
void account_attempt(Request& ctx, RouteKind route, const config::UpstreamConfig& up, const std::string& model,
                     Arm arm, metrics::Metrics::Status status, bool analysis_err, const upstream::Exchange& ex, const Outcome* o,
                     Clock::duration earlier_upstream = {}) {
  auto end = o ? o->done : Clock::now();
  if (auto* m = ctx.services.metrics) {
    int p = m->provider_index(up.name);
    int mi = m->model_index(model);
    if (p >= 0) {
      m->observe_request(p, mi, status, seconds(end - ex.sent));
      if (ex.status) m->observe_ttfb(p, mi, seconds(ex.first_byte - ex.sent));
      if (o && o->usage) m->add_tokens(p, mi, o->usage->prompt, o->usage->completion);
    }
    if (o && o->relayed && !o->write_pending) {
      // Time in canaryd itself: before the upstream call, and writing out
      // after the upstream finished (observed after that write when it is pending).
      m->observe_overhead(seconds(before_upstream(ctx, ex, earlier_upstream) + o->client_write));
    }
  }
  if (route != RouteKind::split) return;  // control-only routes: metrics only
  if (ctx.services.rollout) {
    ctx.services.rollout->record(arm, analysis_err, std::chrono::duration_cast<std::chrono::nanoseconds>(end - ex.sent),
                            ctx.rollout_epoch);
  }
  if (auto* r = ctx.services.report) {
    const std::uint64_t prompt = o && o->usage ? o->usage->prompt : 0;
    const std::uint64_t completion = o && o->usage ? o->usage->completion : 0;
    std::optional<std::chrono::nanoseconds> ttfb;
    if (ex.status) ttfb = std::chrono::duration_cast<std::chrono::nanoseconds>(ex.first_byte - ex.sent);
    r->record(arm, prompt, completion, config::cost_usd(ctx.rt->config->pricing, model, prompt, completion), ttfb);
  }
}

void log_access(Request& ctx, const Decision& d, Arm arm, const config::UpstreamConfig* up,
                std::string_view model, int status, bool stream, std::string_view fallback, std::string_view error,
                const upstream::Exchange& ex, const Outcome* o, Clock::duration earlier_upstream = {}) {
  if (!ctx.services.access_log || !ctx.rt->config->server.access_log) return;
  auto end = o ? o->done : Clock::now();
  log::AccessRecord r;
  r.request_id = ctx.request_id;
  r.method = ctx.req.method_string();
  r.path = ctx.path;
  r.arm = arm_name(arm);
  r.provider = up ? std::string_view(up->name) : std::string_view();
  r.model = model;
  r.status = status;
  r.latency_ms = millis(end - ctx.received);
  if (ex.status) r.ttfb_ms = millis(ex.first_byte - ctx.received);
  if (o && o->relayed) r.overhead_ms = millis(before_upstream(ctx, ex, earlier_upstream) + o->client_write);
  if (o && o->usage) {
    r.prompt_tokens = o->usage->prompt;
    r.completion_tokens = o->usage->completion;
    r.cost_usd = config::cost_usd(ctx.rt->config->pricing, model, r.prompt_tokens, r.completion_tokens);
  }
  r.fallback = fallback;
  r.error = error;
  r.sticky_source = d.sticky_source;
  r.stream = stream;
  r.pinned = d.pinned;
  ctx.services.access_log->write(r);
}

std::string renamed_body(std::string_view body, const json::Span& model, std::string_view to) {
  std::string out;
  out.reserve(body.size() + to.size());
  out.append(body.substr(0, model.begin));
  out += json::encode_string(to);
  out.append(body.substr(model.end));
  return out;
}

// Fills the pair and spawns its call to the canary on this I/O thread.
void start_shadow(Request& ctx, const std::shared_ptr<shadow::ShadowPair>& handle, const Inspected& in,
                  const std::string& body) {
  shadow::ShadowPair& pair = *handle;
  const config::Config& cfg = *ctx.rt->config;
  const config::UpstreamConfig& canary = cfg.canary();
  const config::UpstreamConfig& control = cfg.control();
  pair.request_id = ctx.request_id;
  pair.path = ctx.path;
  pair.stream = in.stream;
  pair.control_model = in.model;
  if (auto m = control.models.find(in.model); m != control.models.end()) pair.control_model = m->second;
  pair.shadow_model = in.model;
  if (auto m = canary.models.find(in.model); m != canary.models.end()) pair.shadow_model = m->second;
  std::string shadow_body = in.model_span && pair.shadow_model != in.model
                                ? renamed_body(body, *in.model_span, pair.shadow_model)
                                : body;
  if (pair.log_bodies) pair.request_body = body;
  std::string head = upstream::upstream_head(ctx.req, upstream::upstream_target(canary, ctx.path, ctx.query),
                                   shadow_body.size(), {&canary, ctx.request_id, ctx.peer_ip});
  ctx.services.shadow->start(ctx.client.get_executor(), handle, ctx.thread.pool(*ctx.rt, canary, ctx.services.threads),
                        std::move(head), std::move(shadow_body));
}

}  // namespace

net::awaitable<bool> proxy(Request& ctx, RouteKind route) {
  const config::Config& cfg = *ctx.rt->config;
  auto& req = ctx.req;
  std::string body = std::move(req.body());

  // Phase 1: inspect the body once.
  Inspected in;
  if (route == RouteKind::split) {
    if (req.method() != http::verb::post) {
      co_return co_await write_error(ctx, ErrorKind::method_not_allowed, "only POST is allowed on " + ctx.path);
    }
    json::Lookup<5> lk{{"model", "stream", "user", "messages", "input"}};
    std::string why = json::scan_object(body, lk);
    if (!why.empty()) {
      co_return co_await write_error(ctx, ErrorKind::bad_request, "We could not parse the JSON body of your request: " + why);
    }
    auto model = lk.values[0] ? json::decode_string(lk.values[0]->of(body)) : std::nullopt;
    if (!model || model->empty()) {
      co_return co_await write_error(ctx, ErrorKind::bad_request, "you must provide a model parameter");
    }
    in.model = std::move(*model);
    in.model_span = lk.values[0];
    if (ctx.path == "/v1/chat/completions" && (!lk.values[3] || lk.values[3]->of(body).front() != '[')) {
      co_return co_await write_error(ctx, ErrorKind::bad_request, "'messages' is a required property and must be an array");
    }
    if (lk.values[1]) {
      std::string_view s = lk.values[1]->of(body);
      if (s != "true" && s != "false" && s != "null") {
        co_return co_await write_error(ctx, ErrorKind::bad_request, "'stream' must be a boolean");
      }
      in.stream = (s == "true");
    }
    if (lk.values[2]) in.user = json::decode_string(lk.values[2]->of(body));
  }

  // Phase 2: decide the arm.
  HeaderView headers(req);
  if (ctx.services.rollout) ctx.rollout_epoch = ctx.services.rollout->epoch();
  Decision decision = co_await decide(ctx, route, headers, in.user);
  ctx.services.inflight.fetch_add(1, std::memory_order_relaxed);
  if (ctx.services.metrics) ctx.services.metrics->inflight_add(1);

  // Shadow: a share of what control serves is mirrored to the canary, in the
  // background. The guard tells the pair when this request ends without an
  // answer to compare (the client left).
  std::shared_ptr<shadow::ShadowPair> pair;
  if (route == RouteKind::split && decision.arm == Arm::control && ctx.services.shadow) {
    pair = ctx.services.shadow->admit(ctx.rt->config, ctx.services.rollout ? ctx.services.rollout->canary_off() : false);
    if (pair) start_shadow(ctx, pair, in, body);
  }
  struct PairGuard {
    explicit PairGuard(std::shared_ptr<shadow::ShadowPair>& pair) : p(pair) {}
    std::shared_ptr<shadow::ShadowPair>& p;
    ~PairGuard() {
      if (p) p->control_abandoned();
    }
  } pair_guard(pair);

  // Phase 3: call the upstream, falling back to control when allowed.
  upstream::Connection* current = nullptr;
  Arm arm = decision.arm;
  std::string fallback;
  Clock::duration earlier_upstream{};  // failed attempts' upstream time: not canaryd's overhead
  std::optional<upstream::Exchange> ex;
  std::optional<Outcome> outcome;
  const config::UpstreamConfig* up = nullptr;
  std::string sent_model;
  // Declared out of the loop below: g++ 12 double-frees non-trivial locals of a
  // loop body that suspends and then `continue`s.
  std::string head;
  std::string renamed;

  // While the upstream works, the worker watches this client: if it leaves,
  // the upstream connection is closed at once so the provider stops generating.
  ClientWatch watch(ctx.thread.watches, ctx.client.socket().native_handle(), &current);

  auto call = [&]() -> net::awaitable<void> {
    for (int attempt = 0; attempt < 2; ++attempt) {
      up = &(arm == Arm::canary ? cfg.canary() : cfg.control());
      // The model the provider sees: the arm's rename, and on fallback the
      // fallback rename first.
      sent_model = in.model;
      if (!fallback.empty()) {
        if (auto f = cfg.fallback.models.find(sent_model); f != cfg.fallback.models.end()) sent_model = f->second;
      }
      if (auto m = up->models.find(sent_model); m != up->models.end()) sent_model = m->second;
      std::string_view out_body = body;
      if (in.model_span && sent_model != in.model) {
        renamed = renamed_body(body, *in.model_span, sent_model);
        out_body = renamed;
      }
      head = upstream::upstream_head(req, upstream::upstream_target(*up, ctx.path, ctx.query), out_body.size(),
                           {up, ctx.request_id, ctx.peer_ip});
      ex.emplace(co_await upstream::start_exchange(ctx.thread.pool(*ctx.rt, *up, ctx.services.threads), *up, head, out_body,
                                         req.method() == http::verb::head, &current, watch.gone_flag()));
      if (watch.gone()) co_return;  // the client left: no fallback, no relay
      std::string_view reason = fallback_reason(*ex);
      const bool may_fall_back = attempt == 0 && arm == Arm::canary && !decision.forced && cfg.fallback.enabled &&
                                 !reason.empty() && listed(cfg.fallback.on, reason);
      if (may_fall_back && ctx.services.rollout && ctx.services.rollout->take_fallback()) {
        // The canary failed before any byte reached the client: account for
        // its attempt, drop its answer, and ask control once.
        earlier_upstream += Clock::now() - ex->sent;
        account_attempt(ctx, route, *up, sent_model, arm, metric_status(*ex), analysis_error(*ex), *ex, nullptr);
        ex->release(false);
        current = nullptr;
        if (ctx.services.metrics) ctx.services.metrics->add_fallback(up->name, cfg.control().name, reason);
        fallback = std::string(reason);
        arm = Arm::control;
        continue;
      }
      break;
    }
    if (!ex->error && !watch.gone()) outcome.emplace(co_await relay(ctx, *ex, arm, *up, fallback, pair.get(), watch));
    current = nullptr;
  };

  co_await call();
  // Leaves the in-flight count with the accounting, before the client can see
  // the end of its answer (the metrics are settled by then); on every other
  // path when this frame ends.
  struct InflightGuard {
    explicit InflightGuard(Services& a) : app(a) {}
    Services& app;
    bool done = false;
    void release() {
      if (done) return;
      done = true;
      app.inflight.fetch_sub(1, std::memory_order_relaxed);
      if (app.metrics) app.metrics->inflight_add(-1);
    }
    ~InflightGuard() { release(); }
  } inflight_guard(ctx.services);
  const bool gone = watch.gone();

  if (!gone && outcome && outcome->error && !outcome->relayed && ex) {
    // The upstream sent a header, then failed before its (buffered) body was
    // complete: nothing reached the client yet, so it gets a clean 502/504.
    ex->error = outcome->error;
    outcome.reset();
  }
  bool keep = false;
  if (!gone && ex && ex->error && !outcome) {
    // Nothing reached the client: answer with canaryd's own error.
    account_attempt(ctx, route, *up, sent_model, arm, metric_status(*ex), analysis_error(*ex), *ex, nullptr);
    http::response<http::string_body> res{static_cast<http::status>(http_status(ex->error.kind)), 11};
    res.set(http::field::content_type, "application/json");
    add_arm_headers(res, ctx, arm, *up, fallback);
    res.body() = openai_error_body(ex->error.kind, ex->error.message);
    res.keep_alive(ctx.keep_alive);
    res.prepare_payload();
    inflight_guard.release();
    ctx.client.expires_after(cfg.server.idle_timeout);
    auto [wec, wn] = co_await http::async_write(ctx.client, res, kTuple);
    keep = !wec && ctx.keep_alive;
    log_access(ctx, decision, arm, up, sent_model, http_status(ex->error.kind), in.stream, fallback,
               error_name(ex->error.kind), *ex, nullptr);
    if (pair) {
      pair->control.status = http_status(ex->error.kind);
      pair->control.failed = true;
      pair->control.error = std::string(error_name(ex->error.kind));
      pair->control.latency_seconds = seconds(Clock::now() - ex->sent);
      pair->control_done();
    }
    co_return keep;
  }
  if (ex && up) {
    Outcome none;
    const Outcome& o = outcome ? *outcome : none;
    bool upstream_failed = outcome ? static_cast<bool>(o.error) : true;
    upstream::Exchange& e = *ex;
    if (gone || o.client_gone) {
      // The client left: not the upstream's fault; count it as its status so far.
      account_attempt(ctx, route, *up, sent_model, arm, metric_status(e), false, e, outcome ? &o : nullptr,
                      earlier_upstream);
    } else {
      upstream::Exchange view;
      view.status = e.status;
      view.error = upstream_failed ? o.error : Error{};
      view.sent = e.sent;
      view.first_byte = e.first_byte;
      account_attempt(ctx, route, *up, sent_model, arm, metric_status(view), analysis_error(view), e, &o,
                      earlier_upstream);
    }
    if (outcome && o.write_pending && !gone) {
      // Time in canaryd itself: before the upstream call, and preparing the
      // answer after the upstream finished (the last write to the socket is
      // the kernel's). Observed, like everything else, before the client can
      // see the end of its answer.
      if (ctx.services.metrics) {
        ctx.services.metrics->observe_overhead(seconds(before_upstream(ctx, e, earlier_upstream) + (Clock::now() - o.done)));
      }
      inflight_guard.release();
      co_await finish_write(ctx, *outcome);
    }
    log_access(ctx, decision, arm, up, sent_model, o.status ? o.status : 499, in.stream, fallback,
               (gone || o.client_gone) ? std::string_view("client_gone") : (o.error ? error_name(o.error.kind) : ""), e,
               outcome ? &o : nullptr, earlier_upstream);
    keep = !gone && o.keep_alive;
    if (pair && !gone && !o.client_gone && outcome) {
      pair->control.status = o.status;
      pair->control.failed = upstream_failed || o.status / 100 != 2;
      if (o.error) pair->control.error = std::string(error_name(o.error.kind));
      pair->control.latency_seconds = seconds(o.done - e.sent);
      if (e.status) pair->control.ttfb_seconds = seconds(e.first_byte - e.sent);
      pair->control.usage = o.usage;
      pair->control_done();
    }
  }
  co_return keep;
}

}  // namespace canaryd::proxy
