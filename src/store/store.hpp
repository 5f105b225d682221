// The assignment store: where a user's first arm is pinned for split.pin_ttl
// (SPEC §4). One interface, two implementations: MemoryStore (one replica, in
// process) and RedisStore (shared across replicas; src/store/redis_store.hpp).
// A store may fail or be slow; it reports that as std::nullopt and the caller
// decides by hash alone, so a store can never hurt a request.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "canaryd/arm.hpp"
#include "canaryd/clock.hpp"

namespace canaryd::store {

class AssignmentStore {
 public:
  virtual ~AssignmentStore() = default;

  // Records `proposed` as the pin of `key` unless one exists (SET NX semantics)
  // and returns the pin in force (the existing one, or `proposed`). nullopt when
  // the store failed or timed out. Never throws. Safe from any I/O thread.
  virtual boost::asio::awaitable<std::optional<Arm>> pin(std::string key, Arm proposed,
                                                         std::chrono::seconds ttl) = 0;
  virtual std::string_view name() const = 0;  // "memory" / "redis"
  virtual bool healthy() const = 0;
};

// "<ns>:pin:<epoch>:<hex of the first 16 bytes of SHA-256(sticky_key)>".
// Hashing keeps user ids out of the store and bounds the key length; the epoch
// (bumped by a rollback) makes every older pin unreachable at once.
std::string pin_key(std::string_view ns, std::uint64_t epoch, std::string_view sticky_key);

// The in-process store: sharded so I/O threads rarely contend, and bounded so a
// flood of distinct users cannot grow memory without limit (when a shard is
// full: drop its expired pins, else its oldest).
class MemoryStore final : public AssignmentStore {
 public:
  static constexpr std::size_t kDefaultMaxEntries = 1000000;

  explicit MemoryStore(const Clock& clock, std::size_t max_entries = kDefaultMaxEntries);
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  boost::asio::awaitable<std::optional<Arm>> pin(std::string key, Arm proposed,
                                                 std::chrono::seconds ttl) override;
  std::string_view name() const override { return "memory"; }
  bool healthy() const override { return true; }

  // The synchronous core of pin(), for callers and tests without a coroutine.
  std::optional<Arm> pin_now(const std::string& key, Arm proposed, std::chrono::seconds ttl);

  // Entries held, expired ones not yet dropped included.
  std::size_t size() const;
  std::size_t max_entries() const { return max_entries_; }

 private:
  struct Shard;
  Shard& shard_for(const std::string& key);

  const Clock& clock_;
  std::size_t max_entries_;
  std::size_t shard_count_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace canaryd::store
