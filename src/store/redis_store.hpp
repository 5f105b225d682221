// The Redis-backed assignment store (SPEC §4): pins shared by every replica.
// One RedisStore per I/O thread, each over its own RedisClient (one pipelined
// connection), so a pin is one round trip on the caller's thread and never
// blocks it. Fail-open: any failure or timeout is std::nullopt (the caller
// decides by hash alone) and is counted as ai_proxy_redis_errors_total{op="pin"}.
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

  // SET key arm NX GET EX ttl (Redis >= 7.0): nil means our value was stored.
  boost::asio::awaitable<std::optional<Arm>> pin(std::string key, Arm proposed,
                                                 std::chrono::seconds ttl) override;
  std::string_view name() const override { return "redis"; }
  bool healthy() const override { return client_->healthy(); }

  RedisClient& client() { return *client_; }
  const std::shared_ptr<RedisClient>& client_ptr() const { return client_; }

 private:
  std::shared_ptr<RedisClient> client_;
};

}  // namespace canaryd::store
