// Phase 5: what a request leaves behind. One function per record: each
// upstream attempt into the metrics, the arm's analysis window and the
// report; the request into the access log; control's answer into its shadow
// pair. Also canaryd's own answer when the attempt failed before any byte of
// an answer reached the client.
#include "admin/report.hpp"
#include "common/access_log.hpp"
#include "common/log.hpp"
#include "metrics/metrics.hpp"
#include "proxy/active.hpp"
#include "rollout/controller.hpp"
#include "rollout/fallback.hpp"
#include "rollout/window.hpp"
#include "shadow/shadow.hpp"

namespace canaryd::proxy {
namespace {

static_assert(static_cast<int>(metrics::Metrics::Status::success) == static_cast<int>(MetricStatus::success) &&
              static_cast<int>(metrics::Metrics::Status::error) == static_cast<int>(MetricStatus::error) &&
              static_cast<int>(metrics::Metrics::Status::timeout) == static_cast<int>(MetricStatus::timeout));

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

// From receiving the request to sending the answering attempt, minus the
// upstream time of earlier (failed, fallen back) attempts, which is the
// provider's, not canaryd's.
Clock::duration ActiveRequest::overhead_before() const { return (ex_->sent - r_.received) - earlier_upstream_; }

// `o` is null for an attempt that produced no answer to relay (it failed, or fell back).
void ActiveRequest::account_attempt(const Error& error, int status, bool client_gone, const Outcome* o) {
  const upstream::Exchange& ex = *ex_;
  if (error && !client_gone) {
    // The access log says which kind; this line says why (the TLS error, the address refused).
    log::at(error_info(error.kind).log_level, "upstream attempt failed",
            {{"request_id", r_.request_id},
             {"arm", arm_name(arm_)},
             {"provider", up_->name},
             {"error", error_name(error.kind)},
             {"detail", error.message}});
  }
  const auto end = o ? o->done : Clock::now();
  const std::optional<upstream::Usage> usage = o ? o->usage : std::nullopt;
  if (auto* m = r_.services.metrics) {
    const int p = m->provider_index(up_->name);
    const int mi = m->model_index(sent_model_);
    if (p >= 0) {
      m->observe_request(p, mi, static_cast<metrics::Metrics::Status>(rollout::metric_status(error, status)),
                         seconds(end - ex.sent));
      if (ex.status) m->observe_ttfb(p, mi, seconds(ex.first_byte - ex.sent));
      if (usage) m->add_tokens(p, mi, usage->prompt, usage->completion);
    }
    // canaryd's own time: before the upstream call, and writing out after the
    // upstream finished (observed by the driver when that write is still pending).
    if (o && o->relayed && !o->write_pending) m->observe_overhead(seconds(overhead_before() + o->client_write));
  }
  if (route_ != RouteKind::split) return;  // control-only routes: metrics only
  if (auto* ro = ro_) {
    // A client that left is not the upstream's fault.
    const bool counts = !client_gone && rollout::analysis_error(error, status);
    rollout::Observation obs;
    obs.error = counts;
    obs.duration = std::chrono::duration_cast<std::chrono::nanoseconds>(end - ex.sent);
    if (ex.status) obs.ttfb = std::chrono::duration_cast<std::chrono::nanoseconds>(ex.first_byte - ex.sent);
    // Quality only from an answer relayed in full (a client that left saw none).
    if (o && !counts && !client_gone) obs.quality = o->quality;
    ro->record(arm_, obs, r_.rollout_epoch);
    if (auto* m = r_.services.metrics; m && obs.quality.eligible)
      m->add_quality(m->provider_index(up_->name), obs.quality);
  }
  if (auto* report = report_) {
    const std::uint64_t prompt = usage ? usage->prompt : 0;
    const std::uint64_t completion = usage ? usage->completion : 0;
    std::optional<std::chrono::nanoseconds> ttfb;
    if (ex.status) ttfb = std::chrono::duration_cast<std::chrono::nanoseconds>(ex.first_byte - ex.sent);
    report->record(arm_, prompt, completion, config::cost_usd(cfg_.pricing, sent_model_, prompt, completion), ttfb);
  }
}

void ActiveRequest::log_access(int status, std::string_view error) {
  if (!r_.services.access_log || !cfg_.server.access_log) return;
  const Outcome* o = outcome_ ? &*outcome_ : nullptr;
  const auto end = o ? o->done : Clock::now();
  log::AccessRecord a;
  a.request_id = r_.request_id;
  a.method = r_.req.method_string();
  a.path = r_.path;
  a.arm = arm_name(arm_);
  a.experiment = experiment_name();
  a.provider = up_ ? std::string_view(up_->name) : std::string_view();
  a.model = sent_model_;
  a.status = status;
  a.latency_ms = millis(end - r_.received);
  if (ex_ && ex_->status) a.ttfb_ms = millis(ex_->first_byte - r_.received);
  if (o && o->relayed) a.overhead_ms = millis(overhead_before() + o->client_write);
  if (o && o->usage) {
    a.prompt_tokens = o->usage->prompt;
    a.completion_tokens = o->usage->completion;
    a.cost_usd = config::cost_usd(cfg_.pricing, sent_model_, a.prompt_tokens, a.completion_tokens);
  }
  a.fallback = fallback_;
  a.error = error;
  a.sticky_source = decision_.sticky_source;
  a.stream = in_.stream;
  a.pinned = decision_.pinned;
  r_.thread.access(*r_.services.access_log, a);
}

// Control's side of a mirrored request: its answer, or canaryd's own error.
void ActiveRequest::report_to_shadow(const Error& error, int status) {
  if (!pair_) return;
  shadow::AnswerSummary& c = pair_->control;
  const upstream::Exchange& ex = *ex_;
  if (const Outcome* o = outcome_ ? &*outcome_ : nullptr) {
    c.status = status;
    c.failed = static_cast<bool>(error) || status / 100 != 2;
    if (error) c.error = std::string(error_name(error.kind));
    c.latency_seconds = seconds(o->done - ex.sent);
    if (ex.status) c.ttfb_seconds = seconds(ex.first_byte - ex.sent);
    c.usage = o->usage;
  } else {
    c.status = http_status(error.kind);
    c.failed = true;
    c.error = std::string(error_name(error.kind));
    c.latency_seconds = seconds(Clock::now() - ex.sent);
  }
  pair_->control_done();
}

net::awaitable<bool> ActiveRequest::answer_error() {
  const Error& e = ex_->error;
  account_attempt(e, ex_->status, false, nullptr);
  http::fields extra;
  add_arm_headers(extra);
  leave_inflight();
  const bool written =
      co_await send_error(r_.client, 11, r_.keep_alive, e.kind, e.message, extra, cfg_.server.idle_timeout);
  log_access(http_status(e.kind), error_name(e.kind));
  report_to_shadow(e, 0);
  co_return written&& r_.keep_alive;
}

// Leaves the in-flight count with the accounting, before the client can see
// the end of its answer (the metrics are settled by then); on every other
// path when the request ends.
void ActiveRequest::leave_inflight() {
  if (!inflight_) return;
  inflight_ = false;
  r_.services.inflight.fetch_sub(1, std::memory_order_relaxed);
  if (r_.services.metrics) r_.services.metrics->inflight_add(-1);
}

}  // namespace canaryd::proxy
