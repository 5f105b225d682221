// The driver of a proxied request: the phases of active.hpp in order.
#include <boost/beast/http/write.hpp>

#include "metrics/metrics.hpp"
#include "proxy/active.hpp"
#include "shadow/shadow.hpp"

namespace canaryd::proxy {

net::awaitable<bool> proxy(Request& r, RouteKind route) {
  ActiveRequest active(r, route);
  co_return co_await active.run();
}

ActiveRequest::ActiveRequest(Request& r, RouteKind route)
    : r_(r), cfg_(*r.rt->config), route_(route), body_(std::move(r.req.body())) {}

ActiveRequest::~ActiveRequest() {
  // A mirrored request that ends without an answer to compare (its client left).
  if (pair_) pair_->control_abandoned();
  leave_inflight();
}

net::awaitable<bool> ActiveRequest::run() {
  if (route_ == RouteKind::split) {
    if (Error e = inspect()) co_return co_await write_error(r_, e.kind, e.message);
  }
  co_await decide();
  inflight_ = true;
  r_.services.inflight.fetch_add(1, std::memory_order_relaxed);
  if (r_.services.metrics) r_.services.metrics->inflight_add(1);
  start_shadow();

  // While the upstream works the thread watches this client: if it leaves,
  // the upstream connection is closed at once so the provider stops generating.
  watch_.emplace(r_.thread.watches, r_.client.socket().native_handle(), &current_);
  co_await attempt();
  const bool gone = watch_->gone();

  if (!gone && outcome_ && outcome_->error && !outcome_->relayed) {
    // The upstream sent a head, then failed before its (buffered) body was
    // complete: nothing reached the client yet, so it gets a clean 502/504.
    ex_->error = outcome_->error;
    outcome_.reset();
  }
  if (!gone && ex_ && ex_->error && !outcome_) co_return co_await answer_error();
  if (!ex_ || !up_) co_return false;

  Outcome none;
  const Outcome& o = outcome_ ? *outcome_ : none;
  const bool client_gone = gone || o.client_gone;
  // The client left: not the upstream's fault; it counts as its status so far.
  account_attempt(client_gone ? ex_->error : o.error, ex_->status, client_gone, outcome_ ? &o : nullptr);
  if (outcome_ && o.write_pending && !gone) {
    // canaryd's own time: before the upstream call, and preparing the answer
    // after the upstream finished (the last write to the socket is the
    // kernel's); observed, like everything else, before the client sees the end.
    if (r_.services.metrics) {
      r_.services.metrics->observe_overhead(
          std::chrono::duration<double>(overhead_before() + (Clock::now() - o.done)).count());
    }
    leave_inflight();
    co_await finish_write();
  }
  log_access(o.status ? o.status : 499,
             client_gone ? std::string_view("client_gone") : (o.error ? error_name(o.error.kind) : std::string_view()));
  if (!client_gone && outcome_) report_to_shadow(o.error, o.status);
  co_return !gone && o.keep_alive;
}

}  // namespace canaryd::proxy
