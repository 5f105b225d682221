#include "store/redis_store.hpp"

#include <boost/asio/post.hpp>

#include <array>

namespace canaryd::store {

using namespace std::chrono_literals;

RedisStore::RedisStore(std::shared_ptr<RedisClient> client) : client_(std::move(client)) {}

RedisStore::~RedisStore() {
  if (client_) boost::asio::post(client_->executor(), [client = client_] { client->stop(); });
}

boost::asio::awaitable<std::optional<Arm>> RedisStore::pin(std::string key, Arm proposed,
                                                           std::chrono::seconds ttl) {
  if (ttl <= 0s) co_return proposed;  // pinning off: nothing to remember
  // Our own reference: `this` is not touched after the first suspension, so a
  // store torn down at shutdown cannot be used by a pin still in flight.
  auto client = client_;
  std::string seconds = std::to_string(ttl.count());
  const std::array<std::string_view, 7> args = {"SET", key, arm_name(proposed), "NX", "GET", "EX", seconds};
  Reply reply = co_await client->command(std::span<const std::string_view>(args), "pin");
  if (!reply.ok()) co_return std::nullopt;  // counted by the client
  if (reply.type == Reply::Type::nil) co_return proposed;
  if (reply.type == Reply::Type::string) {
    if (reply.str == arm_name(Arm::canary)) co_return Arm::canary;
    if (reply.str == arm_name(Arm::control)) co_return Arm::control;
  }
  // Something else under our key: not ours to interpret; decide by hash.
  client->report_error("pin");
  co_return std::nullopt;
}

}  // namespace canaryd::store
