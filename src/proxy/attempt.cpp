// Phase 3: the upstream call. The arm's upstream gets the request with the
// model renamed for it; a canary attempt that fails before any byte reached
// the client, for a reason fallback.on lists, goes once to control within the
// fallback budget (rollout/fallback.hpp says which failures may).
#include "metrics/metrics.hpp"
#include "proxy/active.hpp"
#include "rollout/controller.hpp"
#include "rollout/fallback.hpp"

namespace canaryd::proxy {

const config::UpstreamConfig& ActiveRequest::control_upstream() const {
  return exp_rt_ ? *exp_rt_->control : *r_.rt->unmatched;
}

std::string_view ActiveRequest::prepare_attempt() {
  up_ = arm_ == Arm::canary && exp_rt_ ? exp_rt_->canary : &control_upstream();
  // The model the provider sees: on fallback the fallback rename first, then the arm's.
  sent_model_ = in_.model;
  if (!fallback_.empty() && exp_) {
    const auto& models = exp_->fallback.models;
    if (auto f = models.find(sent_model_); f != models.end()) sent_model_ = f->second;
  }
  if (auto m = up_->models.find(sent_model_); m != up_->models.end()) sent_model_ = m->second;
  std::string_view out = body_;
  if (in_.model_span && sent_model_ != in_.model) {
    renamed_ = renamed_body(body_, *in_.model_span, sent_model_);
    out = renamed_;
  }
  head_ = upstream::upstream_head(r_.req, upstream::upstream_target(*up_, r_.path, r_.query), out.size(),
                                  {up_, r_.request_id, r_.peer_ip});
  return out;
}

net::awaitable<void> ActiveRequest::attempt() {
  arm_ = decision_.arm;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string_view out_body = prepare_attempt();
    ex_.emplace(co_await upstream::start_exchange(r_.thread.pool(*r_.rt, *up_, r_.services.threads), *up_, head_,
                                                  out_body, r_.req.method() == http::verb::head, &current_,
                                                  watch_->gone_flag()));
    if (watch_->gone()) co_return;  // the client left: no fallback, no relay
    const std::string_view reason = rollout::fallback_reason(ex_->error, ex_->status);
    if (exp_ && ro_ && rollout::may_fall_back(exp_->fallback, reason, arm_, decision_.forced, attempt) &&
        ro_->take_fallback()) {
      // Account for the canary's attempt, drop its answer, ask control.
      earlier_upstream_ += Clock::now() - ex_->sent;
      account_attempt(ex_->error, ex_->status, false, nullptr);
      ex_->release(false);
      current_ = nullptr;
      if (r_.services.metrics) {
        r_.services.metrics->add_fallback(exp_index_, up_->name, control_upstream().name, reason);
      }
      fallback_ = std::string(reason);
      arm_ = Arm::control;
      continue;
    }
    break;
  }
  if (!ex_->error) co_await relay();
  current_ = nullptr;
}

}  // namespace canaryd::proxy
