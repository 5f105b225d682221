#include "server/worker.hpp"

namespace canaryd::server {

std::shared_ptr<upstream::Pool> Worker::pool(const Runtime& rt, const config::UpstreamConfig& up, int threads) {
  if (pools_generation_ != rt.generation) {
    // A reload: new requests get new pools (the upstream may have changed);
    // requests in flight keep the old ones through their shared_ptr.
    pools_.clear();
    pools_generation_ = rt.generation;
  }
  auto it = pools_.find(up.name);
  if (it != pools_.end()) return it->second;
  std::uint32_t share = (up.max_connections + static_cast<std::uint32_t>(threads) - 1) /
                        static_cast<std::uint32_t>(threads);
  std::shared_ptr<boost::asio::ssl::context> tls;
  if (auto t = rt.tls.find(up.name); t != rt.tls.end()) tls = t->second;
  auto pool = std::make_shared<upstream::Pool>(ioc_.get_executor(), up, tls, share);
  pools_.emplace(up.name, pool);
  return pool;
}

std::size_t Worker::close_sessions(bool all) {
  std::size_t closed = 0;
  for (auto* s : sessions_) {
    if (all || s->idle) {
      boost::beast::error_code ec;
      s->stream->socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
      s->stream->socket().cancel(ec);
      ++closed;
    }
  }
  return closed;
}

}  // namespace canaryd::server
