#include "admin/history.hpp"

#include <algorithm>
#include <array>
#include <string>

namespace canaryd::admin {
namespace {

constexpr std::array<const char*, 2> kArms = {"control", "canary"};

const nlohmann::json& member(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

double number_or(const nlohmann::json& j, double fallback) { return j.is_number() ? j.get<double>() : fallback; }

// A cumulative counter's increase. A counter below its last value was reset
// (the process or the report restarted): it counted up from zero since, like
// Prometheus' rate() assumes, so never a negative rate.
double increase(double now, double before) { return now >= before ? now - before : now; }

}  // namespace

History::History(const Clock& clock, std::chrono::nanoseconds interval, std::chrono::nanoseconds span)
    : clock_(clock),
      interval_(interval.count() > 0 ? interval : kDefaultInterval),
      span_(span.count() > 0 ? span : kDefaultSpan),
      capacity_(std::max<std::size_t>(
          1, static_cast<std::size_t>((span_.count() + interval_.count() - 1) / interval_.count()))),
      last_time_(clock.now()) {}

void History::sample(const nlohmann::json& rollout_status, const nlohmann::json& report) {
  const auto now = clock_.now();
  const auto wall = clock_.wall();

  nlohmann::json s;
  s["unix_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
  s["time"] = rfc3339(wall);
  s["state"] = member(rollout_status, "state");
  s["step"] = member(rollout_status, "step");
  s["weight"] = member(rollout_status, "weight");

  std::lock_guard lock(mu_);
  const double elapsed = std::chrono::duration<double>(now - last_time_).count();
  s["elapsed_seconds"] = elapsed;
  const auto& report_arms = member(report, "arms");
  const auto& window_arms = member(rollout_status, "arms");
  nlohmann::json arms = nlohmann::json::object();
  for (std::size_t i = 0; i < kArms.size(); ++i) {
    const auto& r = member(report_arms, kArms[i]);
    const auto& w = member(window_arms, kArms[i]);
    nlohmann::json a;

    // Counters absent from the report: keep the baseline (no made-up delta).
    Counters current = last_[i];
    const bool have_counters = member(r, "requests_total").is_number();
    if (have_counters) current = {number_or(member(r, "requests_total"), 0), number_or(member(r, "cost_usd"), 0)};
    const double requests = increase(current.requests, last_[i].requests);
    const double cost = increase(current.cost, last_[i].cost);
    a["requests_per_second"] = have_counters && elapsed > 0 ? nlohmann::json(requests / elapsed) : nlohmann::json();
    a["cost_per_1k_requests_usd"] =
        have_counters && requests > 0 ? nlohmann::json(cost / requests * 1000) : nlohmann::json();
    last_[i] = current;

    const auto& window_requests = member(w, "requests");
    const bool judged = window_requests.is_number() && window_requests.get<double>() > 0;
    a["window_requests"] = window_requests.is_number() ? window_requests : nlohmann::json(0);
    a["error_rate"] = judged ? member(w, "error_rate") : nlohmann::json();
    a["p99_seconds"] = judged ? member(w, "p99_seconds") : nlohmann::json();
    arms[kArms[i]] = std::move(a);
  }
  s["arms"] = std::move(arms);
  last_time_ = now;

  samples_.push_back(std::move(s));
  while (samples_.size() > capacity_) samples_.pop_front();
}

nlohmann::json History::to_json() const {
  nlohmann::json out;
  out["interval_seconds"] = std::chrono::duration<double>(interval_).count();
  out["span_seconds"] = std::chrono::duration<double>(span_).count();
  out["capacity"] = capacity_;
  nlohmann::json samples = nlohmann::json::array();
  {
    std::lock_guard lock(mu_);
    for (const auto& s : samples_) samples.push_back(s);
  }
  out["samples"] = std::move(samples);
  return out;
}

}  // namespace canaryd::admin
