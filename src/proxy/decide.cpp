// Phase 2: which experiment decides the request (issue 17: the first whose
// match takes it, else the catch-all "default", else none: the default
// upstream), then which arm serves it (SPEC §4), in split::decide's order:
// the override header, then a rollback, then the hash upgraded by a canary
// pin. The pin lookup between the last two is the only I/O. Then, for a
// request control serves, whether it is mirrored to the canary (shadow mode).
#include "admin/experiment.hpp"
#include "config/match.hpp"
#include "metrics/metrics.hpp"
#include "proxy/active.hpp"
#include "rollout/controller.hpp"
#include "shadow/shadow.hpp"
#include "split/split.hpp"
#include "store/store.hpp"

namespace canaryd::proxy {
namespace {

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

std::string_view source_name(const split::StickyKey& key) {
  if (key.random) return "random";
  switch (key.source) {
    case split::KeySource::Kind::header: return "header";
    case split::KeySource::Kind::body_user: return "body_user";
    case split::KeySource::Kind::client_ip: return "client_ip";
  }
  return "";
}

void apply(Decision& d, const split::Decision& sd) {
  d.arm = sd.arm;
  d.forced = sd.forced;
  d.pinned = sd.pinned;
}

}  // namespace

std::string renamed_body(std::string_view body, const json::Span& model, std::string_view to) {
  std::string out;
  out.reserve(body.size() + to.size());
  out.append(body.substr(0, model.begin));
  out += json::encode_string(to);
  out.append(body.substr(model.end));
  return out;
}

std::string_view ActiveRequest::experiment_name() const {
  return exp_ ? std::string_view(exp_->name) : config::kNoExperiment;
}

void ActiveRequest::select_experiment() {
  // Routes that are not split have no canary counterpart: no experiment.
  if (route_ != RouteKind::split) return;
  HeaderView headers(r_.req);
  const config::MatchInput in{in_.model, r_.path, [&headers](std::string_view name) { return headers.get(name); }};
  const std::optional<std::size_t> i = config::select(cfg_, in);
  if (!i || *i >= r_.rt->experiments.size()) return;
  exp_index_ = *i;
  exp_ = &cfg_.experiments[*i];
  exp_rt_ = &r_.rt->experiments[*i];
  if (*i < r_.services.experiments.size()) {
    ro_ = r_.services.experiments[*i].rollout;
    report_ = r_.services.experiments[*i].report;
  }
}

net::awaitable<void> ActiveRequest::decide() {
  select_experiment();
  rollout::RolloutController* ro = ro_;
  if (ro) r_.rollout_epoch = ro->epoch();
  if (!exp_) co_return;
  const config::SplitConfig& sc = exp_->split;
  HeaderView headers(r_.req);
  const std::uint32_t threshold = ro ? ro->threshold() : 0;
  const bool rolled_back = !ro || ro->rolled_back() || threshold == 0;
  if (auto early = split::decide_before_hash(split::parse_override(headers.get(sc.override_header)), rolled_back)) {
    apply(decision_, *early);
    co_return;
  }
  std::optional<std::string_view> body_user;
  if (in_.user) body_user = *in_.user;
  const split::Splitter& splitter = exp_rt_->splitter;
  split::StickyKey key = splitter.sticky_key(headers, body_user, r_.peer_ip);
  decision_.sticky_source = source_name(key);
  if (key.random && r_.services.metrics) r_.services.metrics->add_random_key();
  const split::KeyHash kh = splitter.key_hash(key.value);
  const Arm hash = split::hash_arm(kh.bucket, threshold);
  decision_.user_hash = kh.user;
  std::optional<Arm> pin;
  if (sc.pin_ttl.count() > 0 && !key.random && r_.thread.store && ro) {
    // Each experiment's pins live under its own namespace (and its own epoch).
    std::string pkey = store::pin_key(exp_rt_->pin_ns, ro->epoch(), key.value);
    // Only canary pins are stored (store.hpp): one store call either way.
    if (hash == Arm::canary) {
      (void)co_await r_.thread.store->pin_canary(std::move(pkey),
                                                 std::chrono::duration_cast<std::chrono::seconds>(sc.pin_ttl));
    } else {
      std::optional<bool> has = co_await r_.thread.store->has_canary_pin(std::move(pkey));
      if (has.value_or(false)) pin = Arm::canary;
    }
  }
  apply(decision_, split::decide_by_hash(hash, pin));
  // The split's assignment, whatever the request's outcome: the judge's
  // sample-ratio check counts users here, before any attempt.
  if (ro) ro->record_user(decision_.arm, decision_.user_hash, r_.rollout_epoch);
}

// A share of what control serves is mirrored to the canary, in the
// background, on this I/O thread; the client never waits for it.
void ActiveRequest::start_shadow() {
  shadow::Shadow* sh = r_.services.shadow;
  // Only a request an experiment decides has a canary to mirror it to.
  if (route_ != RouteKind::split || !exp_ || decision_.arm != Arm::control || !sh) return;
  pair_ = sh->admit(r_.rt->config, exp_index_, ro_ ? ro_->canary_off() : false);
  if (!pair_) return;
  shadow::ShadowPair& pair = *pair_;
  const config::UpstreamConfig& canary = *exp_rt_->canary;
  const config::UpstreamConfig& control = *exp_rt_->control;
  pair.request_id = r_.request_id;
  pair.path = r_.path;
  pair.stream = in_.stream;
  pair.control_model = in_.model;
  if (auto m = control.models.find(in_.model); m != control.models.end()) pair.control_model = m->second;
  pair.shadow_model = in_.model;
  if (auto m = canary.models.find(in_.model); m != canary.models.end()) pair.shadow_model = m->second;
  std::string shadow_body = in_.model_span && pair.shadow_model != in_.model
                                ? renamed_body(body_, *in_.model_span, pair.shadow_model)
                                : body_;
  if (pair.log_bodies) pair.request_body = body_;
  std::string head = upstream::upstream_head(r_.req, upstream::upstream_target(canary, r_.path, r_.query),
                                             shadow_body.size(), {&canary, r_.request_id, r_.peer_ip});
  sh->start(r_.client.get_executor(), pair_, r_.thread.pool(*r_.rt, canary, r_.services.threads), std::move(head),
            std::move(shadow_body));
}

}  // namespace canaryd::proxy
