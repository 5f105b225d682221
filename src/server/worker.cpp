#include "server/worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <malloc.h>

#include <algorithm>

#include "server/session.hpp"

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
  parked_.for_each([&](ParkedConnection& p) {  // idle by definition
    if (!p.closing) {
      close_parked(p);
      ++closed;
    }
  });
  return closed;
}

// The readiness wait of a parked connection; Asio places its operation in
// the entry's own bytes (ParkedOpAllocator).
struct ParkedWait {
  Worker* worker;
  ParkedConnection* entry;
  using allocator_type = ParkedOpAllocator<void>;
  allocator_type get_allocator() const noexcept { return allocator_type(entry); }
  void operator()(const boost::system::error_code& ec) const { worker->unpark(entry, ec); }
};

void Worker::park(boost::asio::ip::tcp::socket socket, std::string peer_ip, const SessionHandle& idle) {
  ParkedConnection* p = parked_.add(std::move(socket), std::move(peer_ip), idle.idle_since, idle.idle_limit);
  app_.parked_connections.fetch_add(1, std::memory_order_relaxed);
  p->socket->async_wait(boost::asio::ip::tcp::socket::wait_read, ParkedWait{this, p});
  if (!idle_armed_) arm_idle_sweep();
}

void Worker::close_parked(ParkedConnection& p) {
  boost::beast::error_code ec;
  p.closing = true;
  p.socket->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
  p.socket->cancel(ec);  // its wait ends (operation_aborted) and unpark closes it
}

// The parked wait ended: readable (a request, or the client's FIN, which the
// new session reads as end of stream), or closed here. The entry goes either
// way; its count in App::connections passes to the new session.
void Worker::unpark(ParkedConnection* p, const boost::system::error_code& ec) {
  boost::asio::ip::tcp::socket socket = std::move(*p->socket);
  std::string peer_ip = std::move(p->peer_ip);
  const bool closing = p->closing;
  parked_.remove(p);
  app_.parked_connections.fetch_sub(1, std::memory_order_relaxed);
  if (ec || closing) {
    boost::beast::error_code ignored;
    socket.close(ignored);
    app_.connections.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  boost::asio::co_spawn(ioc_, run_session(*this, std::move(socket), std::move(peer_ip), /*resumed=*/true),
                        boost::asio::detached);
}

namespace {
// Spare read buffers kept per thread: enough for the sessions that read at
// once on one thread; beyond it a released buffer is freed.
constexpr std::size_t kSpareBuffers = 16;
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
  const std::size_t live_sessions = sessions_.size();
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
  parked_.for_each([&](ParkedConnection& p) {
    if (p.closing) return;
    if (now - p.idle_since < p.idle_limit) {
      waiting = true;
    } else {
      close_parked(p);
    }
  });
  // Upstream connections kept idle as long as a client connection keeps its
  // buffer shed their stream and buffer in the same sweep, before the trim.
  ctx_->compact_idle_pools(now, kKeepBuffer);
  maybe_trim(now, live_sessions);
  if (waiting) arm_idle_sweep();  // only while sessions wait: an idle worker does not wake up
}

// After a burst, the sessions that served it have parked and freed their
// frames and buffers, which glibc keeps in its heap (the next burst reuses
// them, but the RSS stays at the burst's peak). Once kTrimAfterParks more
// connections are parked than at the last trim, and no session is left on
// this thread (nothing in flight, none in its keep-buffer window: every
// connection parked), the free pages go back to the system. malloc_trim
// holds the arena lock for its walk (3.3-3.5 ms after a 1,000-connection
// burst here), hence "no session left": no request of this thread waits on
// it, and at most one per kTrimEvery.
void Worker::maybe_trim(std::chrono::steady_clock::time_point now, std::size_t live_sessions) {
  trim_mark_ = std::min(trim_mark_, parked_.size());
  if (live_sessions != 0 || parked_.size() < trim_mark_ + kTrimAfterParks || now - last_trim_ < kTrimEvery) return;
  malloc_trim(0);
  ++trims_;
  trim_mark_ = parked_.size();
  last_trim_ = now;
}

}  // namespace canaryd::server
