#include "store/rollout_sync.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "common/log.hpp"
#include "rollout/controller.hpp"
#include "store/redis_topology.hpp"
#include "store/store.hpp"

namespace canaryd::store {
namespace {

namespace net = boost::asio;
using store::Reply;
using namespace std::chrono_literals;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
constexpr std::string_view kOp = "rollout";  // ai_proxy_redis_errors_total{op}
// Control-plane commands are not latency-critical; a 20 ms request-path
// timeout would fail them spuriously under load.
constexpr std::chrono::milliseconds kMinCommandTimeout{250};
constexpr int kMaxRounds = 8;  // compare-and-set retries per sync round

// The stored state's version, or nil: shared by the scripts below.
#define CANARYD_LUA_VERSION_OF                                                  \
  "local function version_of(v)\n"                                              \
  "  if not v then return nil end\n"                                            \
  "  local ok, doc = pcall(cjson.decode, v)\n"                                  \
  "  if ok and type(doc) == 'table' then return tonumber(doc['version']) end\n" \
  "  return nil\n"                                                              \
  "end\n"

// KEYS: state, lease, events [, the same three in the layout before issue 16,
// kept in step on a single node and Sentinel]. ARGV: expected version ('' =
// no state may exist), new value, new version, lease owner ('' = no lease
// needed). The stored state is the newer of the two layouts.
// -> {1} written; {0, stored or ''} version conflict; {2, stored or ''} lease not held.
constexpr const char* kCasScript = CANARYD_LUA_VERSION_OF R"lua(
local cur = redis.call('GET', KEYS[1])
if #KEYS == 6 then
  local old = redis.call('GET', KEYS[4])
  if old and (not cur or (version_of(old) or -1) > (version_of(cur) or -1)) then cur = old end
end
if ARGV[1] == '' then
  if cur then return {0, cur} end
else
  if not cur then return {0, ''} end
  local ok, doc = pcall(cjson.decode, cur)
  if not ok or type(doc) ~= 'table' or tostring(doc['version']) ~= ARGV[1] then return {0, cur} end
end
if ARGV[4] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[4] then return {2, cur or ''} end
  if #KEYS == 6 and redis.call('GET', KEYS[5]) ~= ARGV[4] then return {2, cur or ''} end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100', '*', 'version', ARGV[3])
if #KEYS == 6 then
  redis.call('SET', KEYS[4], ARGV[2])
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', '100', '*', 'version', ARGV[3])
end
return {1}
)lua";

// KEYS: the lease [, the old layout's]. ARGV: owner, ttl ms. -> 1 held by
// owner (renewed or acquired, in every layout), 0 held by another.
constexpr const char* kLeaseScript = R"lua(
for i = 1, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if cur and cur ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1
)lua";

// KEYS: state, the old layout's state -> the newer of the two, or nil.
constexpr const char* kReadScript = CANARYD_LUA_VERSION_OF R"lua(
local cur = redis.call('GET', KEYS[1])
local old = redis.call('GET', KEYS[2])
if not old then return cur end
if not cur then return old end
if (version_of(old) or -1) > (version_of(cur) or -1) then return old end
return cur
)lua";

#undef CANARYD_LUA_VERSION_OF

// Built outside the coroutines: g++ 12 rejects braced lists inside them.
template <class... A>
std::vector<std::string> args(A&&... a) {
  std::vector<std::string> v;
  v.reserve(sizeof...(a));
  (v.emplace_back(std::forward<A>(a)), ...);
  return v;
}

std::string make_replica_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", rd());
  return std::string(host[0] ? host : "canaryd") + ":" + std::to_string(getpid()) + ":" + suffix;
}

// The stored value carried by a GET or a script reply: nullopt = no key.
std::optional<std::string> stored_value(const Reply& r) {
  if (r.type == Reply::Type::string && !r.str.empty()) return r.str;
  return std::nullopt;
}

}  // namespace

std::shared_ptr<RolloutSync> RolloutSync::create(net::any_io_executor executor, const config::Config& config,
                                                 rollout::RolloutController& controller,
                                                 store::RedisClient::ErrorSink on_error,
                                                 std::shared_ptr<RedisTopology> topology) {
  return std::make_shared<RolloutSync>(Private{}, std::move(executor), config, controller, std::move(on_error),
                                       std::move(topology));
}

RolloutSync::Keys RolloutSync::keys(const std::string& ns, const std::string& experiment) {
  // The experiment's namespace, as its pins use it ("<ns>" or "<ns>:<experiment>").
  const std::string tag = "{" + store::pin_namespace(ns, experiment) + "}";
  return {tag + ":rollout", tag + ":rollout:lease", tag + ":rollout:events"};
}

RolloutSync::Keys RolloutSync::legacy_keys(const std::string& ns) {
  return {ns + ":rollout", ns + ":rollout:lease", ns + ":rollout:events"};
}

RolloutSync::RolloutSync(Private, net::any_io_executor executor, const config::Config& config,
                         rollout::RolloutController& controller, store::RedisClient::ErrorSink on_error,
                         std::shared_ptr<RedisTopology> topology)
    : executor_(std::move(executor)),
      controller_(controller),
      replica_id_(make_replica_id()),
      wake_timer_(executor_),
      events_timer_(executor_) {
  const config::RedisConfig& redis = *config.redis;
  keys_ = keys(redis.ns, controller.experiment());
  legacy_ = legacy_keys(redis.ns);
  // Only the default experiment existed before issue 16.
  const bool is_default = controller.experiment() == config::kDefaultExperiment;
  both_layouts_ = is_default && redis.mode != config::RedisMode::cluster;
  legacy_checked_ = !is_default;
  auto tls = redis.tls ? store::RedisClient::make_tls_context(redis) : nullptr;
  // Both connections follow one watcher: the process's, or one of our own
  // (its failovers are not counted: the process's watcher counts them).
  if (!topology) {
    own_topology_ = RedisTopology::create(executor_, redis, {{}, tls});
    topology = own_topology_;
  }
  store::RedisClient::Options options;
  options.on_error = on_error;
  options.tls = tls;
  options.topology = topology;
  config::RedisConfig state_cfg = redis;
  state_cfg.timeout = std::max<config::Duration>(redis.timeout, kMinCommandTimeout);
  client_ = store::RedisClient::create(executor_, state_cfg, options);
  // Long enough for the blocking read itself plus a slow round trip.
  config::RedisConfig events_cfg = redis;
  events_cfg.timeout = kEventsBlock + std::max<config::Duration>(redis.timeout, 1s);
  events_ = store::RedisClient::create(executor_, events_cfg, options);
}

void RolloutSync::start() {
  std::weak_ptr<RolloutSync> weak = shared_from_this();
  controller_.enable_shared([weak] {
    auto self = weak.lock();
    if (!self) return;
    net::post(self->executor_, [weak] {
      if (auto s = weak.lock()) s->wake();
    });
  });
  spawn(&RolloutSync::run);
  spawn(&RolloutSync::watch);
}

void RolloutSync::spawn(Loop loop) {
  std::weak_ptr<RolloutSync> weak = shared_from_this();
  net::co_spawn(executor_, loop(shared_from_this()), [weak, loop](std::exception_ptr e) {
    // Only allocation failure can throw in the loops; without them the state
    // would silently stop being shared, so start over.
    if (!e) return;
    auto self = weak.lock();
    if (!self || self->stopped_) return;
    log::error("rollout sync loop failed; restarting it");
    self->spawn(loop);
  });
}

void RolloutSync::stop() {
  if (stopped_) return;
  stopped_ = true;
  wake_timer_.cancel();
  events_timer_.cancel();
  client_->stop();
  events_->stop();
  if (own_topology_) own_topology_->stop();
}

bool RolloutSync::loaded() const { return controller_.shared_loaded(); }

void RolloutSync::wake() {
  wake_pending_ = true;
  wake_timer_.cancel();
}

std::chrono::milliseconds RolloutSync::lease_ttl() const {
  return std::max<std::chrono::milliseconds>(
      3s, 3 * std::chrono::duration_cast<std::chrono::milliseconds>(controller_.analysis_interval()));
}

// The argument lists are built in plain functions: g++ 12 miscompiles
// temporaries (a conditional, a std::to_string) inside a co_await expression.
std::vector<std::string> RolloutSync::lease_args() const {
  const std::string ttl = std::to_string(lease_ttl().count());
  if (both_layouts_) return args("EVAL", kLeaseScript, "2", keys_.lease, legacy_.lease, replica_id_, ttl);
  return args("EVAL", kLeaseScript, "1", keys_.lease, replica_id_, ttl);
}

std::vector<std::string> RolloutSync::cas_args(const rollout::RolloutController::SharedWrite& write) const {
  std::string expected = write.expected ? std::to_string(*write.expected) : std::string();
  std::string owner = write.needs_lease ? replica_id_ : std::string();
  if (both_layouts_) {
    return args("EVAL", kCasScript, "6", keys_.state, keys_.lease, keys_.events, legacy_.state, legacy_.lease,
                legacy_.events, std::move(expected), write.value, std::to_string(write.version), std::move(owner));
  }
  return args("EVAL", kCasScript, "3", keys_.state, keys_.lease, keys_.events, std::move(expected), write.value,
              std::to_string(write.version), std::move(owner));
}

std::vector<std::string> RolloutSync::read_args() const {
  if (both_layouts_) return args("EVAL", kReadScript, "2", keys_.state, legacy_.state);
  return args("GET", keys_.state);
}

// Every writer writes the old layout's stream while both are kept (replicas
// from before issue 16 write only that one): the one to watch.
std::vector<std::string> RolloutSync::xread_args(const std::string& last) const {
  return args("XREAD", "COUNT", "16", "BLOCK", std::to_string(kEventsBlock.count()), "STREAMS",
              both_layouts_ ? legacy_.events : keys_.events, last);
}

net::awaitable<void> RolloutSync::run(std::shared_ptr<RolloutSync> self) {
  while (!self->stopped_) {
    co_await self->sync_once();
    if (self->stopped_) break;
    if (self->wake_pending_) {
      self->wake_pending_ = false;
      continue;
    }
    self->wake_timer_.expires_after(kPollInterval);
    co_await self->wake_timer_.async_wait(kAwait);
    self->wake_pending_ = false;
  }
}

net::awaitable<bool> RolloutSync::copy_legacy_state() {
  std::vector<std::string> argv = args("GET", keys_.state);
  Reply r = co_await client_->command(argv, kOp);
  if (!r.ok()) co_return false;
  if (r.type == Reply::Type::string) co_return true;  // the new layout has a state already
  argv = args("GET", legacy_.state);
  r = co_await client_->command(argv, kOp);
  if (!r.ok()) co_return false;
  if (r.type != Reply::Type::string) co_return true;  // nothing to copy
  argv = args("SET", keys_.state, r.str, "NX");
  r = co_await client_->command(argv, kOp);
  if (!r.ok()) co_return false;
  log::info("rollout state found under the key layout before issue 16; copied",
            {{"from", legacy_.state}, {"to", keys_.state}});
  co_return true;
}

net::awaitable<bool> RolloutSync::renew_lease() {
  const auto argv = lease_args();
  Reply r = co_await client_->command(argv, kOp);
  co_return r.ok() && r.type == Reply::Type::integer&& r.integer == 1;
}

net::awaitable<void> RolloutSync::sync_once() {
  if (!client_->connected()) {
    // Commands would fail at once; the client's connect loop counts the outage.
    controller_.set_shared_healthy(false);
    controller_.set_lease(false);
    co_return;
  }
  if (!both_layouts_ && !legacy_checked_) {
    // Cluster: a state written under the old key (copied over from another
    // Redis, say) becomes the state of the new layout, once.
    if (!co_await copy_legacy_state()) {
      controller_.set_shared_healthy(false);
      co_return;
    }
    legacy_checked_ = true;
  }
  const bool held = co_await renew_lease();
  controller_.set_lease(held);
  if (stopped_) co_return;

  auto malformed = [&] {
    client_->report_error(kOp);
    controller_.set_shared_healthy(false);
    log::warn("the shared rollout state in Redis is malformed; keeping the local state",
              {{"key", keys_.state}, {"experiment", controller_.experiment()}});
  };

  // g++ 12 mis-destroys non-trivial locals declared inside a loop body that
  // suspends and then `continue`s (free(): invalid pointer at start-up): every
  // object that lives across a co_await is declared outside the loop.
  bool fetched = false;
  std::vector<std::string> argv;
  Reply r;
  std::optional<rollout::RolloutController::SharedWrite> write;
  std::optional<std::string> stored;
  for (int round = 0; round < kMaxRounds && !stopped_; ++round) {
    write = controller_.shared_pending();
    if (!write) {
      if (fetched) break;
      argv = read_args();
      r = co_await client_->command(argv, kOp);
      if (!r.ok() || (r.type != Reply::Type::string && r.type != Reply::Type::nil)) {
        if (r.ok()) client_->report_error(kOp);
        controller_.set_shared_healthy(false);
        co_return;
      }
      fetched = true;
      if (!controller_.shared_observed(stored_value(r))) {
        malformed();
        co_return;
      }
    } else {
      argv = cas_args(*write);
      r = co_await client_->command(argv, kOp);
      if (!r.ok() || r.type != Reply::Type::array || r.elements.empty() || r.elements[0].type != Reply::Type::integer) {
        if (r.ok()) client_->report_error(kOp);
        controller_.set_shared_healthy(false);
        co_return;
      }
      fetched = true;
      const long long code = r.elements[0].integer;
      if (code == 1) {
        controller_.shared_written(*write);
        log::debug("rollout state written", {{"version", write->version}, {"replica", replica_id_}});
      } else {
        stored.reset();
        if (r.elements.size() > 1) stored = stored_value(r.elements[1]);
        if (code == 2) {
          // The lease moved on between our renewal and this write: our advance is void.
          controller_.set_lease(false);
        }
        if (!controller_.shared_observed(stored, /*force=*/code == 2)) {
          malformed();
          co_return;
        }
      }
    }
  }
}

net::awaitable<void> RolloutSync::watch(std::shared_ptr<RolloutSync> self) {
  // "$" = only entries added after the call; from the first entry on we
  // continue from its id, so nothing between two reads is missed.
  std::string last = "$";
  std::vector<std::string> xread;  // outside the loop: see sync_once()
  Reply r;
  while (!self->stopped_) {
    bool pause = !self->events_->connected();
    if (!pause) {
      xread = self->xread_args(last);
      r = co_await self->events_->command(xread, kOp);
      if (self->stopped_) break;
      if (!r.ok()) {
        pause = true;
      } else if (r.type == Reply::Type::array && !r.elements.empty()) {
        const Reply& stream = r.elements.front();
        if (stream.type == Reply::Type::array && stream.elements.size() == 2 &&
            stream.elements[1].type == Reply::Type::array && !stream.elements[1].elements.empty()) {
          const Reply& entry = stream.elements[1].elements.back();
          if (entry.type == Reply::Type::array && !entry.elements.empty() &&
              entry.elements[0].type == Reply::Type::string) {
            last = entry.elements[0].str;
          }
        }
        self->wake();
      }
    }
    if (pause) {
      // The 500 ms poll carries on meanwhile; this only avoids a busy loop.
      self->events_timer_.expires_after(kPollInterval);
      co_await self->events_timer_.async_wait(kAwait);
    }
  }
}

}  // namespace canaryd::store
