#include "shadow/shadow.hpp"

#include <algorithm>
#include <random>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <nlohmann/json.hpp>

#include "admin/report.hpp"
#include "common/access_log.hpp"
#include "common/log.hpp"
#include "metrics/metrics.hpp"
#include "upstream/exchange.hpp"
#include "upstream/usage.hpp"

namespace canaryd::shadow {

namespace net = boost::asio;
namespace http = boost::beast::http;
namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr const auto& kDropNames = metrics::Metrics::kShadowDrops;  // in Shadow::Drop order

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// An answer for the bodies file: the JSON itself when it parses, else the text.
nlohmann::json as_json_or_text(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? nlohmann::json(text) : j;
}

double quantile(const std::deque<double>& values, double q) {
  std::vector<double> v(values.begin(), values.end());
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

nlohmann::json rate(std::uint64_t part, std::uint64_t whole) {
  return whole ? nlohmann::json(static_cast<double>(part) / static_cast<double>(whole)) : nlohmann::json(nullptr);
}

net::awaitable<void> shadow_call(Shadow& owner, std::shared_ptr<ShadowPair> pair, std::shared_ptr<upstream::Pool> pool,
                                 std::string head, std::string body) {
  // Whatever happens (including the frame being destroyed at shutdown), the slot is given back.
  struct Slot {
    Shadow& s;
    ~Slot() { s.shadow_call_ended(); }
  } slot{owner};
  const config::UpstreamConfig& up = pair->config->upstreams.at(pair->exp().split.canary);
  AnswerSummary& s = pair->shadow;
  upstream::Connection* current = nullptr;
  upstream::Exchange ex = co_await upstream::start_exchange(std::move(pool), up, head, body, false, &current);
  if (ex.error) {
    s.failed = true;
    s.error = std::string(error_name(ex.error.kind));
    s.latency_seconds = seconds(upstream::Exchange::Clock::now() - ex.sent);
    pair->shadow_done();
    co_return;
  }
  s.status = ex.status;
  s.ttfb_seconds = seconds(ex.first_byte - ex.sent);
  if (upstream::is_stream_response(ex.parser->get())) {
    // Read to the end, summarizing each event; bounded in size and per-event gap.
    auto& p = *ex.parser;
    auto& res = p.get();
    p.body_limit(boost::none);
    upstream::SseScanner sse;
    StreamSummarizer summary;
    ShadowPair* raw = pair.get();
    sse.on_data = [&summary, raw](std::string_view data) {
      summary.event(data);
      raw->log_text(raw->shadow_text, data);
      raw->log_text(raw->shadow_text, "\n");
    };
    char buf[kReadBuffer];
    std::uint64_t total = 0;
    bool ok = true;
    while (!p.is_done()) {
      res.body().data = buf;
      res.body().size = sizeof buf;
      ex.conn->tcp().expires_after(up.stream_idle_timeout);
      auto [ec, n] =
          co_await ex.conn->visit([&](auto& st) { return http::async_read_some(st, ex.conn->buffer, p, kTuple); });
      const std::size_t got = sizeof buf - res.body().size;
      total += got;
      if ((ec && ec != http::error::need_buffer) || total > up.max_response_bytes) {
        s.error = ec ? std::string(error_name(upstream::classify(ec, "in the middle of the stream", up).kind))
                     : std::string("response_too_large");
        ok = false;
        break;
      }
      sse.feed(std::string_view(buf, got));
    }
    ex.release(ok && ex.reusable());
    summary.finish(s);
    s.usage = sse.usage();
    if (!ok) s.failed = true;
  } else {
    std::string answer;
    Error e = co_await upstream::read_whole_body(ex, up, answer);
    if (e) {
      s.failed = true;
      s.error = std::string(error_name(e.kind));
    } else {
      summarize_body(answer, s);
      pair->log_text(pair->shadow_text, answer);
    }
  }
  if (s.status / 100 != 2) s.failed = true;
  s.latency_seconds = seconds(upstream::Exchange::Clock::now() - ex.sent);
  pair->shadow_done();
}

}  // namespace

// ---------------------------------------------------------------------------- ShadowPair

ShadowPair::ShadowPair(Shadow& owner, std::shared_ptr<const config::Config> cfg, std::size_t exp)
    : config(std::move(cfg)), experiment(exp), owner_(owner) {}

ShadowPair::~ShadowPair() = default;

void ShadowPair::log_text(std::string& side, std::string_view text) const {
  if (!log_bodies || side.size() >= kMaxLoggedText) return;
  side.append(text.substr(0, kMaxLoggedText - side.size()));
}

void ShadowPair::control_done() {
  if (control_reported_ || control_abandoned_) return;
  control_reported_ = true;
  if (shadow_reported_) finish();
}

void ShadowPair::control_abandoned() {
  if (control_reported_ || control_abandoned_) return;
  control_abandoned_ = true;
  if (shadow_reported_) finish();
}

void ShadowPair::shadow_done() {
  if (shadow_reported_) return;
  shadow_reported_ = true;
  if (control_reported_ || control_abandoned_) finish();
}

void ShadowPair::finish() {
  if (finished_) return;
  finished_ = true;
  if (control_abandoned_) {
    owner_.dropped(experiment, Shadow::Drop::control_incomplete);
    return;
  }
  const auto& pricing = config->pricing;
  const upstream::Usage cu = control.usage.value_or(upstream::Usage{});
  const upstream::Usage su = shadow.usage.value_or(upstream::Usage{});
  Comparison c = compare(control, shadow, config::cost_usd(pricing, control_model, cu.prompt, cu.completion),
                         config::cost_usd(pricing, shadow_model, su.prompt, su.completion));
  owner_.record(*this, c);
}

// ---------------------------------------------------------------------------- Shadow

Shadow::Shadow(const Clock& clock, metrics::Metrics* metrics, log::AccessLog* access_log)
    : clock_(clock), metrics_(metrics), access_log_(access_log) {}

Shadow::~Shadow() = default;

void Shadow::configure(const config::ShadowConfig& cfg) {
  std::shared_ptr<spdlog::logger> opened;
  if (cfg.log_bodies) {
    std::lock_guard lock(mu_);
    if (bodies_ && bodies_path_ == cfg.bodies_file) return;
  }
  if (cfg.log_bodies) opened = log::file_logger("shadow-bodies", cfg.bodies_file);  // throws: start-up/reload fails
  std::lock_guard lock(mu_);
  if (bodies_) bodies_->flush();
  bodies_ = std::move(opened);
  bodies_path_ = cfg.log_bodies ? cfg.bodies_file : std::string();
}

bool Shadow::sample(double percent) {
  if (percent >= 100) return true;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, 100)(rng) < percent;
}

bool Shadow::take_token(double per_second) {
  const double burst = std::max(1.0, per_second);
  const auto now = clock_.now();
  std::lock_guard lock(mu_);
  if (!refilled_) {
    tokens_ = burst;
  } else {
    tokens_ = std::min(burst, tokens_ + seconds(now - *refilled_) * per_second);
  }
  refilled_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

std::shared_ptr<ShadowPair> Shadow::admit(const std::shared_ptr<const config::Config>& config, std::size_t experiment,
                                          bool canary_off) {
  const config::ShadowConfig& cfg = config->shadow;
  if (!cfg.enabled || cfg.percent <= 0 || !sample(cfg.percent)) return nullptr;
  if (canary_off) {
    dropped(experiment, Drop::rolled_back);
    return nullptr;
  }
  if (in_flight_.fetch_add(1, std::memory_order_relaxed) >= static_cast<std::int64_t>(cfg.max_in_flight)) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    dropped(experiment, Drop::in_flight);
    return nullptr;
  }
  if (!take_token(cfg.max_per_second)) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    dropped(experiment, Drop::rate);
    return nullptr;
  }
  auto pair = std::make_shared<ShadowPair>(*this, config, experiment);
  {
    std::lock_guard lock(mu_);
    pair->log_bodies = cfg.log_bodies && bodies_ != nullptr;
  }
  return pair;
}

void Shadow::start(const net::any_io_executor& ex, std::shared_ptr<ShadowPair> pair,
                   std::shared_ptr<upstream::Pool> pool, std::string head, std::string body) {
  net::co_spawn(ex, shadow_call(*this, std::move(pair), std::move(pool), std::move(head), std::move(body)),
                net::detached);
}

void Shadow::dropped(std::size_t experiment, Drop why) {
  const auto i = static_cast<std::size_t>(why);
  if (metrics_) metrics_->add_shadow_drop(experiment, i);
  std::lock_guard lock(mu_);
  ++totals_.dropped[i];
}

void Shadow::record(const ShadowPair& pair, const Comparison& c) {
  const auto r = static_cast<std::size_t>(c.result);
  if (metrics_) {
    metrics_->add_shadow_result(pair.experiment, r);
    metrics_->observe_shadow_latency_delta(pair.experiment, c.latency_delta_seconds);
    metrics_->add_shadow_cost_delta(pair.experiment, c.shadow_cost_usd - c.control_cost_usd);
  }

  nlohmann::json line;
  line["type"] = "shadow";
  line["time"] = rfc3339(clock_.wall());
  line["request_id"] = pair.request_id;
  line["path"] = pair.path;
  line["experiment"] = pair.exp().name;
  line["control"] = pair.exp().split.control;
  line["canary"] = pair.exp().split.canary;
  line["control_model"] = pair.control_model;
  line["shadow_model"] = pair.shadow_model;
  line["stream"] = pair.stream;
  comparison_json(c, pair.control, pair.shadow, line);
  if (access_log_) access_log_->write_line(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));

  std::shared_ptr<spdlog::logger> bodies;
  {
    std::lock_guard lock(mu_);
    Totals& t = totals_;
    ++t.pairs;
    ++t.results[r];
    if (c.status_equal) ++t.status_equal;
    if (c.finish_reason_equal) {
      ++t.both_succeeded_compared;
      if (*c.finish_reason_equal) ++t.finish_reason_equal;
      if (c.tool_names_equal.value_or(false)) ++t.tool_names_equal;
    }
    if (pair.shadow.status != 0) {
      ++t.shadow_answered;
      if (c.shadow_json_valid) ++t.shadow_json_valid;
      if (c.shadow_tool_arguments_valid) ++t.shadow_tool_arguments_valid;
    }
    if (c.length_ratio) {
      t.length_ratio_sum += *c.length_ratio;
      ++t.length_ratios;
    }
    t.latency_delta_sum += c.latency_delta_seconds;
    latency_deltas_.push_back(c.latency_delta_seconds);
    if (latency_deltas_.size() > kRecent) latency_deltas_.pop_front();
    if (c.ttfb_delta_seconds) {
      t.ttfb_delta_sum += *c.ttfb_delta_seconds;
      ++t.ttfb_deltas;
      ttfb_deltas_.push_back(*c.ttfb_delta_seconds);
      if (ttfb_deltas_.size() > kRecent) ttfb_deltas_.pop_front();
    }
    const upstream::Usage cu = pair.control.usage.value_or(upstream::Usage{});
    const upstream::Usage su = pair.shadow.usage.value_or(upstream::Usage{});
    t.tokens[0][0] += cu.prompt;
    t.tokens[0][1] += cu.completion;
    t.tokens[1][0] += su.prompt;
    t.tokens[1][1] += su.completion;
    t.cost[0] += c.control_cost_usd;
    t.cost[1] += c.shadow_cost_usd;
    if (pair.log_bodies) bodies = bodies_;
  }
  if (bodies) {
    nlohmann::json b;
    b["time"] = line["time"];
    b["request_id"] = pair.request_id;
    b["path"] = pair.path;
    b["control_model"] = pair.control_model;
    b["shadow_model"] = pair.shadow_model;
    b["request"] = as_json_or_text(pair.request_body);
    b["control"] = {{"status", pair.control.status},
                    {"answer", pair.stream ? nlohmann::json(pair.control_text) : as_json_or_text(pair.control_text)}};
    b["shadow"] = {{"status", pair.shadow.status},
                   {"answer", pair.stream ? nlohmann::json(pair.shadow_text) : as_json_or_text(pair.shadow_text)}};
    b["comparison"] = line;
    bodies->info(b.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
}

nlohmann::json Shadow::report(const config::ShadowConfig& cfg) const {
  nlohmann::json j;
  j["enabled"] = cfg.enabled;
  j["share_percent"] = cfg.percent;
  j["max_per_second"] = cfg.max_per_second;
  j["max_in_flight"] = cfg.max_in_flight;
  j["log_bodies"] = cfg.log_bodies;
  j["in_flight"] = in_flight();
  std::lock_guard lock(mu_);
  const Totals& t = totals_;
  j["pairs"] = t.pairs;
  for (int i = 0; i < 3; ++i) j["skipped"][std::string(kDropNames[i])] = t.dropped[i];
  j["control_incomplete"] = t.dropped[3];
  for (std::size_t i = 0; i < 4; ++i) j["results"][std::string(metrics::Metrics::kShadowResults[i])] = t.results[i];
  j["match_rates"] = {{"status", rate(t.status_equal, t.pairs)},
                      {"finish_reason", rate(t.finish_reason_equal, t.both_succeeded_compared)},
                      {"tool_names", rate(t.tool_names_equal, t.both_succeeded_compared)},
                      {"shadow_json_valid", rate(t.shadow_json_valid, t.shadow_answered)},
                      {"tool_arguments_valid", rate(t.shadow_tool_arguments_valid, t.shadow_answered)}};
  auto deltas = [](const std::deque<double>& recent, double sum, std::uint64_t n) {
    if (n == 0 || recent.empty()) return nlohmann::json{{"mean", nullptr}, {"p50", nullptr}, {"p99", nullptr}};
    return nlohmann::json{
        {"mean", sum / static_cast<double>(n)}, {"p50", quantile(recent, 0.5)}, {"p99", quantile(recent, 0.99)}};
  };
  j["latency_delta_seconds"] = deltas(latency_deltas_, t.latency_delta_sum, t.pairs);
  j["ttfb_delta_seconds"] = deltas(ttfb_deltas_, t.ttfb_delta_sum, t.ttfb_deltas);
  j["length_ratio_mean"] = t.length_ratios ? nlohmann::json(t.length_ratio_sum / static_cast<double>(t.length_ratios))
                                           : nlohmann::json(nullptr);
  j["tokens"] = {{"control", {{"prompt", t.tokens[0][0]}, {"completion", t.tokens[0][1]}}},
                 {"canary", {{"prompt", t.tokens[1][0]}, {"completion", t.tokens[1][1]}}}};
  j["cost_usd"] = {{"control", t.cost[0]}, {"canary", t.cost[1]}, {"delta", t.cost[1] - t.cost[0]}};
  j["cost_delta_percent"] =
      t.cost[0] > 0 ? nlohmann::json(100.0 * (t.cost[1] - t.cost[0]) / t.cost[0]) : nlohmann::json(nullptr);
  return j;
}

}  // namespace canaryd::shadow
