#include "server/endpoints.hpp"

#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>

#include "admin/api.hpp"
#include "admin/ui.hpp"
#include "http/headers.hpp"
#include "metrics/metrics.hpp"
#include "rollout/controller.hpp"
#include "store/store.hpp"
#include "store/stores.hpp"

namespace canaryd::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using proxy::Request;

namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);

net::awaitable<bool> respond(Request& ctx, http::status status, std::string_view content_type, std::string body) {
  http::response<http::string_body> res{status, ctx.req.version()};
  res.set(http::field::content_type, content_type);
  res.set("X-Request-ID", ctx.request_id);
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.keep_alive(ctx.keep_alive);
  res.prepare_payload();
  ctx.client.expires_after(ctx.rt->config->server.idle_timeout);
  auto [ec, n] = co_await http::async_write(ctx.client, res, kTuple);
  co_return !ec && ctx.keep_alive;
}

net::awaitable<bool> respond_json(Request& ctx, http::status status, const nlohmann::json& j) {
  co_return co_await respond(ctx, status, "application/json",
                             j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

nlohmann::json health(App& app, Request& ctx) {
  const auto& cfg = *ctx.rt->config;
  nlohmann::json j;
  bool draining = app.draining.load();
  j["status"] = draining ? "draining" : "ok";
  // split, rollout and arms: the experiment "default" (the top-level split),
  // else the first; "experiments": each one's split and rollout (issue 17).
  std::size_t main_index = 0;
  if (int d = cfg.experiment_index(config::kDefaultExperiment); d >= 0) main_index = static_cast<std::size_t>(d);
  for (std::size_t i = 0; i < cfg.experiments.size(); ++i) {
    const config::ExperimentConfig& x = cfg.experiments[i];
    const config::SplitConfig& sp = x.split;
    nlohmann::json split = {{"control", sp.control},
                            {"canary", sp.canary},
                            {"salt_set", !sp.salt.empty()},
                            {"sticky_key", sp.sticky_key},
                            {"pin_ttl_seconds", std::chrono::duration<double>(sp.pin_ttl).count()},
                            {"override_header", sp.override_header}};
    nlohmann::json e = {{"name", x.name}, {"split", split}};
    nlohmann::json arms;
    if (i < app.experiments.size() && app.experiments[i].rollout) {
      nlohmann::json st = app.experiments[i].rollout->status();
      e["rollout"] = {
          {"state", st.value("state", "")}, {"step", st.value("step", 0)}, {"weight", st.value("weight", 0.0)}};
      if (st.contains("arms")) arms = st["arms"];
    }
    if (i == main_index) {
      j["split"] = split;
      if (e.contains("rollout")) j["rollout"] = e["rollout"];
      if (arms.is_object()) {
        for (auto& [arm, a] : arms.items()) {
          j["error_rates"][arm] = a.value("error_rate", 0.0);
          j["arms"][arm] = {{"requests", a.value("requests", 0)}, {"error_rate", a.value("error_rate", 0.0)}};
        }
      }
    }
    j["experiments"].push_back(std::move(e));
  }
  j["default_upstream"] = cfg.unmatched_upstream().name;
  if (ctx.thread.store) {
    // Every I/O thread's store, not only the one serving this request: each
    // thread has its own Redis connection.
    bool ok = app.stores ? app.stores->healthy() : ctx.thread.store->healthy();
    j["store"] = {{"kind", std::string(ctx.thread.store->name())}, {"status", ok ? "ok" : "degraded"}};
    if (!ok && !draining) j["status"] = "degraded";
  }
  j["connections"] = app.connections.load();
  j["idle_connections"] = app.parked_connections.load();
  j["inflight"] = app.inflight.load();
  return j;
}

nlohmann::json ready_json(bool ready, bool draining) { return {{"ready", ready}, {"draining", draining}}; }

// The status page's CSP lets nothing run but its own inline script and style.
net::awaitable<bool> status_page(Request& ctx) {
  http::response<http::string_body> page{http::status::ok, ctx.req.version()};
  page.set(http::field::content_type, "text/html; charset=utf-8");
  page.set("X-Request-ID", ctx.request_id);
  page.set(http::field::cache_control, "no-store");
  page.set("Content-Security-Policy", admin::status_page_csp());
  page.set("X-Frame-Options", "DENY");
  page.set("X-Content-Type-Options", "nosniff");
  page.set("Referrer-Policy", "no-referrer");
  page.body() = std::string(admin::status_page_html());
  page.keep_alive(ctx.keep_alive);
  page.prepare_payload();
  ctx.client.expires_after(ctx.rt->config->server.idle_timeout);
  auto [ec, n] = co_await http::async_write(ctx.client, page, kTuple);
  co_return !ec && ctx.keep_alive;
}

}  // namespace

net::awaitable<bool> handle_api(Request& ctx) {
  const auto& sc = ctx.rt->config->server;
  if (!sc.client_keys_value.empty() &&
      !wire::client_key_ok(ctx.req[http::field::authorization], sc.client_keys_value)) {
    co_return co_await proxy::write_error(
        ctx, ErrorKind::unauthorized,
        "Incorrect API key provided. canaryd expects one of its client keys as a Bearer token.");
  }
  co_return co_await proxy::proxy(ctx, rollout::RolloutController::judged_route(ctx.path)
                                           ? proxy::RouteKind::split
                                           : proxy::RouteKind::control_only);
}

net::awaitable<bool> handle_own(Worker& worker, Request& ctx) {
  App& app = worker.app();
  const std::string& path = ctx.path;
  const bool get = ctx.req.method() == http::verb::get || ctx.req.method() == http::verb::head;
  if (path == "/health" || path == "/ready" || path == "/metrics") {
    if (!get) co_return co_await proxy::write_error(ctx, ErrorKind::method_not_allowed, "use GET on " + path);
    if (path == "/health") co_return co_await respond_json(ctx, http::status::ok, health(app, ctx));
    if (path == "/ready") {
      bool ready = app.ready.load() && !app.draining.load();
      co_return co_await respond_json(ctx, ready ? http::status::ok : http::status::service_unavailable,
                                      ready_json(ready, app.draining.load()));
    }
    std::string text = app.metrics ? app.metrics->expose() : std::string();
    co_return co_await respond(ctx, http::status::ok, "text/plain; version=0.0.4; charset=utf-8", std::move(text));
  }
  if (path.rfind("/admin/", 0) == 0 || path == "/admin") {
    const admin::Services services{app.experiments, app.shadow};
    admin::Answer answer =
        admin::handle(services, *ctx.rt->config,
                      {ctx.req.method_string(), path, ctx.req.body(), ctx.req[http::field::authorization]});
    if (answer.error) co_return co_await proxy::write_error(ctx, answer.error.kind, answer.error.message);
    if (answer.status_page) co_return co_await status_page(ctx);
    co_return co_await respond_json(ctx, http::status::ok, answer.body);
  }
  co_return co_await proxy::write_error(ctx, ErrorKind::not_found,
                                        "Unknown request URL: " + std::string(ctx.req.method_string()) + " " + path +
                                            ". canaryd serves /v1/*, /health, /ready, /metrics and /admin/*.");
}

}  // namespace canaryd::server
