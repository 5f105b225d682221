// `canaryd simulate` (issue 14, docs/rollout.md "Tune your analysis before a
// rollout"): runs the real judge (rollout::Judge over rollout::Windows) and the
// real state machine (rollout::Rollout) of a config's rollout section on a
// simulated clock, over synthetic traffic described by a scenario file, many
// times, and reports how often the rollout was rolled back, promoted, paused or
// still running, and how long and how many canary requests the decision took.
//
// What is simulated: one replica; requests arrive as a Poisson process from a
// population of users, each split by the real bucket formula
// (split::bucket with a per-run salt) against the weight in force; each
// request's error, duration, time to first byte and LLM quality signals drawn
// per arm from the scenario (log-normal latencies), with change points. Not
// simulated: pins (weights only rise here), fallbacks, Redis, several replicas.
// Pure computation: no I/O but the report.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "canaryd/config.hpp"

namespace canaryd::simulate {

using Duration = config::Duration;

// One arm's traffic.
struct ArmModel {
  double error_rate = 0.005;
  Duration latency_median{800};  // duration of a successful call, log-normal
  double latency_sigma = 0.6;    // of log(duration)
  Duration ttfb_median{300};     // time to first byte, log-normal, at most the duration
  double ttfb_sigma = 0.6;
  double latency_factor = 1;    // multiplies both medians (a slower canary)
  double finish_length = 0.01;  // share of answers cut by max_tokens (finish_reason "length")
  double finish_content_filter = 0.001;
  double empty = 0.002;              // answers with no text and no tool call
  double tool_calls = 0.1;           // share of answers with tool calls
  double tool_call_invalid = 0.002;  // of those, arguments that are not JSON
  double json_mode = 0.05;           // share of requests asking for a JSON response_format
  double json_invalid = 0.002;       // of those, answers that are not JSON
};

// A partial ArmModel (what a change or an arm's section sets).
struct ArmOverride {
  std::optional<double> error_rate, latency_sigma, ttfb_sigma, latency_factor, finish_length, finish_content_filter,
      empty, tool_calls, tool_call_invalid, json_mode, json_invalid;
  std::optional<Duration> latency_median, ttfb_median;
  void apply(ArmModel& arm) const;
};

struct Change {
  Duration at{0};
  std::optional<Duration> until;  // the change is undone then
  ArmOverride control, canary;    // `both:` goes into both
  std::optional<double> rate;     // requests per second from `at`
};

struct Scenario {
  std::string name;
  Duration duration = std::chrono::hours(2);  // simulated time per run at most
  double rate = 20;                           // requests per second, both arms
  std::uint32_t users = 20000;                // population; each request from a uniformly chosen user
  double split_factor = 1;                    // the canary gets factor x weight of the users (1: the split's own)
  std::optional<Duration> measure_from;       // count time and canary requests from here (default: the start)
  ArmModel control;
  ArmModel canary;
  std::vector<Change> changes;
};

// A scenario file: the top level is one scenario (every key optional); with
// `variants:`, each entry is that scenario with the entry's keys on top (a
// `control:`/`canary:`/`both:` entry overrides those arm keys only). Throws
// config::ConfigError "FILE:LINE: key.path: what is wrong".
std::vector<Scenario> load_scenarios_file(const std::string& path);
std::vector<Scenario> load_scenarios(const std::string& yaml, const std::string& name);

// How one run ended.
enum class Ending { rolled_back, promoted, paused, running };
std::string_view ending_name(Ending e);  // "rolled_back" | "promoted" | "paused" | "running"

struct RunResult {
  Ending ending = Ending::running;
  std::string cause;  // the final transition's cause ("error_rate", "srm", "analysis", ...)
  std::string reason;
  double seconds = 0;                 // to the decision (from measure_from), or the whole run when running
  std::uint64_t canary_requests = 0;  // to the decision (from measure_from)
  std::uint64_t requests = 0;
  std::uint64_t looks = 0;
  std::size_t final_step = 0;
};

struct Quantiles {
  double median = 0;
  double p95 = 0;
};

struct Summary {
  std::string scenario;
  std::uint32_t runs = 0;
  std::uint32_t rolled_back = 0, promoted = 0, paused = 0, running = 0;
  std::vector<std::pair<std::string, std::uint32_t>> causes;  // of the endings that are not "running"
  // Over the runs that ended with a decision (rolled back, promoted or paused);
  // zeros when none did.
  Quantiles seconds, canary_requests;
  // The same per ending (only those that occurred).
  std::vector<std::pair<Ending, std::pair<Quantiles, Quantiles>>> by_ending;
  double simulated_requests_per_run = 0;
};

struct Options {
  std::uint32_t runs = 1000;
  std::uint64_t seed = 1;
  unsigned threads = 1;
};

// One run: deterministic for (config, scenario, seed).
RunResult run_once(const config::Config& config, const Scenario& scenario, std::uint64_t seed);
// `options.runs` runs (seeds derived from options.seed and the run index), on
// `options.threads` threads; the result does not depend on the thread count.
Summary run(const config::Config& config, const Scenario& scenario, const Options& options);

// The text table of docs/rollout.md ("| scenario | runs | rolled back | ...").
std::string table_header();
std::string table_row(const Summary& summary);
nlohmann::json to_json(const Summary& summary);

// `canaryd simulate --config FILE --scenario FILE [--runs N] [--seed S]
// [--threads N] [--json]`; argv[0] is "simulate". Returns the exit code (2 on a
// usage or config error, printed to stderr).
int main(int argc, char** argv);

}  // namespace canaryd::simulate
