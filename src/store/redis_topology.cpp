#include "store/redis_topology.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>

#include "common/log.hpp"
#include "store/redis_link.hpp"

namespace canaryd::store {
namespace {

namespace net = boost::asio;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
constexpr std::string_view kSwitchMaster = "+switch-master";

// Built outside the coroutines: g++ 12 rejects braced lists inside them.
const std::string& cluster_slots_command() {
  static const std::string cmd = RedisLink::encode({"CLUSTER", "SLOTS"});
  return cmd;
}

std::string sentinel_master_command(const std::string& name) { return RedisLink::encode({"SENTINEL", "MASTER", name}); }

std::vector<std::string> subscribe_args() { return {"SUBSCRIBE", std::string(kSwitchMaster)}; }

std::optional<std::uint16_t> to_port(std::string_view text) {
  unsigned value = 0;
  auto res = std::from_chars(text.data(), text.data() + text.size(), value);
  if (res.ec != std::errc{} || res.ptr != text.data() + text.size() || value == 0 || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

std::vector<std::string_view> split_spaces(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const auto b = text.find_first_not_of(' ');
    if (b == std::string_view::npos) break;
    text.remove_prefix(b);
    const auto e = text.find(' ');
    out.push_back(text.substr(0, e));
    if (e == std::string_view::npos) break;
    text.remove_prefix(e);
  }
  return out;
}

}  // namespace

// One sentinel's answer to SENTINEL MASTER <name>.
struct RedisTopology::SentinelAnswer {
  bool answered = false;
  Endpoint primary;
  long long epoch = -1;
  std::string error;
};

std::shared_ptr<RedisTopology> RedisTopology::create(Executor executor, const config::RedisConfig& config,
                                                     Options options) {
  if (config.mode == config::RedisMode::standalone) return nullptr;
  auto topology = std::make_shared<RedisTopology>(Private{}, std::move(executor), config, std::move(options));
  topology->start();
  return topology;
}

RedisTopology::RedisTopology(Private, Executor executor, const config::RedisConfig& config, Options options)
    : executor_(std::move(executor)),
      config_(config),
      options_(std::move(options)),
      query_timeout_(std::max<std::chrono::milliseconds>(kMinQueryTimeout, config.timeout)),
      wake_(executor_) {}

RedisTopology::~RedisTopology() = default;

std::shared_ptr<RedisLink> RedisTopology::make_link(std::function<Endpoint()> endpoint, std::string role,
                                                    std::vector<std::string> setup) {
  auto o = RedisLink::node_options(config_, options_.tls, std::move(endpoint), std::move(role));
  if (config_.mode == config::RedisMode::sentinel) {
    // The sentinels have their own password (requirepass), no ACL user, no db.
    o.username.clear();
    o.password = config_.sentinel_password_value;
    o.db = 0;
  }
  o.setup = std::move(setup);
  std::weak_ptr<RedisTopology> weak = shared_from_this();
  o.on_error = [weak](std::string_view) {
    if (auto self = weak.lock(); self && self->options_.on_event) self->options_.on_event(RedisEvent::discovery_error);
  };
  if (!o.setup.empty()) {
    // The subscription: messages are pushes; after every (re)subscription ask
    // again, since a switch announced while it was down was not heard.
    o.on_push = [weak](Reply message) {
      if (auto self = weak.lock()) self->on_sentinel_message(message);
    };
    o.on_connected = [weak] {
      if (auto self = weak.lock()) self->refresh();
    };
  }
  return RedisLink::create(executor_, std::move(o));
}

void RedisTopology::start() {
  if (config_.mode == config::RedisMode::sentinel) {
    for (const auto& node : config_.nodes) {
      const Endpoint ep{node.host, node.port};
      query_links_.push_back(make_link([ep] { return ep; }, "sentinel"));
      subscriptions_.push_back(make_link([ep] { return ep; }, "sentinel subscription", subscribe_args()));
    }
  } else {
    for (const auto& node : config_.nodes) candidates_.push_back({node.host, node.port});
    std::weak_ptr<RedisTopology> weak = shared_from_this();
    // The link runs on our executor, so reading candidates_ here needs no lock.
    query_links_.push_back(make_link(
        [weak]() -> Endpoint {
          auto self = weak.lock();
          if (!self || self->candidates_.empty()) return {};
          return self->candidates_[self->cursor_ % self->candidates_.size()];
        },
        "cluster node"));
  }
  std::weak_ptr<RedisTopology> weak = shared_from_this();
  net::co_spawn(executor_, run(shared_from_this()), [weak](std::exception_ptr e) {
    // Only allocation failure can throw; without the loop nothing would be
    // followed any more, so start it again.
    if (!e) return;
    auto self = weak.lock();
    if (!self || self->stopped_) return;
    log::error("redis: topology loop failed; restarting it");
    net::co_spawn(self->executor_, run(self), net::detached);
  });
}

Endpoint RedisTopology::primary() const {
  std::lock_guard lock(mu_);
  return primary_;
}

std::shared_ptr<const RedisTopology::SlotMap> RedisTopology::slot_map() const {
  std::lock_guard lock(mu_);
  return slot_map_;
}

std::uint64_t RedisTopology::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

std::string RedisTopology::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void RedisTopology::watch(Executor executor, std::weak_ptr<void> owner, std::function<void()> on_change) {
  std::lock_guard lock(mu_);
  std::erase_if(watchers_, [](const Watcher& w) { return w.owner.expired(); });
  watchers_.push_back({std::move(executor), std::move(owner), std::move(on_change)});
}

void RedisTopology::notify() {
  std::vector<Watcher> watchers;
  {
    std::lock_guard lock(mu_);
    watchers = watchers_;
  }
  for (auto& w : watchers) {
    if (w.owner.expired()) continue;
    net::post(w.executor, [owner = w.owner, fn = w.on_change] {
      if (auto alive = owner.lock()) fn();
    });
  }
}

void RedisTopology::refresh() {
  std::weak_ptr<RedisTopology> weak = shared_from_this();
  net::post(executor_, [weak] {
    auto self = weak.lock();
    if (!self || self->stopped_) return;
    self->refresh_pending_ = true;
    self->wake_.cancel();
  });
}

void RedisTopology::stop() {
  std::weak_ptr<RedisTopology> weak = shared_from_this();
  net::post(executor_, [weak] {
    auto self = weak.lock();
    if (!self || self->stopped_) return;
    self->stopped_ = true;
    self->wake_.cancel();
    for (auto& link : self->query_links_) link->stop();
    for (auto& link : self->subscriptions_) link->stop();
  });
}

net::awaitable<void> RedisTopology::run(std::shared_ptr<RedisTopology> self) {
  auto backoff = kMinRefreshInterval;
  while (!self->stopped_) {
    const auto started = Steady::now();
    self->refresh_pending_ = false;
    const bool ok = co_await self->look();
    if (self->stopped_) break;
    // Next look: when a client asks, else after the poll interval (sooner,
    // backing off, while nothing answers).
    if (ok) {
      backoff = kMinRefreshInterval;
    } else {
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, RedisClient::kMaxBackoff);
    }
    if (!self->refresh_pending_) {
      self->wake_.expires_after(ok ? kPollInterval : backoff);
      co_await self->wake_.async_wait(kAwait);
    }
    // Coalesce a burst of requests (every thread's client sees the same MOVED).
    while (!self->stopped_ && Steady::now() < started + kMinRefreshInterval) {
      self->wake_.expires_at(started + kMinRefreshInterval);
      co_await self->wake_.async_wait(kAwait);
    }
  }
}

net::awaitable<bool> RedisTopology::look() {
  if (config_.mode == config::RedisMode::sentinel) co_return co_await ask_sentinels();
  co_return co_await ask_cluster();
}

void RedisTopology::fail_look(std::string why) {
  {
    std::lock_guard lock(mu_);
    last_error_ = why;
  }
  if (why == logged_error_) return;
  logged_error_ = why;
  log::warn("redis: cannot find the primary", {{"error", why}});
}

// ---------------------------------------------------------------- Sentinel

net::awaitable<void> RedisTopology::ask_sentinel(std::shared_ptr<RedisTopology> self, std::size_t index,
                                                 std::shared_ptr<std::vector<SentinelAnswer>> answers,
                                                 std::shared_ptr<net::steady_timer> done,
                                                 std::shared_ptr<std::size_t> pending) {
  SentinelAnswer& answer = (*answers)[index];
  const auto deadline = Steady::now() + self->query_timeout_;
  auto link = self->query_links_[index];
  const std::string where = Endpoint{self->config_.nodes[index].host, self->config_.nodes[index].port}.text();
  if (!co_await link->ready(deadline)) {
    answer.error = link->last_error().empty() ? "sentinel " + where + ": not connected" : link->last_error();
  } else {
    const std::string query = sentinel_master_command(self->config_.master_name);
    Reply r = co_await link->exec(query, deadline);
    if (!r.ok()) {
      answer.error = "sentinel " + where + ": " + (r.failed ? r.str : "SENTINEL MASTER: " + r.str);
      if (self->options_.on_event) self->options_.on_event(RedisEvent::discovery_error);
    } else if (r.type == Reply::Type::array) {
      std::string_view ip, port, epoch;
      for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
        const std::string& k = r.elements[i].str;
        const std::string& v = r.elements[i + 1].str;
        if (k == "ip") ip = v;
        if (k == "port") port = v;
        if (k == "config-epoch") epoch = v;
      }
      const auto p = to_port(port);
      long long e = 0;
      std::from_chars(epoch.data(), epoch.data() + epoch.size(), e);
      if (!ip.empty() && p) {
        answer.answered = true;
        answer.primary = {std::string(ip), *p};
        answer.epoch = e;
      } else {
        answer.error = "sentinel " + where + ": no address in its answer";
      }
    } else {
      answer.error = "sentinel " + where + ": unexpected answer to SENTINEL MASTER";
    }
  }
  if (--*pending == 0) done->cancel();
}

net::awaitable<bool> RedisTopology::ask_sentinels() {
  auto self = shared_from_this();
  const std::size_t n = query_links_.size();
  auto answers = std::make_shared<std::vector<SentinelAnswer>>(n);
  auto done = std::make_shared<net::steady_timer>(executor_);
  done->expires_at(Steady::time_point::max());
  auto pending = std::make_shared<std::size_t>(n);
  const auto switches_before = switches_heard_;
  // All at once, each bounded by its own deadline: a dead sentinel costs no
  // more than a live one.
  for (std::size_t i = 0; i < n; ++i)
    net::co_spawn(executor_, ask_sentinel(self, i, answers, done, pending), net::detached);
  while (*pending > 0 && !stopped_) co_await done->async_wait(kAwait);
  if (stopped_) co_return false;
  if (switches_heard_ != switches_before) {
    // A +switch-master arrived while we asked: these answers may predate it
    // (following them would flip back to the dead primary and forth again).
    // The message queued another look, which confirms the switch.
    co_return true;
  }

  const SentinelAnswer* best = nullptr;
  std::string errors;
  for (const auto& a : *answers) {
    if (a.answered) {
      // The highest config-epoch is the latest failover any sentinel has seen.
      if (!best || a.epoch > best->epoch) best = &a;
    } else if (errors.find(a.error) == std::string::npos) {
      errors += (errors.empty() ? "" : "; ") + a.error;
    }
  }
  if (!best) {
    fail_look("no sentinel named the primary of \"" + config_.master_name + "\": " + errors);
    co_return false;
  }
  if (!logged_error_.empty()) {
    log::info("redis: sentinels answer again", {{"master", config_.master_name}});
    logged_error_.clear();
  }
  {
    std::lock_guard lock(mu_);
    last_error_.clear();
  }
  set_primary(best->primary, "sentinel");
  co_return true;
}

void RedisTopology::on_sentinel_message(const Reply& message) {
  // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
  if (message.type != Reply::Type::array || message.elements.size() != 3) return;
  if (message.elements[0].str != "message" || message.elements[1].str != kSwitchMaster) return;
  const auto fields = split_spaces(message.elements[2].str);
  if (fields.size() != 5 || fields[0] != config_.master_name) return;
  const auto port = to_port(fields[4]);
  if (!port) return;
  ++switches_heard_;
  set_primary({std::string(fields[3]), *port}, "+switch-master");
  refresh();  // confirm with every sentinel (the highest epoch wins)
}

void RedisTopology::set_primary(const Endpoint& next, std::string_view how) {
  Endpoint previous;
  {
    std::lock_guard lock(mu_);
    if (primary_ == next) return;
    previous = primary_;
    primary_ = next;
    ++version_;
  }
  if (previous.empty()) {
    log::info("redis: primary found", {{"master", config_.master_name}, {"node", next.text()}, {"via", how}});
  } else {
    log::warn("redis: following the new primary",
              {{"master", config_.master_name}, {"from", previous.text()}, {"to", next.text()}, {"via", how}});
    if (options_.on_event) options_.on_event(RedisEvent::failover);
  }
  notify();
}

// ---------------------------------------------------------------- Cluster

namespace {

// CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...].
// An empty host means the node that answered.
std::shared_ptr<RedisTopology::SlotMap> parse_slots(const Reply& r, const Endpoint& answered_by) {
  auto map = std::make_shared<RedisTopology::SlotMap>();
  for (const Reply& range : r.elements) {
    if (range.type != Reply::Type::array || range.elements.size() < 3) return nullptr;
    const Reply& first = range.elements[0];
    const Reply& last = range.elements[1];
    const Reply& node = range.elements[2];
    if (first.type != Reply::Type::integer || last.type != Reply::Type::integer || node.type != Reply::Type::array ||
        node.elements.size() < 2 || node.elements[1].type != Reply::Type::integer)
      return nullptr;
    if (first.integer < 0 || last.integer >= static_cast<long long>(RedisTopology::kSlots) ||
        first.integer > last.integer)
      return nullptr;
    Endpoint ep{node.elements[0].str, static_cast<std::uint16_t>(node.elements[1].integer)};
    if (ep.host == "?" || ep.port == 0) continue;  // a node without a known address serves nothing to us
    if (ep.host.empty()) ep.host = answered_by.host;
    auto it = std::find(map->primaries.begin(), map->primaries.end(), ep);
    const auto index = static_cast<std::uint16_t>(it - map->primaries.begin());
    if (it == map->primaries.end()) map->primaries.push_back(ep);
    std::fill(map->owner.begin() + first.integer, map->owner.begin() + last.integer + 1, index);
  }
  return map;
}

}  // namespace

net::awaitable<bool> RedisTopology::ask_cluster() {
  auto self = shared_from_this();
  auto link = query_links_.front();
  std::string errors;
  // Everything that lives across a co_await is declared outside the loop
  // (g++ 12 mis-destroys such locals of a suspending loop body).
  std::string error;
  Endpoint at;
  Reply r;
  Steady::time_point deadline;
  const std::size_t tries = candidates_.size();
  for (std::size_t i = 0; i < tries && !stopped_; ++i) {
    deadline = Steady::now() + query_timeout_;
    error.clear();
    if (!co_await link->ready(deadline)) {
      error = link->last_error().empty() ? "not connected" : link->last_error();
    } else {
      at = link->endpoint();
      r = co_await link->exec(cluster_slots_command(), deadline);
      if (r.ok() && r.type == Reply::Type::array) {
        if (auto map = parse_slots(r, at)) {
          // Ask the seeds and every primary seen, next time one fails.
          std::vector<Endpoint> next;
          for (const auto& node : config_.nodes) next.push_back({node.host, node.port});
          for (const auto& ep : map->primaries) {
            if (std::find(next.begin(), next.end(), ep) == next.end()) next.push_back(ep);
          }
          const Endpoint current = candidates_[cursor_ % candidates_.size()];
          candidates_ = std::move(next);
          const auto keep = std::find(candidates_.begin(), candidates_.end(), current);
          cursor_ = keep == candidates_.end() ? 0 : static_cast<std::size_t>(keep - candidates_.begin());
          if (!logged_error_.empty()) {
            log::info("redis: the cluster answers again", {{"node", at.text()}});
            logged_error_.clear();
          }
          {
            std::lock_guard lock(mu_);
            last_error_.clear();
          }
          set_slot_map(std::move(map));
          co_return true;
        }
        error = at.text() + ": CLUSTER SLOTS: unexpected answer";
      } else {
        error = at.text() + ": CLUSTER SLOTS: " + r.str;
      }
      if (options_.on_event) options_.on_event(RedisEvent::discovery_error);
    }
    if (errors.find(error) == std::string::npos) errors += (errors.empty() ? "" : "; ") + error;
    // The next node; a fresh connection to it right away.
    ++cursor_;
    link->reconnect();
  }
  fail_look("no cluster node answered CLUSTER SLOTS: " + errors);
  co_return false;
}

void RedisTopology::set_slot_map(std::shared_ptr<const SlotMap> next) {
  std::size_t covered = 0;
  for (auto owner : next->owner) covered += owner != SlotMap::kNoOwner;
  std::size_t primaries = next->primaries.size();
  {
    std::lock_guard lock(mu_);
    if (slot_map_ && *slot_map_ == *next) return;
    slot_map_ = std::move(next);
    ++version_;
  }
  log::info("redis: cluster slot map", {{"primaries", primaries}, {"slots", covered}});
  notify();
}

}  // namespace canaryd::store
