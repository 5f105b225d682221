// Per-arm sliding windows of requests, errors, latency and the LLM quality
// signals (SPEC §5 analysis, issue 14), plus a counter window for fallbacks
// (the fallback budget), per-arm running totals for the judge's sequential
// tests, bounded latency reservoirs per time slice for its rank tests, and the
// distinct users per arm for its sample-ratio check.
//
// record() is called by every I/O thread for every request, so it takes no
// lock: the window is a ring of fixed time slices of atomics; the slice for
// `now` is chosen by its epoch (now / slice length) and a stale slice is
// reclaimed by whichever thread first CASes its epoch forward. Readers merge
// the slices whose epoch is still inside the window. A sample racing with the
// reclaim of its slice a whole window later may be lost; nothing else is.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"
#include "canaryd/quality.hpp"

namespace canaryd::rollout {

using TimePoint = Clock::Steady::time_point;

// Fixed log-scale latency buckets: bucket 0 holds everything below kMinLatency,
// buckets 1..kBuckets-2 grow by kGrowth (a value read back from a bucket is its
// geometric middle, within ~5% of any sample in it), the last bucket holds
// everything from ~347 s up.
struct LatencyBuckets {
  static constexpr std::size_t kBuckets = 160;
  static constexpr double kMinLatencySeconds = 100e-6;
  static constexpr double kGrowth = 1.1;

  static std::size_t index(std::chrono::nanoseconds latency);
  // The value reported for a quantile that falls in bucket `i`.
  static double representative_seconds(std::size_t i);
  static double lower_bound_seconds(std::size_t i);
};

// What one upstream attempt on a split route tells the judge.
struct Observation {
  bool error = false;
  std::chrono::nanoseconds duration{0};          // the whole call (a stream: to its last byte)
  std::optional<std::chrono::nanoseconds> ttfb;  // none when no byte came
  QualityFlags quality;                          // what the response scan found (none for errors)
};

// Counts of one arm since its window was made; they never slide, so the
// judge's sequential tests take the difference between two looks.
struct ArmTotals {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::array<std::uint64_t, kQualitySignals> eligible{};
  std::array<std::uint64_t, kQualitySignals> flagged{};
};

enum class LatencyMetric : std::uint8_t { duration, ttfb };

// One time slice's latency reservoir (seconds, successful attempts only).
struct LatencySlice {
  std::uint64_t epoch = 0;     // the slice's index in time (now / slice length)
  std::uint64_t seen = 0;      // samples offered to the slice
  std::vector<double> values;  // at most ArmWindow::kReservoir of them, uniformly chosen
};

struct Snapshot {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  double error_rate = 0;            // errors / requests, 0 without requests
  std::chrono::nanoseconds p50{0};  // 0 without requests
  std::chrono::nanoseconds p99{0};
  std::chrono::nanoseconds covered{0};                    // span of time the data comes from (<= window)
  std::array<std::uint64_t, kQualitySignals> eligible{};  // quality signals in the window
  std::array<std::uint64_t, kQualitySignals> flagged{};

  double p50_seconds() const { return std::chrono::duration<double>(p50).count(); }
  double p99_seconds() const { return std::chrono::duration<double>(p99).count(); }
};

// {"requests","errors","error_rate","p50_seconds","p99_seconds","covered_seconds",
//  "quality":{"<signal>":{"answers","flagged"}}}: one arm of the status's "arms" object.
nlohmann::json to_json(const Snapshot& snapshot);

// Slice length for a window: max(1 s, window / 60).
std::chrono::nanoseconds slice_for(std::chrono::nanoseconds window);

class ArmWindow {
 public:
  // Latency samples kept per slice and metric (reservoir sampling, Vitter
  // 1985 "Random sampling with a reservoir", ACM TOMS 11(1):37-57, Algorithm
  // R): 32 x 60 slices = up to 1920 per arm and metric over a window.
  static constexpr std::size_t kReservoir = 32;

  // slice 0 = slice_for(window). The ring has ceil(window / slice) slices, so a
  // sample stays visible for at least window - slice and at most window.
  explicit ArmWindow(std::chrono::nanoseconds window, std::chrono::nanoseconds slice = {});
  ~ArmWindow();
  ArmWindow(const ArmWindow&) = delete;
  ArmWindow& operator=(const ArmWindow&) = delete;

  // Thread-safe and lock-free (bar a spin of a few hundred stores while another
  // thread reclaims the slice, once per slice length).
  void record(TimePoint now, bool error, std::chrono::nanoseconds latency);
  // The judge's form: also the totals, the reservoirs (duration and TTFB of a
  // successful attempt) and the quality signals.
  void record(TimePoint now, const Observation& observation);
  Snapshot snapshot(TimePoint now) const;
  ArmTotals totals() const;
  // The window's slices with latency samples of `metric`, oldest first.
  std::vector<LatencySlice> latency(TimePoint now, LatencyMetric metric) const;

  std::chrono::nanoseconds window() const { return window_; }
  std::chrono::nanoseconds slice() const { return slice_; }

  struct Slice;

 private:
  std::chrono::nanoseconds window_;
  std::chrono::nanoseconds slice_;
  std::size_t count_;
  std::unique_ptr<Slice[]> slices_;
  struct Totals {
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> errors{0};
    std::array<std::atomic<std::uint64_t>, kQualitySignals> eligible{};
    std::array<std::atomic<std::uint64_t>, kQualitySignals> flagged{};
  } totals_;
};

// A set of 64-bit values in one array (open addressing, linear probing, at
// most half full), for DistinctUsers: a node-based set takes one heap block
// per new user on the request path, scattered among the request's own
// memory, where each keeps a page of a freed burst from going back to the
// system. Values are used as their own hash (DistinctUsers stores mixed
// hashes, uniform in their low bits).
class FlatSet64 {
 public:
  bool contains(std::uint64_t v) const;
  bool insert(std::uint64_t v);  // true when v was not there
  template <class Pred>
  void erase_if(Pred pred) {
    std::vector<std::uint64_t> old;
    old.swap(slots_);
    const bool zero = has_zero_ && !pred(std::uint64_t{0});
    clear();
    has_zero_ = zero;
    for (std::uint64_t v : old) {
      if (v != 0 && !pred(v)) insert(v);
    }
  }
  void clear();  // and gives the array back
  std::size_t size() const { return size_ + (has_zero_ ? 1 : 0); }
  std::size_t capacity() const { return slots_.size(); }

 private:
  std::vector<std::uint64_t> slots_;  // 0: empty (the value 0 is has_zero_)
  std::size_t size_ = 0;              // non-zero values stored
  bool has_zero_ = false;
};

// Distinct users per arm since restart(), for the sample-ratio check. Exact
// over a sample of users chosen by their hash alone (never by their arm): a
// user counts when mix(hash) <= a threshold that halves, dropping the users
// above it, whenever more than kMaxUsers are kept (adaptive distinct sampling,
// Gibbons 2001, "Distinct sampling for highly-accurate answers to distinct
// values queries and event reports", VLDB). The kept users are a uniform
// random subset of all users, so their split is the split's. A user counts in
// the arm it was first seen on.
class DistinctUsers {
 public:
  static constexpr std::size_t kMaxUsers = 16384;

  // Thread-safe: a relaxed load for a user outside the sample, a mutex for one in it.
  void add(Arm arm, std::uint64_t user_hash);
  struct Counts {
    std::uint64_t canary = 0;
    std::uint64_t control = 0;
    double sampled = 1;  // share of users the counts cover (1, 1/2, 1/4, ...)
  };
  Counts counts() const;
  void restart();

 private:
  mutable std::mutex mu_;
  std::atomic<std::uint64_t> threshold_{~std::uint64_t{0}};
  FlatSet64 seen_[2];  // mixed hashes, by arm
  std::uint64_t count_[2] = {0, 0};
};

// A sliding count (fallbacks), same slicing as ArmWindow.
class CounterWindow {
 public:
  explicit CounterWindow(std::chrono::nanoseconds window, std::chrono::nanoseconds slice = {});
  ~CounterWindow();
  CounterWindow(const CounterWindow&) = delete;
  CounterWindow& operator=(const CounterWindow&) = delete;

  void add(TimePoint now, std::uint64_t n = 1);
  std::uint64_t count(TimePoint now) const;

  struct Slice;

 private:
  std::chrono::nanoseconds slice_;
  std::size_t count_;
  std::unique_ptr<Slice[]> slices_;
};

// What the server keeps: one window per arm and the fallback count. A change of
// analysis.window on reload means building a new Windows (history restarts).
class Windows {
 public:
  explicit Windows(std::chrono::nanoseconds window);

  void record(Arm arm, TimePoint now, bool error, std::chrono::nanoseconds latency) {
    arm_window(arm).record(now, error, latency);
  }
  void record(Arm arm, TimePoint now, const Observation& observation) { arm_window(arm).record(now, observation); }
  // A request the split assigned (not forced by the override header, not a
  // fallback's second attempt): `user_hash` is the user's (split::key_hash).
  void record_user(Arm arm, std::uint64_t user_hash) { users_.add(arm, user_hash); }
  DistinctUsers& users() { return users_; }
  const DistinctUsers& users() const { return users_; }
  // Unique per Windows made in this process: the judge restarts on a new one.
  std::uint64_t id() const { return id_; }
  Snapshot snapshot(Arm arm, TimePoint now) const { return arm_window(arm).snapshot(now); }
  void record_fallback(TimePoint now) { fallbacks_.add(now); }
  std::uint64_t fallbacks(TimePoint now) const { return fallbacks_.count(now); }

  ArmWindow& arm_window(Arm arm) { return arm == Arm::canary ? canary_ : control_; }
  const ArmWindow& arm_window(Arm arm) const { return arm == Arm::canary ? canary_ : control_; }
  std::chrono::nanoseconds window() const { return control_.window(); }

 private:
  ArmWindow control_;
  ArmWindow canary_;
  CounterWindow fallbacks_;
  DistinctUsers users_;
  std::uint64_t id_;
};

}  // namespace canaryd::rollout
