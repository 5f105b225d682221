#include "store/store.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

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

// Drives the awaitable to completion on a private io_context, as an I/O thread would.
std::optional<Arm> pin_sync(AssignmentStore& store, std::string key, Arm proposed, std::chrono::seconds ttl) {
  net::io_context io;
  auto fut = net::co_spawn(io, store.pin(std::move(key), proposed, ttl), net::use_future);
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

TEST(MemoryStore, SetIfAbsentReturnsExisting) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_EQ(pin_sync(store, "k1", Arm::canary, 3600s), Arm::canary);
  EXPECT_EQ(pin_sync(store, "k1", Arm::control, 3600s), Arm::canary);  // first assignment sticks
  EXPECT_EQ(pin_sync(store, "k2", Arm::control, 3600s), Arm::control);
  EXPECT_EQ(pin_sync(store, "k2", Arm::canary, 3600s), Arm::control);
  EXPECT_EQ(store.size(), 2u);
}

TEST(MemoryStore, ExpiresAfterTtl) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_EQ(pin_sync(store, "k", Arm::canary, 60s), Arm::canary);
  clock.advance(59s);
  EXPECT_EQ(pin_sync(store, "k", Arm::control, 60s), Arm::canary);
  clock.advance(1s);  // now exactly at expiry: gone
  EXPECT_EQ(pin_sync(store, "k", Arm::control, 60s), Arm::control);
  // The new pin has its own TTL from now.
  clock.advance(30s);
  EXPECT_EQ(pin_sync(store, "k", Arm::canary, 60s), Arm::control);
  EXPECT_EQ(store.size(), 1u);
}

TEST(MemoryStore, ZeroTtlStoresNothing) {
  ManualClock clock;
  MemoryStore store(clock);
  EXPECT_EQ(pin_sync(store, "k", Arm::canary, 0s), Arm::canary);
  EXPECT_EQ(pin_sync(store, "k", Arm::control, 0s), Arm::control);
  EXPECT_EQ(store.size(), 0u);
}

TEST(MemoryStore, BoundedEvictsOldestWhenNoneExpired) {
  ManualClock clock;
  MemoryStore store(clock, 100);
  for (int i = 0; i < 250; ++i) {
    EXPECT_EQ(pin_sync(store, numbered("k", i), Arm::canary, 3600s), Arm::canary);
    EXPECT_LE(store.size(), 100u);
  }
  EXPECT_EQ(store.size(), 100u);
  // The newest 100 survive; the oldest were evicted and can be re-pinned.
  EXPECT_EQ(store.pin_now("k249", Arm::control, 3600s), Arm::canary);
  EXPECT_EQ(store.pin_now("k150", Arm::control, 3600s), Arm::canary);
  EXPECT_EQ(store.pin_now("k0", Arm::control, 3600s), Arm::control);
  EXPECT_EQ(store.size(), 100u);
}

TEST(MemoryStore, BoundedPrefersExpiredOverOldest) {
  ManualClock clock;
  MemoryStore store(clock, 4);
  store.pin_now("old-long", Arm::canary, 3600s);  // oldest, still valid
  store.pin_now("short-1", Arm::canary, 10s);
  store.pin_now("short-2", Arm::canary, 10s);
  store.pin_now("long", Arm::canary, 3600s);
  clock.advance(20s);
  store.pin_now("new", Arm::control, 3600s);  // full: both short ones expired, dropped
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.pin_now("old-long", Arm::control, 3600s), Arm::canary);  // not evicted
}

TEST(MemoryStore, DefaultBoundIsShardedButExact) {
  ManualClock clock;
  MemoryStore store(clock, 64 * 1024);
  for (int i = 0; i < 80000; ++i) store.pin_now(numbered("key-", i), Arm::canary, 3600s);
  EXPECT_LE(store.size(), 64u * 1024u);
  EXPECT_GT(store.size(), 60000u);
}

TEST(MemoryStore, ConcurrentPinsFromFourThreadsAgree) {
  ManualClock clock;
  MemoryStore store(clock);
  constexpr int kKeys = 2000;
  constexpr int kThreads = 4;
  // Each thread proposes a different arm per key; whichever lands first must
  // be what every thread is told.
  std::vector<std::vector<std::optional<Arm>>> results(kThreads, std::vector<std::optional<Arm>>(kKeys));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      net::io_context io;
      net::co_spawn(
          io,
          [&]() -> net::awaitable<void> {
            for (int k = 0; k < kKeys; ++k) {
              Arm proposed = (k + t) % 2 == 0 ? Arm::canary : Arm::control;
              results[t][k] = co_await store.pin(numbered("key-", k), proposed, 3600s);
            }
          },
          net::detached);
      io.run();
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(store.size(), static_cast<std::size_t>(kKeys));
  for (int k = 0; k < kKeys; ++k) {
    ASSERT_TRUE(results[0][k].has_value());
    for (int t = 1; t < kThreads; ++t) EXPECT_EQ(results[t][k], results[0][k]) << "key " << k;
    EXPECT_EQ(store.pin_now(numbered("key-", k), Arm::control, 3600s), results[0][k]);
  }
}

TEST(PinKey, FormatAndHashing) {
  // python3 -c 'import hashlib;print(hashlib.sha256(b"user-42").hexdigest()[:32])'
  EXPECT_EQ(pin_key("canaryd", 3, "user-42"), "canaryd:pin:3:6d894aa3ee802549d7f340e7c1cf0d1c");
  EXPECT_NE(pin_key("canaryd", 4, "user-42"), pin_key("canaryd", 3, "user-42"));
  EXPECT_EQ(pin_key("ns", 0, std::string(10000, 'x')).size(), std::string("ns:pin:0:").size() + 32);
}

}  // namespace
}  // namespace canaryd::store
