#include "rollout/window.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

TEST(LatencyBuckets, RepresentativeWithinFivePercent) {
  for (double s = 150e-6; s < 300.0; s *= 1.037) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(s));
    const double got = LatencyBuckets::representative_seconds(LatencyBuckets::index(ns));
    EXPECT_NEAR(got / s, 1.0, 0.05) << s;
  }
  EXPECT_EQ(LatencyBuckets::index(0ns), 0u);
  EXPECT_EQ(LatencyBuckets::index(std::chrono::hours(1)), LatencyBuckets::kBuckets - 1);
  EXPECT_GE(LatencyBuckets::lower_bound_seconds(LatencyBuckets::kBuckets - 1), 300.0);
}

TEST(ArmWindow, SliceSizing) {
  EXPECT_EQ(slice_for(5min), 5s);
  EXPECT_EQ(slice_for(10s), 1s);
  ArmWindow w(5min);
  EXPECT_EQ(w.slice(), 5s);
}

TEST(ArmWindow, EmptySnapshot) {
  ManualClock clock;
  ArmWindow w(60s);
  auto s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 0u);
  EXPECT_EQ(s.error_rate, 0);
  EXPECT_EQ(s.p99, 0ns);
}

TEST(ArmWindow, OldSlicesDropOutAfterWindow) {
  ManualClock clock;
  ArmWindow w(60s);  // 1 s slices, 60 of them
  w.record(clock.now(), true, 10ms);
  w.record(clock.now(), false, 10ms);

  clock.advance(59s);  // window - slice: still inside
  w.record(clock.now(), false, 10ms);
  auto s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 3u);
  EXPECT_EQ(s.errors, 1u);
  EXPECT_GT(s.covered, 58s);
  EXPECT_LE(s.covered, 60s);

  clock.advance(1s);  // a full window after the first two
  s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 1u);
  EXPECT_EQ(s.errors, 0u);

  clock.advance(60s);
  EXPECT_EQ(w.snapshot(clock.now()).requests, 0u);
}

TEST(ArmWindow, RecordingReusesTheRingAfterManyWindows) {
  ManualClock clock;
  ArmWindow w(10s);
  for (int i = 0; i < 100; ++i) {  // ten windows' worth, one per 1 s slice
    w.record(clock.now(), i % 2 == 0, 5ms);
    clock.advance(1s);
  }
  auto s = w.snapshot(clock.now());
  // At now = t0 + 100 s, slices 91..99 (+ the empty current one) are inside.
  EXPECT_EQ(s.requests, 9u);
}

TEST(ArmWindow, StaleSampleIsDropped) {
  ManualClock clock;
  ArmWindow w(10s);
  const auto old = clock.now();
  clock.advance(10s);
  w.record(clock.now(), false, 5ms);
  w.record(old, true, 5ms);  // same slot, a window older: dropped, not mixed in
  auto s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 1u);
  EXPECT_EQ(s.errors, 0u);
}

TEST(ArmWindow, ErrorRateAndQuantilesOnKnownData) {
  ManualClock clock;
  ArmWindow w(5min);
  // 1..1000 ms, one sample each, spread over four minutes; every 50th an error.
  for (int i = 1; i <= 1000; ++i) {
    w.record(clock.now(), i % 50 == 0, std::chrono::milliseconds(i));
    if (i % 4 == 0) clock.advance(1s);
  }
  auto s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 1000u);
  EXPECT_EQ(s.errors, 20u);
  EXPECT_DOUBLE_EQ(s.error_rate, 0.02);
  EXPECT_NEAR(s.p50_seconds(), 0.500, 0.500 * 0.05);
  EXPECT_NEAR(s.p99_seconds(), 0.990, 0.990 * 0.05);

  auto j = to_json(s);
  EXPECT_EQ(j["requests"], 1000);
  EXPECT_DOUBLE_EQ(j["error_rate"].get<double>(), 0.02);
}

TEST(ArmWindow, TailQuantile) {
  ManualClock clock;
  ArmWindow w(60s);
  for (int i = 0; i < 980; ++i) w.record(clock.now(), false, 100ms);
  for (int i = 0; i < 20; ++i) w.record(clock.now(), false, 3s);
  auto s = w.snapshot(clock.now());
  EXPECT_NEAR(s.p50_seconds(), 0.1, 0.005);
  EXPECT_NEAR(s.p99_seconds(), 3.0, 0.15);
}

TEST(ArmWindow, ConcurrentRecordSumsExactly) {
  ManualClock clock;
  ArmWindow w(60s);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200000;
  const auto now = clock.now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) w.record(now, i % 10 == 0, std::chrono::milliseconds(1 + (i + t) % 500));
    });
  }
  for (auto& th : threads) th.join();
  auto s = w.snapshot(now);
  EXPECT_EQ(s.requests, static_cast<std::uint64_t>(kThreads) * kPerThread);
  EXPECT_EQ(s.errors, static_cast<std::uint64_t>(kThreads) * kPerThread / 10);
}

TEST(ArmWindow, ConcurrentRecordAcrossRotations) {
  // Threads record at their own times across slice boundaries: every sample
  // whose slice is still in the window is counted once.
  ManualClock clock;
  ArmWindow w(10s);
  const auto t0 = clock.now();
  constexpr int kThreads = 4;
  constexpr int kSlices = 8;  // < 10, all still in the window at the end
  constexpr int kPerSlice = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int s = 0; s < kSlices; ++s) {
        for (int i = 0; i < kPerSlice; ++i) w.record(t0 + std::chrono::seconds(s), false, 1ms);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(w.snapshot(t0 + std::chrono::seconds(kSlices - 1)).requests,
            static_cast<std::uint64_t>(kThreads) * kSlices * kPerSlice);
}

TEST(Windows, PerArmAndFallbacks) {
  ManualClock clock;
  Windows w(60s);
  w.record(Arm::canary, clock.now(), true, 5ms);
  w.record(Arm::control, clock.now(), false, 5ms);
  w.record(Arm::control, clock.now(), false, 5ms);
  w.record_fallback(clock.now());
  EXPECT_EQ(w.snapshot(Arm::canary, clock.now()).requests, 1u);
  EXPECT_EQ(w.snapshot(Arm::canary, clock.now()).errors, 1u);
  EXPECT_EQ(w.snapshot(Arm::control, clock.now()).requests, 2u);
  EXPECT_EQ(w.fallbacks(clock.now()), 1u);
  clock.advance(60s);
  EXPECT_EQ(w.fallbacks(clock.now()), 0u);
  EXPECT_EQ(w.snapshot(Arm::control, clock.now()).requests, 0u);
}

// ---- the judge v2's inputs (issue 14) -------------------------------------

Observation obs(bool error, std::chrono::nanoseconds duration, std::optional<std::chrono::nanoseconds> ttfb = {},
                QualityFlags q = {}) {
  Observation o;
  o.error = error;
  o.duration = duration;
  o.ttfb = ttfb;
  o.quality = q;
  return o;
}

TEST(ArmWindow, TotalsNeverSlideAndCountQuality) {
  ManualClock clock;
  ArmWindow w(60s);
  QualityFlags q;
  q.mark(QualitySignal::truncated, true);
  q.mark(QualitySignal::empty, false);
  w.record(clock.now(), obs(false, 10ms, 2ms, q));
  w.record(clock.now(), obs(true, 10ms));
  w.record(clock.now(), false, 10ms);  // the old form: window only
  auto t = w.totals();
  EXPECT_EQ(t.requests, 2u);
  EXPECT_EQ(t.errors, 1u);
  EXPECT_EQ(t.eligible[0], 1u);
  EXPECT_EQ(t.flagged[0], 1u);
  EXPECT_EQ(t.eligible[2], 1u);
  EXPECT_EQ(t.flagged[2], 0u);
  auto s = w.snapshot(clock.now());
  EXPECT_EQ(s.requests, 3u);
  EXPECT_EQ(s.eligible[0], 1u);
  EXPECT_EQ(s.flagged[0], 1u);
  clock.advance(2min);
  EXPECT_EQ(w.snapshot(clock.now()).requests, 0u);
  EXPECT_EQ(w.snapshot(clock.now()).eligible[0], 0u);
  EXPECT_EQ(w.totals().requests, 2u);  // totals stay
}

TEST(ArmWindow, LatencyReservoirsPerSliceAndMetric) {
  ManualClock clock;
  ArmWindow w(60s);  // 1 s slices
  const auto t0 = clock.now();
  // Slice 0: 10 successes (TTFB on half of them) and an error (never sampled).
  for (int i = 0; i < 10; ++i) {
    w.record(t0, obs(false, std::chrono::milliseconds(100 + i),
                     i % 2 ? std::optional<std::chrono::nanoseconds>(5ms) : std::nullopt));
  }
  w.record(t0, obs(true, 30s, 1ms));
  // Slice 3: 1000 samples: the reservoir keeps kReservoir, uniformly.
  for (int i = 0; i < 1000; ++i) w.record(t0 + 3s, obs(false, std::chrono::milliseconds(i + 1)));
  const auto d = w.latency(t0 + 3s, LatencyMetric::duration);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_LT(d[0].epoch, d[1].epoch);
  EXPECT_EQ(d[0].values.size(), 10u);
  EXPECT_EQ(d[0].seen, 10u);
  EXPECT_DOUBLE_EQ(*std::max_element(d[0].values.begin(), d[0].values.end()), 0.109);
  EXPECT_EQ(d[1].seen, 1000u);
  ASSERT_EQ(d[1].values.size(), ArmWindow::kReservoir);
  double mean = 0;
  for (double v : d[1].values) mean += v / ArmWindow::kReservoir;
  EXPECT_NEAR(mean, 0.5, 0.15);  // a uniform pick of 1..1000 ms
  EXPECT_GT(*std::min_element(d[1].values.begin(), d[1].values.end()), 0.0);
  const auto f = w.latency(t0 + 3s, LatencyMetric::ttfb);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].values.size(), 5u);
  // Slices leave the window as the counts do.
  EXPECT_EQ(w.latency(t0 + 62s, LatencyMetric::duration).size(), 1u);
  EXPECT_TRUE(w.latency(t0 + 70s, LatencyMetric::duration).empty());
}

TEST(FlatSet64, AgreesWithAStdSetThroughInsertsGrowthAndEraseIf) {
  FlatSet64 flat;
  std::unordered_set<std::uint64_t> ref;
  std::uint64_t state = 7;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    // Small values collide in the low bits and 0 is the empty marker: both on purpose.
    return (state >> 33) % 3 == 0 ? (state >> 60) : state;
  };
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t v = next();
    EXPECT_EQ(flat.insert(v), ref.insert(v).second) << v;
  }
  EXPECT_EQ(flat.size(), ref.size());
  EXPECT_TRUE(flat.contains(0));
  EXPECT_GE(flat.capacity(), 2 * flat.size()) << "at most half full";
  for (std::uint64_t v : ref) EXPECT_TRUE(flat.contains(v)) << v;
  const std::uint64_t t = ~std::uint64_t{0} / 4;
  flat.erase_if([t](std::uint64_t v) { return v > t || v == 0; });
  std::erase_if(ref, [t](std::uint64_t v) { return v > t || v == 0; });
  EXPECT_EQ(flat.size(), ref.size());
  EXPECT_FALSE(flat.contains(0));
  for (std::uint64_t v : ref) EXPECT_TRUE(flat.contains(v)) << v;
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t v = next();
    EXPECT_EQ(flat.contains(v), ref.count(v) == 1) << v;
  }
  flat.clear();
  EXPECT_EQ(flat.size(), 0u);
  EXPECT_EQ(flat.capacity(), 0u);
  EXPECT_FALSE(flat.contains(5));
}

TEST(DistinctUsers, CountsEachUserOnceInTheArmFirstSeen) {
  DistinctUsers u;
  u.add(Arm::canary, 1);
  u.add(Arm::canary, 1);
  u.add(Arm::control, 1);  // already counted on the canary
  u.add(Arm::control, 2);
  u.add(Arm::control, 3);
  auto c = u.counts();
  EXPECT_EQ(c.canary, 1u);
  EXPECT_EQ(c.control, 2u);
  EXPECT_EQ(c.sampled, 1);
  u.restart();
  EXPECT_EQ(u.counts().canary + u.counts().control, 0u);
}

TEST(DistinctUsers, SamplesByHashWhenFullAndKeepsTheSplit) {
  DistinctUsers u;
  std::uint64_t state = 42;
  auto next = [&] {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  constexpr int kUsers = 100000;
  for (int i = 0; i < kUsers; ++i) {
    const std::uint64_t h = next();
    u.add((h >> 7) % 10 == 0 ? Arm::canary : Arm::control, h);  // 10% on the canary
  }
  const auto c = u.counts();
  EXPECT_LE(c.canary + c.control, DistinctUsers::kMaxUsers);
  EXPECT_LT(c.sampled, 1);
  EXPECT_NEAR((c.canary + c.control) / c.sampled, kUsers, kUsers * 0.05);
  const double share = static_cast<double>(c.canary) / static_cast<double>(c.canary + c.control);
  EXPECT_NEAR(share, 0.1, 0.01);
}

TEST(DistinctUsers, ConcurrentAdds) {
  DistinctUsers u;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&u, t] {
      for (std::uint64_t i = 0; i < 3000; ++i) u.add(t % 2 ? Arm::canary : Arm::control, i * 4 + t);
    });
  }
  for (auto& th : threads) th.join();
  const auto c = u.counts();
  EXPECT_EQ(c.canary, 6000u);
  EXPECT_EQ(c.control, 6000u);
}

TEST(Windows, IdsAreUnique) {
  Windows a(60s), b(60s);
  EXPECT_NE(a.id(), b.id());
}

}  // namespace
}  // namespace canaryd::rollout
