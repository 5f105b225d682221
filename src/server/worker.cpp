#include "server/worker.hpp"

namespace canaryd::server {

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

}  // namespace canaryd::server
