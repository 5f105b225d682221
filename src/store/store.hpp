// The assignment store: where a user who was served the canary is pinned for
// split.pin_ttl (SPEC §4). One interface, two implementations: MemoryStore (one
// replica, in process) and RedisStore (shared across replicas;
// src/store/redis_store.hpp). A store may fail or be slow; it reports that as
// failure and the caller decides by hash alone, so a store can never hurt a
// request.
//
// Only canary pins are stored. Pins are upgrade-only (docs/split.md): a pin
// keeps a user on the canary when the weight is lowered, while raising the
// weight must still move users control -> canary. A stored control pin would
// serve no purpose, and worse, with set-if-absent it would block the canary pin
// that a raised weight has to record. Each request makes exactly one store call:
// the hash says canary -> pin_canary(); the hash says control -> has_canary_pin().
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
#include "canaryd/config.hpp"

namespace canaryd::store {

class AssignmentStore {
 public:
  virtual ~AssignmentStore() = default;

  // Records a canary pin for `key` unless one exists (SET key canary NX EX ttl:
  // an existing pin keeps its first TTL, so a user's pin is not extended by
  // every request). False when the store failed or timed out; ttl <= 0 (pinning
  // off) stores nothing and is true. Never throws. Safe from any I/O thread.
  virtual boost::asio::awaitable<bool> pin_canary(std::string key, std::chrono::seconds ttl) = 0;
  // Whether `key` holds a live canary pin. nullopt when the store failed or
  // timed out. Never throws. Safe from any I/O thread.
  virtual boost::asio::awaitable<std::optional<bool>> has_canary_pin(std::string key) = 0;
  virtual std::string_view name() const = 0;  // "memory" / "redis"
  virtual bool healthy() const = 0;
};

// "<ns>:pin:<epoch>:<hex of the first 16 bytes of SHA-256(sticky_key)>".
// Hashing keeps user ids out of the store and bounds the key length; the epoch
// (bumped by a rollback) makes every older pin unreachable at once.
std::string pin_key(std::string_view ns, std::uint64_t epoch, std::string_view sticky_key);

// The `ns` of pin_key for an experiment (issue 17): redis.namespace for the
// experiment "default" (the keys of canaryd before experiments), else
// "<namespace>:<experiment>", so one experiment's pins never answer another's.
std::string pin_namespace(std::string_view ns, std::string_view experiment);

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

  boost::asio::awaitable<bool> pin_canary(std::string key, std::chrono::seconds ttl) override;
  boost::asio::awaitable<std::optional<bool>> has_canary_pin(std::string key) override;
  std::string_view name() const override { return "memory"; }
  bool healthy() const override { return true; }

  // The synchronous cores of pin_canary() and has_canary_pin(), for callers and
  // tests without a coroutine.
  void pin_canary_now(const std::string& key, std::chrono::seconds ttl);
  bool has_canary_pin_now(const std::string& key) const;

  // Entries held, expired ones not yet dropped included.
  std::size_t size() const;
  std::size_t max_entries() const { return max_entries_; }

 private:
  struct Shard;
  Shard& shard_for(const std::string& key) const;

  const Clock& clock_;
  std::size_t max_entries_;
  std::size_t shard_count_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace canaryd::store
