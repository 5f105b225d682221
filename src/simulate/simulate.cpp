#include "simulate/simulate.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "canaryd/clock.hpp"
#include "rollout/judge.hpp"
#include "rollout/state_machine.hpp"
#include "rollout/window.hpp"
#include "split/split.hpp"

namespace canaryd::simulate {

namespace {

using std::chrono::nanoseconds;

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman & Vigna 2018): fast, and a UniformRandomBitGenerator
// for the standard distributions.
class Rng {
 public:
  using result_type = std::uint64_t;
  explicit Rng(std::uint64_t seed) {
    for (auto& w : s_) w = splitmix(seed);
  }
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return ~result_type{0}; }
  result_type operator()() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return uniform() < p; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<std::uint64_t, 4> s_{};
};

// The arms in force at `t` (from the start): the scenario's, with every change
// active at t applied in order.
void arms_at(const Scenario& s, Duration t, ArmModel& control, ArmModel& canary, double& rate) {
  control = s.control;
  canary = s.canary;
  rate = s.rate;
  for (const auto& c : s.changes) {
    if (t < c.at || (c.until && t >= *c.until)) continue;
    c.control.apply(control);
    c.canary.apply(canary);
    if (c.rate) rate = *c.rate;
  }
}

double seconds_of(Duration d) { return std::chrono::duration<double>(d).count(); }

rollout::Observation draw(Rng& rng, std::normal_distribution<double>& normal, const ArmModel& a) {
  rollout::Observation o;
  o.error = rng.chance(a.error_rate);
  const double d = seconds_of(a.latency_median) * a.latency_factor * std::exp(a.latency_sigma * normal(rng));
  const double f = std::min(d, seconds_of(a.ttfb_median) * a.latency_factor * std::exp(a.ttfb_sigma * normal(rng)));
  o.duration = nanoseconds(static_cast<std::int64_t>(d * 1e9));
  o.ttfb = nanoseconds(static_cast<std::int64_t>(f * 1e9));
  if (o.error) return o;
  const double u = rng.uniform();
  o.quality.mark(QualitySignal::truncated, u < a.finish_length);
  o.quality.mark(QualitySignal::content_filter, u >= a.finish_length && u < a.finish_length + a.finish_content_filter);
  o.quality.mark(QualitySignal::empty, rng.chance(a.empty));
  if (rng.chance(a.tool_calls)) o.quality.mark(QualitySignal::tool_call_json, rng.chance(a.tool_call_invalid));
  if (rng.chance(a.json_mode)) o.quality.mark(QualitySignal::response_json, rng.chance(a.json_invalid));
  return o;
}

Quantiles quantiles(std::vector<double> v) {
  Quantiles q;
  if (v.empty()) return q;
  std::sort(v.begin(), v.end());
  auto at = [&](double p) {
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::max<std::size_t>(1, rank) - 1];
  };
  q.median = at(0.5);
  q.p95 = at(0.95);
  return q;
}

std::string duration_text(double s) {
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 7200) {
    std::snprintf(buf, sizeof buf, "%.1fm", s / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fh", s / 3600);
  }
  return buf;
}

std::string share_text(std::uint32_t n, std::uint32_t runs) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f%% (%u)", runs ? 100.0 * n / runs : 0.0, n);
  return buf;
}

}  // namespace

std::string_view ending_name(Ending e) {
  switch (e) {
    case Ending::rolled_back: return "rolled_back";
    case Ending::promoted: return "promoted";
    case Ending::paused: return "paused";
    case Ending::running: return "running";
  }
  return "running";
}

// One simulated rollout: the clock ticks, traffic is drawn, the controller
// looks. One loop on purpose: its state is the simulation's, local here.
RunResult run_once(const config::Config& config, const Scenario& scenario, std::uint64_t seed) {
  RunResult result;
  ManualClock clock;
  rollout::Rollout machine(config.rollout, clock);
  rollout::Judge judge(config.rollout.analysis);
  judge.set_estimates(false);  // display-only figures: the verdicts are the same without them
  const auto window = std::chrono::duration_cast<nanoseconds>(config.rollout.analysis.window);
  auto windows = std::make_unique<rollout::Windows>(window);
  Rng rng(seed);
  std::normal_distribution<double> normal;

  // The population, split by the real bucket formula under a per-run salt.
  std::vector<std::uint32_t> buckets(scenario.users);
  std::vector<std::uint64_t> hashes(scenario.users);
  std::uint64_t hs = seed ^ 0x5DEECE66DULL;
  const std::string salt = "simulate-" + std::to_string(seed);
  for (std::uint32_t u = 0; u < scenario.users; ++u) {
    buckets[u] = split::bucket(salt, "user-" + std::to_string(u));
    hashes[u] = splitmix(hs);
  }

  const Duration interval = config.rollout.analysis.interval;
  const Duration dt = std::min<Duration>(interval, std::chrono::seconds(1));
  const Duration measure_from = scenario.measure_from.value_or(Duration{0});
  const bool pins = config.split.pin_ttl.count() > 0;
  Duration t{0};
  Duration next_look = interval;
  ArmModel control, canary;
  double rate = scenario.rate;

  auto end = [&](Ending e, const rollout::Transition& tr) {
    result.ending = e;
    result.cause = std::string(tr.cause);
    result.reason = tr.reason;
    result.seconds = std::max(0.0, seconds_of(t - measure_from));
    result.final_step = tr.step;
  };

  while (t < scenario.duration) {
    arms_at(scenario, t, control, canary, rate);
    // The weight the request path would see (RolloutController::publish).
    const bool off = machine.state() == rollout::State::aborted;
    const std::uint32_t threshold = off ? 0 : split::weight_to_threshold(machine.weight());
    const auto effective =
        static_cast<std::uint32_t>(std::min<double>(split::kBuckets, std::round(threshold * scenario.split_factor)));
    const auto base = clock.now();
    std::poisson_distribution<std::uint64_t> arrivals(rate * seconds_of(dt));
    const std::uint64_t n = arrivals(rng);
    const auto step = std::chrono::duration_cast<nanoseconds>(dt);
    for (std::uint64_t k = 0; k < n; ++k) {
      const auto at =
          base + nanoseconds(static_cast<std::int64_t>((static_cast<double>(k) + rng.uniform()) /
                                                       static_cast<double>(n) * static_cast<double>(step.count())));
      const auto user = static_cast<std::uint32_t>(rng() % scenario.users);
      const Arm arm = split::hash_arm(buckets[user], effective);
      windows->record_user(arm, hashes[user]);
      windows->record(arm, at, draw(rng, normal, arm == Arm::canary ? canary : control));
      if (t >= measure_from) {
        ++result.requests;
        if (arm == Arm::canary) ++result.canary_requests;
      }
    }
    clock.advance(dt);
    t += dt;
    if (t < next_look) continue;
    next_look += interval;

    // One analysis tick, as RolloutController::tick runs it.
    ++result.looks;
    rollout::LookContext ctx;
    ctx.weight = machine.state() == rollout::State::aborted ? 0 : machine.weight();
    ctx.progressing = machine.state() == rollout::State::progressing;
    ctx.pins = pins;
    const rollout::Verdict verdict = judge.look(*windows, clock.now(), ctx);
    const auto epoch_before = machine.epoch();
    const auto tr = machine.tick(verdict);
    if (!tr) continue;
    if (machine.epoch() != epoch_before && machine.state() != rollout::State::aborted) {
      windows = std::make_unique<rollout::Windows>(window);  // a new judgement (not reached here: no retry)
    }
    switch (tr->to) {
      case rollout::State::aborted: end(Ending::rolled_back, *tr); return result;
      case rollout::State::promoted: end(Ending::promoted, *tr); return result;
      case rollout::State::paused: end(Ending::paused, *tr); return result;
      case rollout::State::progressing: break;
    }
  }
  result.ending = Ending::running;
  result.seconds = seconds_of(t - measure_from);
  result.final_step = machine.step();
  result.reason = machine.status().reason;
  return result;
}

Summary run(const config::Config& config, const Scenario& scenario, const Options& options) {
  std::vector<RunResult> results(options.runs);
  std::atomic<std::uint32_t> next{0};
  auto worker = [&] {
    for (std::uint32_t i; (i = next.fetch_add(1)) < options.runs;) {
      std::uint64_t s = options.seed * 0x100000001B3ULL + i;
      results[i] = run_once(config, scenario, splitmix(s));
    }
  };
  const unsigned threads = std::max(1u, std::min(options.threads, options.runs));
  std::vector<std::thread> pool;
  for (unsigned k = 1; k < threads; ++k) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();

  Summary s;
  s.scenario = scenario.name;
  s.runs = options.runs;
  std::map<std::string, std::uint32_t> causes;
  std::map<Ending, std::pair<std::vector<double>, std::vector<double>>> per;
  std::vector<double> secs, reqs;
  double requests = 0;
  for (const auto& r : results) {
    requests += static_cast<double>(r.requests);
    switch (r.ending) {
      case Ending::rolled_back: ++s.rolled_back; break;
      case Ending::promoted: ++s.promoted; break;
      case Ending::paused: ++s.paused; break;
      case Ending::running: ++s.running; continue;
    }
    ++causes[std::string(ending_name(r.ending)) + ":" + r.cause];
    secs.push_back(r.seconds);
    reqs.push_back(static_cast<double>(r.canary_requests));
    per[r.ending].first.push_back(r.seconds);
    per[r.ending].second.push_back(static_cast<double>(r.canary_requests));
  }
  s.causes.assign(causes.begin(), causes.end());
  s.seconds = quantiles(secs);
  s.canary_requests = quantiles(reqs);
  for (auto& [e, v] : per) s.by_ending.push_back({e, {quantiles(v.first), quantiles(v.second)}});
  s.simulated_requests_per_run = options.runs ? requests / options.runs : 0;
  return s;
}

std::string table_header() {
  return "| scenario | runs | rolled back | promoted | paused | running | time to decision, median / p95 | "
         "canary requests to decision, median / p95 | endings |\n"
         "|---|---|---|---|---|---|---|---|---|";
}

std::string table_row(const Summary& s) {
  std::string causes;
  for (const auto& [c, n] : s.causes) {
    if (!causes.empty()) causes += ", ";
    causes += c + " " + std::to_string(n);
  }
  const bool decided = s.rolled_back + s.promoted + s.paused > 0;
  char reqs[64];
  std::snprintf(reqs, sizeof reqs, "%.0f / %.0f", s.canary_requests.median, s.canary_requests.p95);
  return "| " + s.scenario + " | " + std::to_string(s.runs) + " | " + share_text(s.rolled_back, s.runs) + " | " +
         share_text(s.promoted, s.runs) + " | " + share_text(s.paused, s.runs) + " | " + share_text(s.running, s.runs) +
         " | " + (decided ? duration_text(s.seconds.median) + " / " + duration_text(s.seconds.p95) : "-") + " | " +
         (decided ? std::string(reqs) : "-") + " | " + (causes.empty() ? "-" : causes) + " |";
}

nlohmann::json to_json(const Summary& s) {
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [e, q] : s.by_ending) {
    by[std::string(ending_name(e))] = {{"seconds", {{"median", q.first.median}, {"p95", q.first.p95}}},
                                       {"canary_requests", {{"median", q.second.median}, {"p95", q.second.p95}}}};
  }
  nlohmann::json causes = nlohmann::json::object();
  for (const auto& [c, n] : s.causes) causes[c] = n;
  return {{"scenario", s.scenario},
          {"runs", s.runs},
          {"rolled_back", s.rolled_back},
          {"promoted", s.promoted},
          {"paused", s.paused},
          {"running", s.running},
          {"endings", causes},
          {"seconds", {{"median", s.seconds.median}, {"p95", s.seconds.p95}}},
          {"canary_requests", {{"median", s.canary_requests.median}, {"p95", s.canary_requests.p95}}},
          {"by_ending", by},
          {"simulated_requests_per_run", s.simulated_requests_per_run}};
}

namespace {

constexpr const char* kUsage =
    "usage: canaryd simulate --config FILE --scenario FILE [--scenario FILE ...] [--runs N] [--seed S]\n"
    "                        [--threads N] [--json] [--experiment NAME]\n"
    "Runs the rollout section of FILE (the real analysis and state machine) over the synthetic\n"
    "traffic of each scenario N times (default 1000) on a simulated clock and prints, per\n"
    "scenario, the share of runs rolled back / promoted / paused / still running and the time\n"
    "and canary requests to the decision. Scenario format: docs/rollout.md; examples in\n"
    "config/scenarios/. --experiment NAME runs that experiment's rollout (issue 17); the default is\n"
    "the top-level rollout, or the only experiment.\n";

bool parse_u64(const char* s, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return false;
  out = v;
  return true;
}

}  // namespace

// `canaryd simulate`: flags, scenarios, runs across threads, the table.
int main(int argc, char** argv) {
  std::string config_path;
  std::string experiment;
  std::vector<std::string> scenario_paths;
  Options options;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::cerr << "canaryd simulate: " << flag << " needs a value\n" << kUsage;
        return nullptr;
      }
      return argv[++i];
    };
    std::uint64_t n = 0;
    if (a == "--config" || a == "-c") {
      const char* v = value("--config");
      if (!v) return 2;
      config_path = v;
    } else if (a == "--scenario") {
      const char* v = value("--scenario");
      if (!v) return 2;
      scenario_paths.emplace_back(v);
    } else if (a == "--runs" || a == "--seed" || a == "--threads") {
      const char* v = value(a.c_str());
      if (!v) return 2;
      if (!parse_u64(v, n) || (a != "--seed" && (n == 0 || n > 10000000))) {
        std::cerr << "canaryd simulate: " << a << ": expected "
                  << (a == "--seed" ? "an integer >= 0" : "an integer >= 1") << ", got \"" << v << "\"\n";
        return 2;
      }
      if (a == "--runs")
        options.runs = static_cast<std::uint32_t>(n);
      else if (a == "--seed")
        options.seed = n;
      else
        options.threads = static_cast<unsigned>(std::min<std::uint64_t>(n, 256));
    } else if (a == "--experiment") {
      const char* v = value("--experiment");
      if (!v) return 2;
      experiment = v;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "canaryd simulate: unknown argument \"" << a << "\"\n" << kUsage;
      return 2;
    }
  }
  if (config_path.empty() || scenario_paths.empty()) {
    std::cerr << "canaryd simulate: --config and --scenario are required\n" << kUsage;
    return 2;
  }
  config::Config config;
  std::vector<Scenario> scenarios;
  try {
    config = config::load_file(config_path);
    for (const auto& p : scenario_paths) {
      auto loaded = load_scenarios_file(p);
      scenarios.insert(scenarios.end(), loaded.begin(), loaded.end());
    }
  } catch (const config::ConfigError& e) {
    std::cerr << "canaryd simulate: " << e.what() << "\n";
    return 2;
  }
  // One experiment's rollout and split stand in for the top-level ones: the
  // simulation below reads config.rollout and config.split.
  if (experiment.empty() && config.split.control.empty() && config.experiments.size() == 1) {
    experiment = config.experiments[0].name;
  }
  if (!experiment.empty()) {
    const int i = config.experiment_index(experiment);
    if (i < 0) {
      std::cerr << "canaryd simulate: " << config_path << ": no experiment named \"" << experiment << "\"\n";
      return 2;
    }
    config.rollout = config.experiments[static_cast<std::size_t>(i)].rollout;
    config.split = config.experiments[static_cast<std::size_t>(i)].split;
  } else if (config.split.control.empty()) {
    std::cerr << "canaryd simulate: " << config_path << ": several experiments: name one with --experiment NAME\n";
    return 2;
  }
  if (config.rollout.steps.empty()) {
    std::cerr << "canaryd simulate: " << config_path << ": rollout.steps: no steps to simulate\n";
    return 2;
  }
  nlohmann::json out = nlohmann::json::array();
  if (!json) {
    std::cout << "config " << config_path << ", " << options.runs << " runs per scenario, seed " << options.seed
              << "\n\n"
              << table_header() << "\n";
  }
  for (const auto& s : scenarios) {
    const Summary summary = run(config, s, options);
    if (json) {
      out.push_back(to_json(summary));
    } else {
      std::cout << table_row(summary) << std::endl;
    }
  }
  if (json) std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace canaryd::simulate
