#include "store/redis_store.hpp"

#include <boost/asio/post.hpp>

#include <array>

namespace canaryd::store {

using namespace std::chrono_literals;

RedisStore::RedisStore(std::shared_ptr<RedisClient> client) : client_(std::move(client)) {}

RedisStore::~RedisStore() {
  if (client_) boost::asio::post(client_->executor(), [client = client_] { client->stop(); });
}

boost::asio::awaitable<bool> RedisStore::pin_canary(std::string key, std::chrono::seconds ttl) {
  if (ttl <= 0s) co_return true;  // pinning off: nothing to remember
  // Our own reference: `this` is not touched after the first suspension, so a
  // store torn down at shutdown cannot be used by a pin still in flight.
  auto client = client_;
  std::string seconds = std::to_string(ttl.count());
  const std::array<std::string_view, 6> args = {"SET", key, arm_name(Arm::canary), "NX", "EX", seconds};
  Reply reply = co_await client->command(std::span<const std::string_view>(args), "pin");
  if (!reply.ok()) co_return false;  // counted by the client
  if (reply.type == Reply::Type::nil || (reply.type == Reply::Type::status && reply.str == "OK")) co_return true;
  client->report_error("pin");
  co_return false;
}

boost::asio::awaitable<std::optional<bool>> RedisStore::has_canary_pin(std::string key) {
  auto client = client_;
  const std::array<std::string_view, 2> args = {"GET", key};
  Reply reply = co_await client->command(std::span<const std::string_view>(args), "pin");
  if (!reply.ok()) co_return std::nullopt;  // counted by the client
  if (reply.type == Reply::Type::nil) co_return false;
  if (reply.type == Reply::Type::string) {
    if (reply.str == arm_name(Arm::canary)) co_return true;
    if (reply.str == arm_name(Arm::control)) co_return false;
  }
  // Something else under our key: not ours to interpret; decide by hash.
  client->report_error("pin");
  co_return std::nullopt;
}

}  // namespace canaryd::store
