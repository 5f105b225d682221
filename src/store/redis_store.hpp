// The Redis-backed assignment store (SPEC §4): pins shared by every replica.
// One RedisStore per I/O thread, each over its own RedisClient (one pipelined
// connection), so a pin or a pin lookup is one round trip on the caller's
// thread and never blocks it. Fail-open: any failure or timeout is reported as
// such (the caller decides by hash alone) and is counted as
// ai_proxy_redis_errors_total{op="pin"} (both calls: they are the one pin step
// of a request).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "store/redis_client.hpp"
#include "store/store.hpp"

namespace canaryd::store {

// The clients of every I/O thread, so that any thread can tell whether all of
// them are connected (/health). Filled once at start-up (Stores::for_thread),
// read by /health: a mutex is cheap at that rate.
class RedisHealthGroup {
 public:
  void add(std::weak_ptr<const RedisClient> client);
  // Every client added so far is healthy (true when none was added).
  bool healthy() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::weak_ptr<const RedisClient>> clients_;  // the stores own them
};

class RedisStore final : public AssignmentStore {
 public:
  // `group`: every I/O thread's client (Stores builds it), for all_healthy();
  // null: this store's own client only.
  explicit RedisStore(std::shared_ptr<RedisClient> client,
                      std::shared_ptr<const RedisHealthGroup> group = nullptr);
  // Posts stop() to the client's executor: safe from any thread.
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  // SET key canary NX EX ttl: "OK" (stored) or nil (a pin exists) are success.
  boost::asio::awaitable<bool> pin_canary(std::string key, std::chrono::seconds ttl) override;
  // GET key: "canary" -> true; nil -> false. A "control" value (written by a
  // canaryd from before pins were canary-only) counts as no canary pin.
  boost::asio::awaitable<std::optional<bool>> has_canary_pin(std::string key) override;
  std::string_view name() const override { return "redis"; }
  bool healthy() const override { return client_->healthy(); }
  bool all_healthy() const override;

  RedisClient& client() { return *client_; }
  const std::shared_ptr<RedisClient>& client_ptr() const { return client_; }

 private:
  std::shared_ptr<RedisClient> client_;
  std::shared_ptr<const RedisHealthGroup> group_;
};

}  // namespace canaryd::store
