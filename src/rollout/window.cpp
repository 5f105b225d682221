#include "rollout/window.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {

namespace {

using std::chrono::nanoseconds;

// A slot's state word: ((epoch + 1) << 1) | reclaiming. 0 = never used, so an
// unused slot never looks like epoch 0.
constexpr std::uint64_t state_for(std::uint64_t epoch) { return (epoch + 1) << 1; }

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

std::uint64_t epoch_of(TimePoint now, nanoseconds slice) {
  const auto since = now.time_since_epoch();
  if (since.count() <= 0) return 0;
  return static_cast<std::uint64_t>(std::chrono::duration_cast<nanoseconds>(since) / slice);
}

std::size_t ring_size(nanoseconds window, nanoseconds slice) {
  const auto n = (window.count() + slice.count() - 1) / slice.count();
  return static_cast<std::size_t>(std::max<std::int64_t>(1, n));
}

// Returns the slot ready to take samples of `epoch`, reclaiming it if it
// still holds an older slice; nullptr when it already holds a newer one (the
// sample is about a window old: drop it).
template <class Slot>
Slot* acquire(Slot& slot, std::uint64_t epoch) {
  const std::uint64_t want = state_for(epoch);
  for (;;) {
    std::uint64_t st = slot.state.load(std::memory_order_acquire);
    if (st == want) return &slot;
    if (st & 1) {  // another thread is zeroing it
      cpu_relax();
      continue;
    }
    if (st > want) return nullptr;
    if (slot.state.compare_exchange_weak(st, want | 1, std::memory_order_acq_rel)) {
      slot.clear();
      slot.state.store(want, std::memory_order_release);
      return &slot;
    }
  }
}

// Whether a slot's state (read before and after copying it) is a stable slice
// inside the window ending at `current`.
bool in_window(std::uint64_t st, std::uint64_t current, std::size_t count) {
  if (st == 0 || (st & 1)) return false;
  const std::uint64_t e = (st >> 1) - 1;
  return e <= current && current - e < count;
}

}  // namespace

// ---- LatencyBuckets -------------------------------------------------------

std::size_t LatencyBuckets::index(nanoseconds latency) {
  const double s = std::chrono::duration<double>(latency).count();
  if (!(s >= kMinLatencySeconds)) return 0;  // also NaN-safe
  const double i = 1.0 + std::floor(std::log(s / kMinLatencySeconds) / std::log(kGrowth));
  if (i >= static_cast<double>(kBuckets - 1)) return kBuckets - 1;
  return static_cast<std::size_t>(i);
}

double LatencyBuckets::lower_bound_seconds(std::size_t i) {
  if (i == 0) return 0;
  return kMinLatencySeconds * std::pow(kGrowth, static_cast<double>(i - 1));
}

double LatencyBuckets::representative_seconds(std::size_t i) {
  if (i == 0) return kMinLatencySeconds / 2;
  if (i >= kBuckets - 1) return lower_bound_seconds(kBuckets - 1);
  return lower_bound_seconds(i) * std::sqrt(kGrowth);
}

// ---- Snapshot -------------------------------------------------------------

nlohmann::json to_json(const Snapshot& s) {
  return nlohmann::json{{"requests", s.requests},
                        {"errors", s.errors},
                        {"error_rate", s.error_rate},
                        {"p50_seconds", s.p50_seconds()},
                        {"p99_seconds", s.p99_seconds()},
                        {"covered_seconds", std::chrono::duration<double>(s.covered).count()}};
}

nanoseconds slice_for(nanoseconds window) {
  return std::max<nanoseconds>(std::chrono::seconds(1), window / 60);
}

// ---- ArmWindow ------------------------------------------------------------

struct ArmWindow::Slice {
  std::atomic<std::uint64_t> state{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::array<std::atomic<std::uint64_t>, LatencyBuckets::kBuckets> buckets{};

  void clear() {
    requests.store(0, std::memory_order_relaxed);
    errors.store(0, std::memory_order_relaxed);
    for (auto& b : buckets) b.store(0, std::memory_order_relaxed);
  }
};

ArmWindow::ArmWindow(nanoseconds window, nanoseconds slice)
    : window_(window),
      slice_(slice.count() > 0 ? slice : slice_for(window)),
      count_(ring_size(window, slice_)),
      slices_(new Slice[count_]) {}

ArmWindow::~ArmWindow() = default;

void ArmWindow::record(TimePoint now, bool error, nanoseconds latency) {
  const std::uint64_t epoch = epoch_of(now, slice_);
  Slice* slot = acquire(slices_[epoch % count_], epoch);
  if (slot == nullptr) return;
  slot->requests.fetch_add(1, std::memory_order_relaxed);
  if (error) slot->errors.fetch_add(1, std::memory_order_relaxed);
  slot->buckets[LatencyBuckets::index(latency)].fetch_add(1, std::memory_order_relaxed);
}

Snapshot ArmWindow::snapshot(TimePoint now) const {
  const std::uint64_t current = epoch_of(now, slice_);
  std::array<std::uint64_t, LatencyBuckets::kBuckets> merged{};
  Snapshot out;
  std::uint64_t oldest = current + 1;
  for (std::size_t k = 0; k < count_; ++k) {
    const Slice& slot = slices_[k];
    const std::uint64_t before = slot.state.load(std::memory_order_acquire);
    if (!in_window(before, current, count_)) continue;
    const std::uint64_t requests = slot.requests.load(std::memory_order_relaxed);
    const std::uint64_t errors = slot.errors.load(std::memory_order_relaxed);
    std::array<std::uint64_t, LatencyBuckets::kBuckets> local;
    for (std::size_t i = 0; i < local.size(); ++i) local[i] = slot.buckets[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.state.load(std::memory_order_relaxed) != before) continue;  // reclaimed while we read
    if (requests == 0) continue;
    out.requests += requests;
    out.errors += errors;
    for (std::size_t i = 0; i < local.size(); ++i) merged[i] += local[i];
    oldest = std::min(oldest, (before >> 1) - 1);
  }
  if (out.requests == 0) return out;
  out.error_rate = static_cast<double>(out.errors) / static_cast<double>(out.requests);

  std::uint64_t total = 0;
  for (auto c : merged) total += c;
  // Nearest rank: the smallest value with at least q * n samples at or below it.
  auto quantile = [&](double q) {
    const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < merged.size(); ++i) {
      seen += merged[i];
      if (seen >= rank) {
        return std::chrono::duration_cast<nanoseconds>(
            std::chrono::duration<double>(LatencyBuckets::representative_seconds(i)));
      }
    }
    return nanoseconds{0};
  };
  if (total > 0) {
    out.p50 = quantile(0.50);
    out.p99 = quantile(0.99);
  }
  const auto oldest_start = TimePoint{} + oldest * slice_;
  out.covered = std::min<nanoseconds>(window_, std::chrono::duration_cast<nanoseconds>(now - oldest_start));
  return out;
}

// ---- CounterWindow --------------------------------------------------------

struct CounterWindow::Slice {
  std::atomic<std::uint64_t> state{0};
  std::atomic<std::uint64_t> count{0};
  void clear() { count.store(0, std::memory_order_relaxed); }
};

CounterWindow::CounterWindow(nanoseconds window, nanoseconds slice)
    : slice_(slice.count() > 0 ? slice : slice_for(window)),
      count_(ring_size(window, slice_)),
      slices_(new Slice[count_]) {}

CounterWindow::~CounterWindow() = default;

void CounterWindow::add(TimePoint now, std::uint64_t n) {
  const std::uint64_t epoch = epoch_of(now, slice_);
  Slice* slot = acquire(slices_[epoch % count_], epoch);
  if (slot != nullptr) slot->count.fetch_add(n, std::memory_order_relaxed);
}

std::uint64_t CounterWindow::count(TimePoint now) const {
  const std::uint64_t current = epoch_of(now, slice_);
  std::uint64_t total = 0;
  for (std::size_t k = 0; k < count_; ++k) {
    const Slice& slot = slices_[k];
    const std::uint64_t before = slot.state.load(std::memory_order_acquire);
    if (!in_window(before, current, count_)) continue;
    const std::uint64_t n = slot.count.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.state.load(std::memory_order_relaxed) == before) total += n;
  }
  return total;
}

// ---- Windows --------------------------------------------------------------

Windows::Windows(nanoseconds window) : control_(window), canary_(window), fallbacks_(window) {}

}  // namespace canaryd::rollout
