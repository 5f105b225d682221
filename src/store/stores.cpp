#include "store/stores.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>

#include "metrics/metrics.hpp"
#include "store/redis_store.hpp"
#include "store/redis_topology.hpp"

namespace canaryd::store {

Stores::Stores() = default;
Stores::Stores(Stores&&) noexcept = default;
Stores& Stores::operator=(Stores&&) noexcept = default;
Stores::~Stores() = default;

AssignmentStore* Stores::for_thread(std::size_t index, boost::asio::io_context& ioc) {
  if (!redis_) return memory_.get();
  if (index >= redis_stores_.size()) redis_stores_.resize(index + 1);
  auto& slot = redis_stores_[index];
  if (!slot) {
    if (redis_->mode != config::RedisMode::standalone && !topology_) {
      topology_ = RedisTopology::create(ioc.get_executor(), *redis_, {on_event_, tls_});
    }
    RedisClient::Options options;
    options.on_error = on_error_;
    options.on_event = on_event_;
    options.tls = tls_;
    options.topology = topology_;
    slot = std::make_unique<RedisStore>(RedisClient::create(ioc.get_executor(), *redis_, std::move(options)));
  }
  return slot.get();
}

std::string Stores::kind() const { return redis_ ? "redis" : "memory"; }

bool Stores::healthy() const {
  for (const auto& store : redis_stores_) {
    if (store && !store->healthy()) return false;
  }
  return true;
}

void Stores::stop() {
  for (const auto& store : redis_stores_) {
    if (!store) continue;
    boost::asio::post(store->client_ptr()->executor(), [client = store->client_ptr()] { client->stop(); });
  }
  if (topology_) topology_->stop();
}

Stores make_stores(const config::Config& cfg, std::size_t threads, metrics::Metrics* metrics, const Clock& clock) {
  Stores stores;
  if (!cfg.redis) {
    stores.memory_ = std::make_unique<MemoryStore>(clock);
    return stores;
  }
  stores.redis_ = *cfg.redis;
  if (metrics) {
    stores.on_error_ = [metrics](std::string_view op) { metrics->add_redis_error(op); };
    stores.on_event_ = [metrics](RedisEvent event) {
      switch (event) {
        case RedisEvent::failover: metrics->add_redis_failover(); break;
        case RedisEvent::moved: metrics->add_redis_redirect("moved"); break;
        case RedisEvent::ask: metrics->add_redis_redirect("ask"); break;
        case RedisEvent::discovery_error: metrics->add_redis_discovery_error(); break;
      }
    };
  }
  if (cfg.redis->tls) stores.tls_ = RedisClient::make_tls_context(*cfg.redis);
  stores.redis_stores_.resize(threads);
  return stores;
}

}  // namespace canaryd::store
