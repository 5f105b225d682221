#include "server/endpoints.hpp"

#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>

#include "metrics/metrics.hpp"
#include "http/headers.hpp"
#include "admin/history.hpp"
#include "admin/report.hpp"
#include "rollout/controller.hpp"
#include "shadow/shadow.hpp"
#include "admin/ui.hpp"
#include "store/store.hpp"
#include "store/stores.hpp"

namespace canaryd::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using proxy::Request;

namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);

net::awaitable<bool> respond(Request& ctx, http::status status, std::string_view content_type,
                             std::string body) {
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
  j["split"] = {{"control", cfg.split.control},
                {"canary", cfg.split.canary},
                {"salt_set", !cfg.split.salt.empty()},
                {"sticky_key", cfg.split.sticky_key},
                {"pin_ttl_seconds", std::chrono::duration<double>(cfg.split.pin_ttl).count()},
                {"override_header", cfg.split.override_header}};
  if (app.rollout) {
    nlohmann::json st = app.rollout->status();
    j["rollout"] = {{"state", st.value("state", "")}, {"step", st.value("step", 0)}, {"weight", st.value("weight", 0.0)}};
    if (st.contains("arms")) {
      for (auto& [arm, a] : st["arms"].items()) {
        j["error_rates"][arm] = a.value("error_rate", 0.0);
        j["arms"][arm] = {{"requests", a.value("requests", 0)}, {"error_rate", a.value("error_rate", 0.0)}};
      }
    }
  }
  if (ctx.thread.store) {
    // Every I/O thread's store, not only the one serving this request: each
    // thread has its own Redis connection.
    bool ok = app.stores ? app.stores->healthy() : ctx.thread.store->healthy();
    j["store"] = {{"kind", std::string(ctx.thread.store->name())}, {"status", ok ? "ok" : "degraded"}};
    if (!ok && !draining) j["status"] = "degraded";
  }
  j["connections"] = app.connections.load();
  j["inflight"] = app.inflight.load();
  return j;
}

// The money report plus the shadow comparison (GET /admin/report, ctl report).
nlohmann::json full_report(App& app, Request& ctx) {
  nlohmann::json arms = app.rollout ? app.rollout->status().value("arms", nlohmann::json()) : nlohmann::json();
  nlohmann::json j = app.report->build(arms);
  if (app.shadow) j["shadow"] = app.shadow->report(ctx.rt->config->shadow);
  return j;
}

nlohmann::json ready_json(bool ready, bool draining) { return {{"ready", ready}, {"draining", draining}}; }

// Outside the coroutines: g++ 12 miscompiles array temporaries in coroutine frames.
bool admin_token_ok(std::string_view auth, const std::string& token) {
  return wire::client_key_ok(auth, std::array<std::string_view, 1>{token});
}

}  // namespace

net::awaitable<bool> handle_api(Request& ctx) {
  const auto& sc = ctx.rt->config->server;
  if (!sc.client_keys_value.empty() &&
      !wire::client_key_ok(ctx.req[http::field::authorization], sc.client_keys_value)) {
    co_return co_await proxy::write_error(ctx, ErrorKind::unauthorized,
                                   "Incorrect API key provided. canaryd expects one of its client keys as a Bearer token.");
  }
  co_return co_await proxy::proxy(ctx, rollout::RolloutController::judged_route(ctx.path) ? proxy::RouteKind::split : proxy::RouteKind::control_only);
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
    const auto& sc = ctx.rt->config->server;
    if (sc.admin_token_value.empty()) {
      co_return co_await proxy::write_error(ctx, ErrorKind::forbidden,
                                     "the admin API is off: set server.admin_token_env and that variable");
    }
    // The status page holds no data, only the token prompt: it loads without the token, and each of its
    // fetches sends it. Its CSP lets nothing run but its own inline script and style.
    if (path == "/admin/ui") {
      if (!get) co_return co_await proxy::write_error(ctx, ErrorKind::method_not_allowed, "use GET on " + path);
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
    if (!admin_token_ok(ctx.req[http::field::authorization], sc.admin_token_value)) {
      co_return co_await proxy::write_error(ctx, ErrorKind::unauthorized, "a valid admin token is required");
    }
    if (path == "/admin/history") {
      if (!get) co_return co_await proxy::write_error(ctx, ErrorKind::method_not_allowed, "use GET on " + path);
      if (!app.history) co_return co_await proxy::write_error(ctx, ErrorKind::not_found, "no history");
      co_return co_await respond_json(ctx, http::status::ok, app.history->to_json());
    }
    if (path == "/admin/report") {
      if (!get) co_return co_await proxy::write_error(ctx, ErrorKind::method_not_allowed, "use GET on " + path);
      if (!app.report) co_return co_await proxy::write_error(ctx, ErrorKind::not_found, "no report");
      co_return co_await respond_json(ctx, http::status::ok, full_report(app, ctx));
    }
    if (!app.rollout) co_return co_await proxy::write_error(ctx, ErrorKind::not_found, "no rollout");
    auto result = app.rollout->admin(ctx.req.method_string(), path, ctx.req.body());
    if (result.not_found) co_return co_await proxy::write_error(ctx, ErrorKind::not_found, "unknown admin route " + path);
    if (result.method_not_allowed) {
      co_return co_await proxy::write_error(ctx, ErrorKind::method_not_allowed, "wrong method for " + path);
    }
    if (!result.error.empty()) co_return co_await proxy::write_error(ctx, ErrorKind::bad_request, result.error);
    co_return co_await respond_json(ctx, http::status::ok, result.body);
  }
  co_return co_await proxy::write_error(ctx, ErrorKind::not_found, "Unknown request URL: " + std::string(ctx.req.method_string()) +
                                                                " " + path + ". canaryd serves /v1/*, /health, /ready, /metrics and /admin/*.");
}

}  // namespace canaryd::server
