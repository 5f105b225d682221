#include "rollout/window.hpp"

#include <algorithm>
#include <bit>
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
  nlohmann::json quality = nlohmann::json::object();
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    quality[std::string(kQualitySignalNames[i])] = {{"answers", s.eligible[i]}, {"flagged", s.flagged[i]}};
  }
  return nlohmann::json{
      {"requests", s.requests},         {"errors", s.errors},
      {"error_rate", s.error_rate},     {"p50_seconds", s.p50_seconds()},
      {"p99_seconds", s.p99_seconds()}, {"covered_seconds", std::chrono::duration<double>(s.covered).count()},
      {"quality", std::move(quality)}};
}

nanoseconds slice_for(nanoseconds window) { return std::max<nanoseconds>(std::chrono::seconds(1), window / 60); }

// ---- ArmWindow ------------------------------------------------------------

namespace {

// splitmix64's finaliser (Steele, Lea & Flood 2014).
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// An empty reservoir slot: a NaN no latency produces.
constexpr std::uint64_t kEmptySample = 0x7FF8DEADBEEF0001ULL;

}  // namespace

struct ArmWindow::Slice {
  std::atomic<std::uint64_t> state{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::array<std::atomic<std::uint64_t>, LatencyBuckets::kBuckets> buckets{};
  std::array<std::atomic<std::uint64_t>, kQualitySignals> eligible{};
  std::array<std::atomic<std::uint64_t>, kQualitySignals> flagged{};
  struct Reservoir {
    std::atomic<std::uint64_t> seen{0};
    std::array<std::atomic<std::uint64_t>, kReservoir> bits{};
  };
  std::array<Reservoir, 2> reservoirs;  // by LatencyMetric

  Slice() { clear(); }
  void clear() {
    requests.store(0, std::memory_order_relaxed);
    errors.store(0, std::memory_order_relaxed);
    for (auto& b : buckets) b.store(0, std::memory_order_relaxed);
    for (auto& q : eligible) q.store(0, std::memory_order_relaxed);
    for (auto& q : flagged) q.store(0, std::memory_order_relaxed);
    for (auto& r : reservoirs) {
      r.seen.store(0, std::memory_order_relaxed);
      for (auto& b : r.bits) b.store(kEmptySample, std::memory_order_relaxed);
    }
  }

  // Algorithm R with the index drawn from a hash of the sample's position,
  // value and slice: deterministic for a given input (canaryd simulate is
  // reproducible), uniform whatever the values are.
  void offer(LatencyMetric metric, std::uint64_t epoch, double seconds) {
    auto& r = reservoirs[static_cast<std::size_t>(metric)];
    const std::uint64_t i = r.seen.fetch_add(1, std::memory_order_relaxed);
    const auto bits = std::bit_cast<std::uint64_t>(seconds);
    if (i < kReservoir) {
      r.bits[i].store(bits, std::memory_order_relaxed);
      return;
    }
    const std::uint64_t j = mix64(i ^ (bits * 0x9E3779B97F4A7C15ULL) ^ (epoch << 20)) % (i + 1);
    if (j < kReservoir) r.bits[j].store(bits, std::memory_order_relaxed);
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

void ArmWindow::record(TimePoint now, const Observation& o) {
  totals_.requests.fetch_add(1, std::memory_order_relaxed);
  if (o.error) totals_.errors.fetch_add(1, std::memory_order_relaxed);
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    const auto s = static_cast<QualitySignal>(i);
    if (!o.quality.is_eligible(s)) continue;
    totals_.eligible[i].fetch_add(1, std::memory_order_relaxed);
    if (o.quality.is_flagged(s)) totals_.flagged[i].fetch_add(1, std::memory_order_relaxed);
  }
  const std::uint64_t epoch = epoch_of(now, slice_);
  Slice* slot = acquire(slices_[epoch % count_], epoch);
  if (slot == nullptr) return;
  slot->requests.fetch_add(1, std::memory_order_relaxed);
  if (o.error) slot->errors.fetch_add(1, std::memory_order_relaxed);
  slot->buckets[LatencyBuckets::index(o.duration)].fetch_add(1, std::memory_order_relaxed);
  for (std::size_t i = 0; i < kQualitySignals; ++i) {
    const auto s = static_cast<QualitySignal>(i);
    if (!o.quality.is_eligible(s)) continue;
    slot->eligible[i].fetch_add(1, std::memory_order_relaxed);
    if (o.quality.is_flagged(s)) slot->flagged[i].fetch_add(1, std::memory_order_relaxed);
  }
  if (o.error) return;  // a failure's latency says how it failed, not how fast the arm is
  slot->offer(LatencyMetric::duration, epoch, std::chrono::duration<double>(o.duration).count());
  if (o.ttfb) slot->offer(LatencyMetric::ttfb, epoch, std::chrono::duration<double>(*o.ttfb).count());
}

ArmTotals ArmWindow::totals() const {
  ArmTotals t;
  // Errors before requests: a reader racing a recorder may see a request
  // without its error, never an error without its request.
  t.errors = totals_.errors.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kQualitySignals; ++i) t.flagged[i] = totals_.flagged[i].load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kQualitySignals; ++i) t.eligible[i] = totals_.eligible[i].load(std::memory_order_relaxed);
  t.requests = totals_.requests.load(std::memory_order_relaxed);
  t.errors = std::min(t.errors, t.requests);
  for (std::size_t i = 0; i < kQualitySignals; ++i) t.flagged[i] = std::min(t.flagged[i], t.eligible[i]);
  return t;
}

std::vector<LatencySlice> ArmWindow::latency(TimePoint now, LatencyMetric metric) const {
  const std::uint64_t current = epoch_of(now, slice_);
  std::vector<LatencySlice> out;
  for (std::size_t k = 0; k < count_; ++k) {
    const Slice& slot = slices_[k];
    const std::uint64_t before = slot.state.load(std::memory_order_acquire);
    if (!in_window(before, current, count_)) continue;
    const auto& r = slot.reservoirs[static_cast<std::size_t>(metric)];
    LatencySlice ls;
    ls.epoch = (before >> 1) - 1;
    ls.seen = r.seen.load(std::memory_order_relaxed);
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(ls.seen, kReservoir));
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t bits = r.bits[i].load(std::memory_order_relaxed);
      if (bits == kEmptySample) continue;  // claimed, not written yet
      ls.values.push_back(std::bit_cast<double>(bits));
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.state.load(std::memory_order_relaxed) != before) continue;  // reclaimed while we read
    if (!ls.values.empty()) out.push_back(std::move(ls));
  }
  std::sort(out.begin(), out.end(), [](const LatencySlice& a, const LatencySlice& b) { return a.epoch < b.epoch; });
  return out;
}

// ---- FlatSet64 ------------------------------------------------------------

bool FlatSet64::contains(std::uint64_t v) const {
  if (v == 0) return has_zero_;
  if (slots_.empty()) return false;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = v & mask;; i = (i + 1) & mask) {
    if (slots_[i] == v) return true;
    if (slots_[i] == 0) return false;
  }
}

bool FlatSet64::insert(std::uint64_t v) {
  if (v == 0) {
    const bool added = !has_zero_;
    has_zero_ = true;
    return added;
  }
  if ((size_ + 1) * 2 > slots_.size()) {
    std::vector<std::uint64_t> old(std::max<std::size_t>(16, slots_.size() * 2), 0);
    old.swap(slots_);
    size_ = 0;
    for (std::uint64_t x : old) {
      if (x != 0) insert(x);
    }
  }
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = v & mask;; i = (i + 1) & mask) {
    if (slots_[i] == v) return false;
    if (slots_[i] == 0) {
      slots_[i] = v;
      ++size_;
      return true;
    }
  }
}

void FlatSet64::clear() {
  std::vector<std::uint64_t>().swap(slots_);
  size_ = 0;
  has_zero_ = false;
}

// ---- DistinctUsers --------------------------------------------------------

void DistinctUsers::add(Arm arm, std::uint64_t user_hash) {
  const std::uint64_t h = mix64(user_hash);
  if (h > threshold_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mu_);
  if (h > threshold_.load(std::memory_order_relaxed)) return;
  if (seen_[0].contains(h) || seen_[1].contains(h)) return;
  const auto a = static_cast<std::size_t>(arm);
  seen_[a].insert(h);
  ++count_[a];
  while (seen_[0].size() + seen_[1].size() > kMaxUsers) {
    const std::uint64_t t = threshold_.load(std::memory_order_relaxed) / 2;
    threshold_.store(t, std::memory_order_relaxed);
    for (std::size_t i = 0; i < 2; ++i) {
      seen_[i].erase_if([t](std::uint64_t v) { return v > t; });
      count_[i] = seen_[i].size();
    }
  }
}

DistinctUsers::Counts DistinctUsers::counts() const {
  std::lock_guard lock(mu_);
  Counts c;
  c.control = count_[0];
  c.canary = count_[1];
  c.sampled = static_cast<double>(threshold_.load(std::memory_order_relaxed)) / 18446744073709551615.0;
  return c;
}

void DistinctUsers::restart() {
  std::lock_guard lock(mu_);
  seen_[0].clear();
  seen_[1].clear();
  count_[0] = count_[1] = 0;
  threshold_.store(~std::uint64_t{0}, std::memory_order_relaxed);
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
    std::array<std::uint64_t, kQualitySignals> eligible, flagged;
    for (std::size_t i = 0; i < kQualitySignals; ++i) {
      eligible[i] = slot.eligible[i].load(std::memory_order_relaxed);
      flagged[i] = slot.flagged[i].load(std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.state.load(std::memory_order_relaxed) != before) continue;  // reclaimed while we read
    if (requests == 0) continue;
    out.requests += requests;
    out.errors += errors;
    for (std::size_t i = 0; i < local.size(); ++i) merged[i] += local[i];
    for (std::size_t i = 0; i < kQualitySignals; ++i) {
      out.eligible[i] += eligible[i];
      out.flagged[i] += std::min(flagged[i], eligible[i]);
    }
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

namespace {
std::atomic<std::uint64_t> next_windows_id{1};
}

Windows::Windows(nanoseconds window)
    : control_(window), canary_(window), fallbacks_(window), id_(next_windows_id.fetch_add(1)) {}

}  // namespace canaryd::rollout
