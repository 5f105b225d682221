// Per-arm sliding windows of requests, errors and latency (SPEC §5 analysis),
// plus a counter window for fallbacks (the fallback budget).
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

#include <nlohmann/json_fwd.hpp>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"

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

struct Snapshot {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  double error_rate = 0;          // errors / requests, 0 without requests
  std::chrono::nanoseconds p50{0};  // 0 without requests
  std::chrono::nanoseconds p99{0};
  std::chrono::nanoseconds covered{0};  // span of time the data comes from (<= window)

  double p50_seconds() const { return std::chrono::duration<double>(p50).count(); }
  double p99_seconds() const { return std::chrono::duration<double>(p99).count(); }
};

// {"requests","errors","error_rate","p50_seconds","p99_seconds","covered_seconds"}:
// one arm of the status's "arms" object.
nlohmann::json to_json(const Snapshot& snapshot);

// Slice length for a window: max(1 s, window / 60).
std::chrono::nanoseconds slice_for(std::chrono::nanoseconds window);

class ArmWindow {
 public:
  // slice 0 = slice_for(window). The ring has ceil(window / slice) slices, so a
  // sample stays visible for at least window - slice and at most window.
  explicit ArmWindow(std::chrono::nanoseconds window, std::chrono::nanoseconds slice = {});
  ~ArmWindow();
  ArmWindow(const ArmWindow&) = delete;
  ArmWindow& operator=(const ArmWindow&) = delete;

  // Thread-safe and lock-free (bar a spin of a few hundred stores while another
  // thread reclaims the slice, once per slice length).
  void record(TimePoint now, bool error, std::chrono::nanoseconds latency);
  Snapshot snapshot(TimePoint now) const;

  std::chrono::nanoseconds window() const { return window_; }
  std::chrono::nanoseconds slice() const { return slice_; }

  struct Slice;

 private:
  std::chrono::nanoseconds window_;
  std::chrono::nanoseconds slice_;
  std::size_t count_;
  std::unique_ptr<Slice[]> slices_;
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
};

}  // namespace canaryd::rollout
