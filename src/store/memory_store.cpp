#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "store/store.hpp"

namespace canaryd::store {
namespace {

using namespace std::chrono_literals;

// Below this many entries one shard is enough, and keeps the bound exact and
// "oldest" global, which is what a small test or a tiny deployment expects.
constexpr std::size_t kMaxShards = 64;
constexpr std::size_t kMinEntriesPerShard = 1024;
// A full scan for expired pins costs O(shard); do it at most this often per
// shard, otherwise evict the oldest (with one TTL for all, the oldest is also
// the first to expire, so the two rarely differ).
constexpr auto kSweepInterval = 1s;

}  // namespace

struct MemoryStore::Shard {
  // Only canary pins are stored (store.hpp), so an entry needs no arm.
  struct Entry {
    Clock::Steady::time_point expires;
    std::uint64_t seq;  // matches the insertion record in `order`
  };

  std::mutex mu;
  std::unordered_map<std::string, Entry> entries;
  // Insertion order (pins are set once, so this is age order). Records whose
  // entry is gone or was re-inserted are stale and skipped lazily.
  std::deque<std::pair<std::string, std::uint64_t>> order;
  std::size_t cap = 1;
  std::uint64_t next_seq = 0;
  std::optional<Clock::Steady::time_point> last_sweep;

  bool live(const std::pair<std::string, std::uint64_t>& rec) const {
    auto it = entries.find(rec.first);
    return it != entries.end() && it->second.seq == rec.second;
  }

  void sweep_expired(Clock::Steady::time_point now) {
    std::erase_if(entries, [&](const auto& kv) { return kv.second.expires <= now; });
    last_sweep = now;
  }

  void evict_oldest() {
    while (!order.empty()) {
      auto rec = std::move(order.front());
      order.pop_front();
      if (live(rec)) {
        entries.erase(rec.first);
        return;
      }
    }
  }

  // Keeps `order` within a constant factor of `entries`, so stale records
  // cannot grow without bound.
  void compact_order() {
    if (order.size() <= 2 * entries.size() + 64) return;
    std::deque<std::pair<std::string, std::uint64_t>> kept;
    for (auto& rec : order) {
      if (live(rec)) kept.push_back(std::move(rec));
    }
    order.swap(kept);
  }

  void make_room(Clock::Steady::time_point now) {
    if (!last_sweep || now - *last_sweep >= kSweepInterval) sweep_expired(now);
    while (entries.size() >= cap) evict_oldest();
  }
};

MemoryStore::MemoryStore(const Clock& clock, std::size_t max_entries)
    : clock_(clock), max_entries_(max_entries == 0 ? 1 : max_entries) {
  shard_count_ = max_entries_ >= kMaxShards * kMinEntriesPerShard ? kMaxShards : 1;
  shards_ = std::make_unique<Shard[]>(shard_count_);
  // Spread the bound exactly: the shards' caps add up to max_entries.
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shards_[i].cap = max_entries_ / shard_count_ + (i < max_entries_ % shard_count_ ? 1 : 0);
  }
}

MemoryStore::~MemoryStore() = default;

MemoryStore::Shard& MemoryStore::shard_for(const std::string& key) const {
  return shards_[std::hash<std::string>{}(key) % shard_count_];
}

void MemoryStore::pin_canary_now(const std::string& key, std::chrono::seconds ttl) {
  if (ttl <= 0s) return;  // pinning off: nothing to remember
  auto now = clock_.now();
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mu);
  if (auto it = shard.entries.find(key); it != shard.entries.end()) {
    if (it->second.expires > now) return;  // NX: the first pin keeps its TTL
    shard.entries.erase(it);
  }
  if (shard.entries.size() >= shard.cap) shard.make_room(now);
  std::uint64_t seq = shard.next_seq++;
  shard.entries.emplace(key, Shard::Entry{now + ttl, seq});
  shard.order.emplace_back(key, seq);
  shard.compact_order();
}

bool MemoryStore::has_canary_pin_now(const std::string& key) const {
  auto now = clock_.now();
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.entries.find(key);
  // An expired entry is left for the next sweep or overwrite: a read stays a read.
  return it != shard.entries.end() && it->second.expires > now;
}

boost::asio::awaitable<bool> MemoryStore::pin_canary(std::string key, std::chrono::seconds ttl) {
  bool ok = true;
  try {
    pin_canary_now(key, ttl);
  } catch (...) {
    // Only allocation can fail here; the caller serves the canary anyway.
    ok = false;
  }
  co_return ok;
}

boost::asio::awaitable<std::optional<bool>> MemoryStore::has_canary_pin(std::string key) {
  co_return has_canary_pin_now(key);
}

std::size_t MemoryStore::size() const {
  std::size_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    total += shards_[i].entries.size();
  }
  return total;
}

}  // namespace canaryd::store
