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

namespace {
// Spare read buffers kept per thread: enough for the sessions that read at
// once on one thread; beyond it a released buffer is freed.
constexpr std::size_t kSpareBuffers = 64;
}  // namespace

boost::beast::flat_buffer Worker::take_buffer() {
  if (spare_buffers_.empty()) return {};
  boost::beast::flat_buffer b = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return b;
}

void Worker::give_buffer(boost::beast::flat_buffer&& buffer) {
  if (buffer.size() != 0) return;  // holds a pipelined request: the session keeps it
  if (spare_buffers_.size() < kSpareBuffers && buffer.capacity() <= 64 * 1024) {
    spare_buffers_.push_back(std::move(buffer));
  }
  buffer = boost::beast::flat_buffer();  // the session's own is now empty and holds no memory
}

void Worker::idle_started(SessionHandle* s, std::chrono::milliseconds limit) {
  s->idle_since = std::chrono::steady_clock::now();
  s->idle_limit = limit;
  s->demoted = false;
  if (!idle_armed_) arm_idle_sweep();
}

void Worker::arm_idle_sweep() {
  if (!idle_timer_) return;  // shutting down
  idle_armed_ = true;
  idle_timer_->expires_after(kIdleSweep);
  idle_timer_->async_wait([this](const boost::system::error_code& ec) {
    idle_armed_ = false;
    if (!ec) sweep_idle();
  });
}

void Worker::sweep_idle() {
  const auto now = std::chrono::steady_clock::now();
  bool waiting = false;
  for (auto* s : sessions_) {
    if (!s->idle || s->idle_limit.count() == 0) continue;
    if (now - s->idle_since < s->idle_limit) {
      waiting = true;
      if (s->reading && !s->demoted && now - s->idle_since >= kKeepBuffer) {
        boost::beast::error_code ec;
        s->demoted = true;
        s->stream->socket().cancel(ec);  // its read ends; the session hands its buffer back
      }
      continue;
    }
    boost::beast::error_code ec;
    s->idle_limit = std::chrono::milliseconds(0);  // closed once
    s->stream->socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    s->stream->socket().cancel(ec);
  }
  if (waiting) arm_idle_sweep();  // only while sessions wait: an idle worker does not wake up
}

}  // namespace canaryd::server
