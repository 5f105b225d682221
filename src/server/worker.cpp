#include "server/worker.hpp"

#include <sys/socket.h>

#include <cerrno>

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

const std::shared_ptr<const Runtime>& Worker::runtime() {
  const std::uint64_t g = app_.generation.load(std::memory_order_acquire);
  if (g != runtime_generation_ || !runtime_) {
    auto shared = app_.current();
    runtime_generation_ = shared->generation;
    // A control block of this thread's own that holds the shared reference.
    auto holder = std::make_shared<std::shared_ptr<const Runtime>>(std::move(shared));
    const Runtime* raw = holder->get();
    runtime_ = std::shared_ptr<const Runtime>(std::move(holder), raw);
  }
  return runtime_;
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

ClientWatch::ClientWatch(Worker& worker, int fd, upstream::Connection** current)
    : worker_(worker), fd_(fd), current_(current) {
  worker_.watch(this);
}

ClientWatch::~ClientWatch() { stop(); }

void ClientWatch::stop() {
  if (watched_) worker_.unwatch(this);
}

void Worker::watch(ClientWatch* w) {
  w->watched_ = true;
  w->index_ = watches_.size();
  watches_.push_back(w);
  if (!sweep_armed_) arm_sweep();
}

void Worker::arm_sweep() {
  sweep_armed_ = true;
  sweep_timer_.expires_after(kSweep);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    sweep_armed_ = false;
    if (!ec) sweep();
  });
}

void Worker::unwatch(ClientWatch* w) {
  w->watched_ = false;
  // Swap-remove: O(1), order does not matter.
  ClientWatch* last = watches_.back();
  watches_[w->index_] = last;
  last->index_ = w->index_;
  watches_.pop_back();
}

void Worker::sweep() {
  for (ClientWatch* w : watches_) {
    if (w->gone_) continue;
    char byte;
    const ssize_t n = ::recv(w->fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) continue;
    w->gone_ = true;
    if (*w->current_) (*w->current_)->close();
  }
  if (watches_.empty()) return;
  // Re-armed only while calls are watched: an idle worker does not wake up.
  arm_sweep();
}

}  // namespace canaryd::server
