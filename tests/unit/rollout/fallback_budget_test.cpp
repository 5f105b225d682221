#include "rollout/fallback_budget.hpp"

#include <gtest/gtest.h>

namespace canaryd::rollout {
namespace {

using namespace std::chrono_literals;

TEST(FallbackBudget, RatioAllowsWithoutTouchingFloor) {
  ManualClock clock;
  FallbackBudget b(0.2, {.per_second = 5, .burst = 10});
  // 1000 requests, 199 fallbacks: under 20%.
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(b.allow(clock.now(), 1000, 199));
  // At the ratio, the floor's burst of 10 is still intact.
  int allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += b.allow(clock.now(), 1000, 200);
  EXPECT_EQ(allowed, 10);
}

TEST(FallbackBudget, FloorRefillsAtRate) {
  ManualClock clock;
  FallbackBudget b(0.2, {.per_second = 5, .burst = 10});
  int allowed = 0;
  for (int i = 0; i < 50; ++i) allowed += b.allow(clock.now(), 0, 0);  // no traffic: ratio never allows
  EXPECT_EQ(allowed, 10);
  clock.advance(1s);
  allowed = 0;
  for (int i = 0; i < 50; ++i) allowed += b.allow(clock.now(), 0, 0);
  EXPECT_EQ(allowed, 5);
  clock.advance(200ms);
  EXPECT_TRUE(b.allow(clock.now(), 0, 0));
  EXPECT_FALSE(b.allow(clock.now(), 0, 0));
  clock.advance(1h);  // refill caps at the burst
  allowed = 0;
  for (int i = 0; i < 50; ++i) allowed += b.allow(clock.now(), 0, 0);
  EXPECT_EQ(allowed, 10);
}

TEST(FallbackBudget, LowTrafficServiceStillGetsFallbacks) {
  ManualClock clock;
  FallbackBudget b(0.2);
  // 3 requests in the window, all failing: the ratio allows 0.6 -> 1 fallback,
  // the floor covers the rest.
  EXPECT_TRUE(b.allow(clock.now(), 3, 0));
  EXPECT_TRUE(b.allow(clock.now(), 3, 1));
  EXPECT_TRUE(b.allow(clock.now(), 3, 2));
}

TEST(FallbackBudget, ZeroBudgetIsFloorOnly) {
  ManualClock clock;
  FallbackBudget b(0.0, {.per_second = 1, .burst = 2});
  EXPECT_TRUE(b.allow(clock.now(), 1000000, 0));
  EXPECT_TRUE(b.allow(clock.now(), 1000000, 1));
  EXPECT_FALSE(b.allow(clock.now(), 1000000, 2));
  b.set_budget(0.5);
  EXPECT_EQ(b.budget(), 0.5);
  EXPECT_TRUE(b.allow(clock.now(), 1000000, 2));
}

}  // namespace
}  // namespace canaryd::rollout
