#include "proxy/context.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "common/access_log.hpp"
#include "store/store.hpp"

namespace canaryd::proxy {

namespace {

std::vector<ExperimentRuntime> make_experiments(const config::Config& c) {
  std::vector<ExperimentRuntime> out;
  const std::string_view ns = c.redis ? std::string_view(c.redis->ns) : std::string_view("canaryd");
  for (const auto& e : c.experiments) {
    out.push_back({split::Splitter(split::parse_sources(e.split.sticky_key),
                                   split::CidrSet::parse(c.server.trusted_proxies), e.split.salt),
                   &c.upstreams.at(e.split.control), &c.upstreams.at(e.split.canary),
                   store::pin_namespace(ns, e.name)});
  }
  return out;
}

std::atomic<std::uint64_t> g_generation{0};

}  // namespace

Runtime::Runtime(std::shared_ptr<const config::Config> cfg)
    : config(std::move(cfg)),
      experiments(make_experiments(*config)),
      unmatched(&config->unmatched_upstream()),
      generation(++g_generation) {
  for (const auto& [name, up] : config->upstreams) {
    if (up.tls) tls.emplace(name, upstream::make_tls_context(up));
  }
}

ThreadContext::ThreadContext(const boost::asio::any_io_executor& ex)
    : executor_(ex), access_flush_(std::in_place, ex), watches(ex) {}

ThreadContext::~ThreadContext() = default;

void ThreadContext::shutdown() {
  if (access_) access_->flush();
  access_flush_.reset();
  pools_.clear();
  watches.shutdown();
}

void ThreadContext::flush_access() {
  if (access_) access_->flush();
}

void ThreadContext::access(log::AccessLog& log, const log::AccessRecord& record) {
  if (!access_) access_ = std::make_unique<log::AccessBatch>(log);
  if (!access_->write(record) || !access_flush_) return;
  // The first line of a batch arms the flush; a full batch flushes itself.
  access_flush_->expires_after(log::AccessBatch::kFlushInterval);
  access_flush_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec && access_) access_->flush();
  });
}

std::shared_ptr<upstream::Pool> ThreadContext::pool(const Runtime& rt, const config::UpstreamConfig& up, int threads) {
  if (pools_generation_ != rt.generation) {
    // A reload: new requests get new pools (the upstream may have changed);
    // requests in flight keep the old ones through their shared_ptr.
    pools_.clear();
    pools_generation_ = rt.generation;
  }
  auto it = pools_.find(up.name);
  if (it != pools_.end()) return it->second;
  std::uint32_t share =
      (up.max_connections + static_cast<std::uint32_t>(threads) - 1) / static_cast<std::uint32_t>(threads);
  std::shared_ptr<boost::asio::ssl::context> tls;
  if (auto t = rt.tls.find(up.name); t != rt.tls.end()) tls = t->second;
  const std::uint32_t idle_share =
      (up.max_idle_connections + static_cast<std::uint32_t>(threads) - 1) / static_cast<std::uint32_t>(threads);
  auto pool = std::make_shared<upstream::Pool>(executor_, up, tls, share, idle_share);
  pools_.emplace(up.name, pool);
  return pool;
}

std::size_t ThreadContext::compact_idle_pools(std::chrono::steady_clock::time_point now,
                                              std::chrono::steady_clock::duration after) {
  std::size_t n = 0;
  for (auto& [name, pool] : pools_) n += pool->compact_idle(now, after);
  return n;
}

ClientWatch::ClientWatch(WatchList& list, int fd, upstream::Connection** current)
    : list_(list), fd_(fd), current_(current) {
  list_.watch(this);
}

ClientWatch::~ClientWatch() { stop(); }

void ClientWatch::stop() {
  if (watched_) list_.unwatch(this);
}

void WatchList::watch(ClientWatch* w) {
  w->watched_ = true;
  w->index_ = watches_.size();
  watches_.push_back(w);
  if (!armed_) arm();
}

void WatchList::arm() {
  if (!timer_) return;  // shut down
  armed_ = true;
  timer_->expires_after(kSweep);
  timer_->async_wait([this](const boost::system::error_code& ec) {
    armed_ = false;
    if (!ec) sweep();
  });
}

void WatchList::unwatch(ClientWatch* w) {
  w->watched_ = false;
  // Swap-remove: O(1), order does not matter.
  ClientWatch* last = watches_.back();
  watches_[w->index_] = last;
  last->index_ = w->index_;
  watches_.pop_back();
}

void WatchList::sweep() {
  for (ClientWatch* w : watches_) {
    if (w->gone_) continue;
    char byte;
    const ssize_t n = ::recv(w->fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) continue;
    w->gone_ = true;
    if (*w->current_) (*w->current_)->close();
  }
  // Re-armed only while calls are watched.
  if (!watches_.empty()) arm();
}

}  // namespace canaryd::proxy
