// The Redis-backed assignment store (SPEC §4): pins shared by every replica.
// One RedisStore per I/O thread, each over its own RedisClient (one pipelined
// connection), so a pin or a pin lookup is one round trip on the caller's
// thread and never blocks it. Fail-open: any failure or timeout is reported as
// such (the caller decides by hash alone) and is counted as
// ai_proxy_redis_errors_total{op="pin"} (both calls: they are the one pin step
// of a request).
#pragma once

#include <memory>

#include "store/redis_client.hpp"
#include "store/store.hpp"

namespace canaryd::store {

class RedisStore final : public AssignmentStore {
 public:
  explicit RedisStore(std::shared_ptr<RedisClient> client);
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

  RedisClient& client() { return *client_; }
  const std::shared_ptr<RedisClient>& client_ptr() const { return client_; }

 private:
  std::shared_ptr<RedisClient> client_;
};

}  // namespace canaryd::store
