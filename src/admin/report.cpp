#include "admin/report.hpp"

#include <algorithm>
#include <cmath>

#include "rollout/window.hpp"

namespace canaryd::admin {
namespace {

// Cost is accumulated as integer nano-dollars: atomic integer adds are exact
// and lock-free, and 2^64 nano-USD is ~1.8e10 USD.
constexpr double kNanoPerUsd = 1e9;

std::uint64_t to_nano(double usd) {
  if (!(usd > 0)) return 0;
  return static_cast<std::uint64_t>(std::llround(usd * kNanoPerUsd));
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

nlohmann::json seconds_or_null(std::uint64_t samples, double s) {
  return samples ? nlohmann::json(s) : nlohmann::json(nullptr);
}

}  // namespace

struct Report::ArmAccount {
  explicit ArmAccount(std::chrono::nanoseconds window) : ttfb(window), requests(window), cost_nano(window) {}

  std::atomic<std::uint64_t> requests_total{0};
  std::atomic<std::uint64_t> prompt_tokens{0};
  std::atomic<std::uint64_t> completion_tokens{0};
  std::atomic<std::uint64_t> cost_nano_total{0};
  rollout::ArmWindow ttfb;           // TTFB samples (error flag unused)
  rollout::CounterWindow requests;   // attempts in the window
  rollout::CounterWindow cost_nano;  // nano-USD in the window
};

Report::Report(const Clock& clock, std::chrono::nanoseconds window)
    : clock_(clock), window_(window), started_(clock.now()) {
  for (auto& a : arms_) a = std::make_unique<ArmAccount>(window);
}

Report::~Report() = default;

void Report::record(Arm arm, std::uint64_t prompt_tokens, std::uint64_t completion_tokens, double cost,
                    std::optional<std::chrono::nanoseconds> ttfb) noexcept {
  ArmAccount& a = *arms_[static_cast<std::size_t>(arm)];
  const auto now = clock_.now();
  const std::uint64_t nano = to_nano(cost);
  a.requests_total.fetch_add(1, std::memory_order_relaxed);
  a.requests.add(now, 1);
  if (prompt_tokens) a.prompt_tokens.fetch_add(prompt_tokens, std::memory_order_relaxed);
  if (completion_tokens) a.completion_tokens.fetch_add(completion_tokens, std::memory_order_relaxed);
  if (nano) {
    a.cost_nano_total.fetch_add(nano, std::memory_order_relaxed);
    a.cost_nano.add(now, nano);
  }
  if (ttfb) a.ttfb.record(now, false, std::max(*ttfb, std::chrono::nanoseconds(0)));
}

// The report, field by field as docs/observability.md lists them: long
// because it is a flat description of a JSON document.
nlohmann::json Report::build(const nlohmann::json& rollout_arms) const {
  const auto now = clock_.now();
  // The span the window's counts come from: the whole window once canaryd has
  // run that long, else the time since start (never 0, so rates stay finite).
  const double covered =
      std::max(1e-3, seconds(std::min(window_, std::chrono::duration_cast<std::chrono::nanoseconds>(now - started_))));
  nlohmann::json out;
  out["window_seconds"] = seconds(window_);
  out["covered_seconds"] = covered;

  struct Figures {
    double rate = 0;
    std::optional<double> cost_per_request;
  };
  std::array<Figures, 2> fig;
  double total_rate = 0;
  double total_projected = 0;

  for (Arm arm : {Arm::control, Arm::canary}) {
    const ArmAccount& a = *arms_[static_cast<std::size_t>(arm)];
    const std::string name(arm_name(arm));
    nlohmann::json j = nlohmann::json::object();
    // Requests, errors and latency over the window: the rollout's own view.
    nlohmann::json ro =
        rollout_arms.is_object() && rollout_arms.contains(name) ? rollout_arms[name] : nlohmann::json::object();
    j["requests"] = ro.value("requests", std::uint64_t{0});
    j["errors"] = ro.value("errors", std::uint64_t{0});
    j["error_rate"] = ro.value("error_rate", 0.0);
    j["p50_seconds"] = ro.contains("p50_seconds") ? ro["p50_seconds"] : nlohmann::json(nullptr);
    j["p99_seconds"] = ro.contains("p99_seconds") ? ro["p99_seconds"] : nlohmann::json(nullptr);

    rollout::Snapshot ttfb = a.ttfb.snapshot(now);
    j["ttfb_p50_seconds"] = seconds_or_null(ttfb.requests, ttfb.p50_seconds());
    j["ttfb_p99_seconds"] = seconds_or_null(ttfb.requests, ttfb.p99_seconds());

    const std::uint64_t total = a.requests_total.load(std::memory_order_relaxed);
    const double cost_total = static_cast<double>(a.cost_nano_total.load(std::memory_order_relaxed)) / kNanoPerUsd;
    j["requests_total"] = total;
    j["prompt_tokens"] = a.prompt_tokens.load(std::memory_order_relaxed);
    j["completion_tokens"] = a.completion_tokens.load(std::memory_order_relaxed);
    j["cost_usd"] = cost_total;

    const std::uint64_t win_requests = a.requests.count(now);
    const double win_cost = static_cast<double>(a.cost_nano.count(now)) / kNanoPerUsd;
    Figures& f = fig[static_cast<std::size_t>(arm)];
    f.rate = static_cast<double>(win_requests) / covered;
    if (win_requests) {
      f.cost_per_request = win_cost / static_cast<double>(win_requests);
    } else if (total) {
      f.cost_per_request = cost_total / static_cast<double>(total);
    }
    const double per_request = f.cost_per_request.value_or(0.0);
    const double projected = per_request * f.rate * kSecondsPerMonth;
    j["window_requests"] = win_requests;
    j["window_cost_usd"] = win_cost;
    j["requests_per_second"] = f.rate;
    j["cost_per_request_usd"] = per_request;
    j["cost_per_1k_requests_usd"] = per_request * 1000;
    j["projected_monthly_requests"] = f.rate * kSecondsPerMonth;
    j["projected_monthly_cost_usd"] = projected;
    out["arms"][name] = std::move(j);
    total_rate += f.rate;
    total_projected += projected;
  }

  out["requests_per_second"] = total_rate;
  out["projected_monthly_cost_usd"] = total_projected;
  const auto& control = fig[static_cast<std::size_t>(Arm::control)];
  const auto& canary = fig[static_cast<std::size_t>(Arm::canary)];
  if (control.cost_per_request && canary.cost_per_request) {
    const double monthly_requests = total_rate * kSecondsPerMonth;
    const double all_control = *control.cost_per_request * monthly_requests;
    const double all_canary = *canary.cost_per_request * monthly_requests;
    out["projected_monthly_cost_all_control_usd"] = all_control;
    out["projected_monthly_cost_all_canary_usd"] = all_canary;
    out["projected_monthly_saving_usd"] = all_control - all_canary;
    out["saving_percent"] =
        all_control > 0 ? nlohmann::json((all_control - all_canary) / all_control * 100) : nlohmann::json(nullptr);
  } else {
    // Without a request on each arm there is nothing to compare yet.
    out["projected_monthly_saving_usd"] = nullptr;
    out["saving_percent"] = nullptr;
  }
  return out;
}

}  // namespace canaryd::admin
