#include "store/store.hpp"

#include "split/split.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

namespace canaryd::store {
namespace {

using namespace std::chrono_literals;
namespace net = boost::asio;

// "prefix" + std::to_string(i) trips a GCC 12 -Wrestrict false positive (PR 105329).
std::string numbered(std::string prefix, int i) {
  prefix += std::to_string(i);
  return prefix;
}

// Drives an awaitable to completion on a private io_context, as an I/O thread would.
template <class T>
T run_sync(net::awaitable<T> aw) {
  net::io_context io;
  auto fut = net::co_spawn(io, std::move(aw), net::use_future);
  io.run();
  return fut.get();
}

TEST(MemoryStore, Identity) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_EQ(store.name(), "memory");
  EXPECT_TRUE(store.healthy());
  EXPECT_EQ(store.size(), 0u);
}

TEST(MemoryStore, CanaryPinIsRecordedAndFound) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_EQ(run_sync(store.has_canary_pin("k1")), false);
  EXPECT_TRUE(run_sync(store.pin_canary("k1", 3600s)));
  EXPECT_EQ(run_sync(store.has_canary_pin("k1")), true);
  EXPECT_EQ(run_sync(store.has_canary_pin("k2")), false);
  // A lookup stores nothing: a user seen only on control leaves no trace.
  EXPECT_EQ(store.size(), 1u);
}

TEST(MemoryStore, SecondPinKeepsTheFirstTtl) {
  ManualClock clock;
  MemoryStore store(clock);
  store.pin_canary_now("k", 60s);
  clock.advance(50s);
  store.pin_canary_now("k", 60s);  // NX: not extended to t=110
  clock.advance(9s);
  EXPECT_TRUE(store.has_canary_pin_now("k"));
  clock.advance(1s);  // t=60: the first pin's expiry
  EXPECT_FALSE(store.has_canary_pin_now("k"));
  EXPECT_EQ(store.size(), 1u);  // expired, not yet dropped
  // A new pin after expiry has its own TTL from now.
  store.pin_canary_now("k", 60s);
  clock.advance(59s);
  EXPECT_TRUE(store.has_canary_pin_now("k"));
  EXPECT_EQ(store.size(), 1u);
}

TEST(MemoryStore, ZeroTtlStoresNothing) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_TRUE(run_sync(store.pin_canary("k", 0s)));
  EXPECT_FALSE(store.has_canary_pin_now("k"));
  EXPECT_EQ(store.size(), 0u);
}

TEST(MemoryStore, BoundedEvictsOldestWhenNoneExpired) {
  ManualClock clock;
  MemoryStore store(clock, 100);
  for (int i = 0; i < 250; ++i) {
    EXPECT_TRUE(run_sync(store.pin_canary(numbered("k", i), 3600s)));
    EXPECT_LE(store.size(), 100u);
  }
  EXPECT_EQ(store.size(), 100u);
  // The newest 100 survive; the oldest were evicted.
  EXPECT_TRUE(store.has_canary_pin_now("k249"));
  EXPECT_TRUE(store.has_canary_pin_now("k150"));
  EXPECT_FALSE(store.has_canary_pin_now("k149"));
  EXPECT_FALSE(store.has_canary_pin_now("k0"));
  EXPECT_EQ(store.size(), 100u);
}

TEST(MemoryStore, BoundedPrefersExpiredOverOldest) {
  ManualClock clock;
  MemoryStore store(clock, 4);
  store.pin_canary_now("old-long", 3600s);  // oldest, still valid
  store.pin_canary_now("short-1", 10s);
  store.pin_canary_now("short-2", 10s);
  store.pin_canary_now("long", 3600s);
  clock.advance(20s);
  store.pin_canary_now("new", 3600s);  // full: both short ones expired, dropped
  EXPECT_EQ(store.size(), 3u);
  EXPECT_TRUE(store.has_canary_pin_now("old-long"));  // not evicted
  EXPECT_TRUE(store.has_canary_pin_now("new"));
}

TEST(MemoryStore, DefaultBoundIsShardedButExact) {
  ManualClock clock;
  MemoryStore store(clock, 64 * 1024);
  for (int i = 0; i < 80000; ++i) store.pin_canary_now(numbered("key-", i), 3600s);
  EXPECT_LE(store.size(), 64u * 1024u);
  EXPECT_GT(store.size(), 60000u);
}

TEST(MemoryStore, ConcurrentPinsAndLookupsFromFourThreads) {
  ManualClock clock;
  MemoryStore store(clock);
  constexpr int kKeys = 2000;
  constexpr int kThreads = 4;
  // Threads 0 and 1 pin the even keys; 2 and 3 look up every key. Afterwards
  // exactly the even keys are pinned, each once.
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      net::io_context io;
      net::co_spawn(
          io,
          [&]() -> net::awaitable<void> {
            for (int k = 0; k < kKeys; ++k) {
              if (t < 2 && k % 2 == 0) {
                bool ok = co_await store.pin_canary(numbered("key-", k), 3600s);
                EXPECT_TRUE(ok);
              } else if (t >= 2) {
                std::optional<bool> has = co_await store.has_canary_pin(numbered("key-", k));
                EXPECT_TRUE(has.has_value());
                if (k % 2 == 1) EXPECT_EQ(has, false) << k;
              }
            }
          },
          net::detached);
      io.run();
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(store.size(), static_cast<std::size_t>(kKeys / 2));
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(store.has_canary_pin_now(numbered("key-", k)), k % 2 == 0) << k;
}

// The issue #3 scenario, on the store and split::decide as the proxy combines
// them: 300 users first seen at weight 10, the weight raised to 50, then
// lowered to 10. Everyone served the canary at 50 stays on it at 10 (their pin
// was written when the raised weight's hash sent them there), and nobody else
// is on the canary.
TEST(MemoryStore, PinsAreUpgradeOnlyAcrossARaiseAndALowering) {
  ManualClock clock;
  MemoryStore store(clock);
  split::Splitter splitter(split::parse_sources({"header:X-User-ID"}), {}, "salt");
  auto serve = [&](const std::string& user, double weight) {
    Arm hash = splitter.hash_arm(user, split::weight_to_threshold(weight));
    std::string key = pin_key("canaryd", 0, user);
    std::optional<Arm> pin;
    if (hash == Arm::canary) {
      EXPECT_TRUE(run_sync(store.pin_canary(key, 3600s)));
    } else if (run_sync(store.has_canary_pin(key)) == true) {
      pin = Arm::canary;
    }
    return split::decide(std::nullopt, false, hash, pin).arm;
  };
  std::vector<std::string> users;
  for (int i = 0; i < 300; ++i) users.push_back(numbered("user-", i));

  std::set<std::string> at10, at50, back_at10;
  for (const auto& u : users) {
    if (serve(u, 10) == Arm::canary) at10.insert(u);
  }
  for (const auto& u : users) {
    if (serve(u, 50) == Arm::canary) at50.insert(u);
  }
  for (const auto& u : users) {
    if (serve(u, 10) == Arm::canary) back_at10.insert(u);
  }
  EXPECT_GT(at10.size(), 10u);
  EXPECT_LT(at10.size(), 60u);
  EXPECT_GT(at50.size(), 110u);
  EXPECT_TRUE(std::includes(at50.begin(), at50.end(), at10.begin(), at10.end())) << "raising moved a user off";
  EXPECT_EQ(back_at10, at50) << "lowering moved pinned users back to control";
  EXPECT_EQ(store.size(), at50.size());  // only canary pins are stored
}

TEST(PinKey, FormatAndHashing) {
  // python3 -c 'import hashlib;print(hashlib.sha256(b"user-42").hexdigest()[:32])'
  EXPECT_EQ(pin_key("canaryd", 3, "user-42"), "canaryd:pin:3:6d894aa3ee802549d7f340e7c1cf0d1c");
  EXPECT_NE(pin_key("canaryd", 4, "user-42"), pin_key("canaryd", 3, "user-42"));
  EXPECT_EQ(pin_key("ns", 0, std::string(10000, 'x')).size(), std::string("ns:pin:0:").size() + 32);
}

}  // namespace
}  // namespace canaryd::store
