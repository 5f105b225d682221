#include "rollout/window.hpp"

#include <gtest/gtest.h>

#include <thread>
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

}  // namespace
}  // namespace canaryd::rollout
