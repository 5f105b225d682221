#include "store/redis_client.hpp"

#include <hiredis/hiredis.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "store/redis_link.hpp"
#include "store/redis_topology.hpp"

namespace canaryd::store {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
constexpr std::size_t kInlineArgs = 16;
constexpr int kAnySlot = -1;

// RESP-encodes one command with hiredis. Empty on allocation failure. The
// request path's encoder: no allocation for the argument arrays.
template <class It>
std::string encode(It first, std::size_t argc) {
  std::array<const char*, kInlineArgs> ptr_inline;
  std::array<std::size_t, kInlineArgs> len_inline;
  std::vector<const char*> ptr_heap;
  std::vector<std::size_t> len_heap;
  const char** ptrs = ptr_inline.data();
  std::size_t* lens = len_inline.data();
  if (argc > kInlineArgs) {
    ptr_heap.resize(argc);
    len_heap.resize(argc);
    ptrs = ptr_heap.data();
    lens = len_heap.data();
  }
  for (std::size_t i = 0; i < argc; ++i, ++first) {
    std::string_view arg(*first);
    ptrs[i] = arg.data();
    lens[i] = arg.size();
  }
  char* out = nullptr;
  int len = redisFormatCommandArgv(&out, static_cast<int>(argc), ptrs, lens);
  if (len < 0 || out == nullptr) return {};
  std::string cmd(out, static_cast<std::size_t>(len));
  redisFreeCommand(out);
  return cmd;
}

// CRC16-CCITT (XMODEM), the Redis Cluster key hash.
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> table{};
  for (unsigned i = 0; i < 256; ++i) {
    unsigned crc = i << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
    table[i] = static_cast<std::uint16_t>(crc & 0xffff);
  }
  return table;
}
constexpr auto kCrc16 = make_crc16_table();

std::uint16_t crc16(std::string_view data) {
  std::uint16_t crc = 0;
  for (unsigned char c : data) crc = static_cast<std::uint16_t>((crc << 8) ^ kCrc16[((crc >> 8) ^ c) & 0xff]);
  return crc;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

// The hash slot a command goes to: its first key's. Commands without a key
// (PING, SCRIPT, CLUSTER, ...) may go to any primary.
template <class It>
int route_slot(It first, std::size_t argc) {
  if (argc < 2) return kAnySlot;
  auto arg = [&](std::size_t i) {
    auto it = first;
    std::advance(it, static_cast<std::ptrdiff_t>(i));
    return std::string_view(*it);
  };
  const std::string_view name = arg(0);
  if (iequals(name, "EVAL") || iequals(name, "EVALSHA") || iequals(name, "EVAL_RO") || iequals(name, "EVALSHA_RO") ||
      iequals(name, "FCALL") || iequals(name, "FCALL_RO")) {
    if (argc < 4 || arg(2) == "0") return kAnySlot;
    return RedisClient::key_slot(arg(3));
  }
  if (iequals(name, "XREAD") || iequals(name, "XREADGROUP")) {
    for (std::size_t i = 1; i + 1 < argc; ++i) {
      if (iequals(arg(i), "STREAMS")) return RedisClient::key_slot(arg(i + 1));
    }
    return kAnySlot;
  }
  static constexpr std::string_view kKeyless[] = {
      "PING",   "ECHO",    "INFO",    "TIME",  "DBSIZE",   "CLIENT",    "CLUSTER", "SCRIPT",    "FLUSHALL", "FLUSHDB",
      "CONFIG", "COMMAND", "KEYS",    "SCAN",  "AUTH",     "SELECT",    "HELLO",   "ROLE",      "WAIT",     "ACL",
      "MEMORY", "SLOWLOG", "LATENCY", "DEBUG", "LASTSAVE", "RANDOMKEY", "PUBLISH", "SUBSCRIBE", "READONLY"};
  for (auto k : kKeyless) {
    if (iequals(name, k)) return kAnySlot;
  }
  return RedisClient::key_slot(arg(1));
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381".
struct Redirect {
  bool moved = false;
  std::uint16_t slot = 0;
  Endpoint to;
};

std::optional<Redirect> parse_redirect(std::string_view error) {
  Redirect r;
  if (error.starts_with("MOVED ")) {
    r.moved = true;
    error.remove_prefix(6);
  } else if (error.starts_with("ASK ")) {
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const auto space = error.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  unsigned slot = 0;
  auto sres = std::from_chars(error.data(), error.data() + space, slot);
  if (sres.ec != std::errc{} || slot >= RedisTopology::kSlots) return std::nullopt;
  std::string_view addr = error.substr(space + 1);
  const auto colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  unsigned port = 0;
  auto pres = std::from_chars(addr.data() + colon + 1, addr.data() + addr.size(), port);
  if (pres.ec != std::errc{} || port == 0 || port > 65535) return std::nullopt;
  std::string_view host = addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  r.slot = static_cast<std::uint16_t>(slot);
  r.to = {std::string(host), static_cast<std::uint16_t>(port)};
  return r;
}

}  // namespace

std::string Endpoint::text() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::uint16_t RedisClient::key_slot(std::string_view key) {
  // A {hash tag}: only what is between the first '{' and the next '}' is
  // hashed, when it is not empty, so keys sharing a tag share a slot.
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    if (const auto close = key.find('}', open + 1); close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return static_cast<std::uint16_t>(crc16(key) & (RedisTopology::kSlots - 1));
}

// Cluster mode: one link per primary and the slot -> link table, both kept
// on the client's thread; the mutex is for healthy() from other threads.
class RedisClient::Cluster {
 public:
  static constexpr std::uint16_t kNone = 0xffff;
  struct Node {
    Endpoint endpoint;
    std::shared_ptr<RedisLink> link;
  };

  std::vector<Node> nodes;    // the map's primaries first, then redirection targets
  std::size_t map_nodes = 0;  // how many of `nodes` are the map's primaries
  std::vector<std::uint16_t> slots = std::vector<std::uint16_t>(RedisTopology::kSlots, kNone);
  bool known = false;     // a slot map has been applied
  mutable std::mutex mu;  // nodes, map_nodes, known: written here, read by healthy()

  std::uint16_t find(const Endpoint& ep) const {
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].endpoint == ep) return static_cast<std::uint16_t>(i);
    }
    return kNone;
  }
};

std::shared_ptr<RedisClient> RedisClient::create(Executor executor, config::RedisConfig config, ErrorSink on_error,
                                                 std::shared_ptr<ssl::context> tls) {
  Options options;
  options.on_error = std::move(on_error);
  options.tls = std::move(tls);
  return create(std::move(executor), std::move(config), std::move(options));
}

std::shared_ptr<RedisClient> RedisClient::create(Executor executor, config::RedisConfig config, Options options) {
  if (config.tls && !options.tls) options.tls = make_tls_context(config);
  auto client = std::make_shared<RedisClient>(Private{}, std::move(executor), std::move(config), std::move(options));
  client->start();
  return client;
}

std::shared_ptr<ssl::context> RedisClient::make_tls_context(const config::RedisConfig& config) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) throw std::runtime_error("redis: cannot load the system CA certificates: " + ec.message());
  if (!config.ca_file.empty()) {
    ctx->load_verify_file(config.ca_file, ec);
    if (ec) throw std::runtime_error("redis.ca_file: cannot load '" + config.ca_file + "': " + ec.message());
  }
  return ctx;
}

RedisClient::RedisClient(Private, Executor executor, config::RedisConfig config, Options options)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      options_(std::move(options)),
      timeout_(std::max(config_.timeout, std::chrono::milliseconds(1))),
      topology_(options_.topology) {}

RedisClient::~RedisClient() = default;

std::shared_ptr<RedisLink> RedisClient::make_node_link(const Endpoint& ep) {
  auto o = RedisLink::node_options(
      config_, options_.tls, [ep] { return ep; }, "cluster node");
  o.on_error = options_.on_error;
  // A node lost may be a node failed over or removed: ask for the map again.
  std::weak_ptr<RedisTopology> weak_topology = topology_;
  o.on_failed = [weak_topology](std::string_view) {
    if (auto t = weak_topology.lock()) t->refresh();
  };
  return RedisLink::create(executor_, std::move(o));
}

void RedisClient::start() {
  std::weak_ptr<RedisClient> weak = shared_from_this();
  if (config_.mode == config::RedisMode::standalone) {
    const Endpoint ep = config_.nodes.empty() ? Endpoint{config_.host, config_.port}
                                              : Endpoint{config_.nodes[0].host, config_.nodes[0].port};
    auto o = RedisLink::node_options(
        config_, options_.tls, [ep] { return ep; }, "redis");
    o.on_error = options_.on_error;
    link_ = RedisLink::create(executor_, std::move(o));
    return;
  }
  if (!topology_) {
    topology_ = RedisTopology::create(executor_, config_, {options_.on_event, options_.tls});
    owns_topology_ = true;
  }
  auto topology = topology_;
  if (config_.mode == config::RedisMode::sentinel) {
    auto o = RedisLink::node_options(
        config_, options_.tls, [topology] { return topology->primary(); }, "redis primary");
    o.on_error = options_.on_error;
    // A lost primary may mean a failover the subscription has not told us about.
    o.on_failed = [topology](std::string_view) { topology->refresh(); };
    link_ = RedisLink::create(executor_, std::move(o));
  } else {
    cluster_ = std::make_unique<Cluster>();
  }
  topology_->watch(executor_, weak, [weak] {
    if (auto self = weak.lock()) self->topology_changed();
  });
  // The shared topology may know the answer already (no change would tell us).
  net::post(executor_, [weak] {
    if (auto self = weak.lock()) self->topology_changed();
  });
}

void RedisClient::topology_changed() {
  if (stopped_) return;
  if (link_) {
    const Endpoint primary = topology_->primary();
    if (primary.empty() || (link_->connected() && link_->endpoint() == primary)) return;
    link_->reconnect();  // to the new primary, at once
    return;
  }
  auto map = topology_->slot_map();
  if (!map) return;
  Cluster& c = *cluster_;
  std::vector<Cluster::Node> next;
  next.reserve(map->primaries.size());
  for (const auto& ep : map->primaries) {
    const auto have = c.find(ep);
    next.push_back(have != Cluster::kNone ? c.nodes[have] : Cluster::Node{ep, make_node_link(ep)});
  }
  // Links to nodes that serve no slot any more are stopped once their
  // commands had time to be answered (or to time out).
  const auto linger = std::max(std::chrono::milliseconds(1000), 50 * timeout_);
  for (const auto& node : c.nodes) {
    if (std::any_of(next.begin(), next.end(), [&](const Cluster::Node& n) { return n.endpoint == node.endpoint; }))
      continue;
    auto timer = std::make_shared<net::steady_timer>(executor_, linger);
    timer->async_wait([timer, link = node.link](const error_code&) { link->stop(); });
  }
  for (std::size_t s = 0; s < RedisTopology::kSlots; ++s) c.slots[s] = map->owner[s];
  std::lock_guard lock(c.mu);
  c.nodes = std::move(next);
  c.map_nodes = c.nodes.size();
  c.known = true;
}

std::uint64_t RedisClient::connects() const {
  if (link_) return link_->connects();
  std::uint64_t n = 0;
  if (cluster_) {
    for (const auto& node : cluster_->nodes) n += node.link->connects();
  }
  return n;
}

std::size_t RedisClient::in_flight() const {
  if (link_) return link_->in_flight();
  std::size_t n = 0;
  if (cluster_) {
    for (const auto& node : cluster_->nodes) n += node.link->in_flight();
  }
  return n;
}

const std::string& RedisClient::last_error() const {
  // The topology's error first: without a primary to connect to, why the
  // sentinels (or the cluster) did not name one is the cause.
  if (topology_) {
    last_error_ = topology_->last_error();
    if (!last_error_.empty()) return last_error_;
  }
  if (link_ && !link_->last_error().empty()) return link_->last_error();
  if (cluster_) {
    for (const auto& node : cluster_->nodes) {
      if (!node.link->last_error().empty()) return node.link->last_error();
    }
  }
  last_error_ = topology_ ? topology_->last_error() : std::string();
  return last_error_;
}

bool RedisClient::healthy() const {
  if (link_) return link_->healthy();
  if (!cluster_) return false;
  std::lock_guard lock(cluster_->mu);
  if (!cluster_->known || cluster_->map_nodes == 0) return false;
  for (std::size_t i = 0; i < cluster_->map_nodes; ++i) {
    if (!cluster_->nodes[i].link->healthy()) return false;
  }
  return true;
}

bool RedisClient::connected() const {
  if (link_) return link_->connected();
  if (!cluster_ || !cluster_->known) return false;
  return std::any_of(cluster_->nodes.begin(),
                     cluster_->nodes.begin() + static_cast<std::ptrdiff_t>(cluster_->map_nodes),
                     [](const Cluster::Node& n) { return n.link->connected(); });
}

void RedisClient::report_error(std::string_view op) const {
  if (options_.on_error) options_.on_error(op);
}

net::awaitable<Reply> RedisClient::command(const std::vector<std::string>& argv, std::string_view op) {
  return submit(encode(argv.begin(), argv.size()), cluster_ ? route_slot(argv.begin(), argv.size()) : kAnySlot, op);
}

net::awaitable<Reply> RedisClient::command(std::span<const std::string_view> argv, std::string_view op) {
  return submit(encode(argv.begin(), argv.size()), cluster_ ? route_slot(argv.begin(), argv.size()) : kAnySlot, op);
}

net::awaitable<Reply> RedisClient::command(std::initializer_list<std::string_view> argv, std::string_view op) {
  return submit(encode(argv.begin(), argv.size()), cluster_ ? route_slot(argv.begin(), argv.size()) : kAnySlot, op);
}

net::awaitable<Reply> RedisClient::submit(std::string cmd, int slot, std::string_view op) {
  return run_command(shared_from_this(), std::move(cmd), slot, op);
}

net::awaitable<Reply> RedisClient::run_command(std::shared_ptr<RedisClient> self, std::string cmd, int slot,
                                               std::string_view op) {
  // One deadline for the whole command, redirections included.
  const auto deadline = Steady::now() + self->timeout_;
  Reply reply;
  if (cmd.empty()) {
    reply = Reply::failure("encode failed");
  } else if (self->stopped_) {
    reply = Reply::failure("stopped");
  } else if (self->link_) {
    reply = co_await self->link_->exec(cmd, deadline);
    // A primary demoted to a replica answers writes with READONLY: the
    // sentinels have (or are about to have) another primary for us.
    if (self->topology_ && reply.type == Reply::Type::error && reply.str.starts_with("READONLY"))
      self->topology_->refresh();
  } else {
    Cluster& c = *self->cluster_;
    std::uint16_t index = Cluster::kNone;
    if (!c.known) {
      reply = Reply::failure("cluster slot map not known yet");
    } else if (slot == kAnySlot) {
      for (std::size_t i = 0; i < c.map_nodes && index == Cluster::kNone; ++i) {
        if (c.nodes[i].link->connected()) index = static_cast<std::uint16_t>(i);
      }
      if (index == Cluster::kNone) reply = Reply::failure("no cluster node connected");
    } else {
      index = c.slots[static_cast<std::size_t>(slot)];
      if (index == Cluster::kNone) {
        reply = Reply::failure("slot " + std::to_string(slot) + " has no primary");
        self->topology_->refresh();
      }
    }
    if (index != Cluster::kNone) {
      // Everything that lives across a co_await is declared outside the loop
      // (g++ 12 mis-destroys such locals of a suspending loop body).
      std::shared_ptr<RedisLink> link = c.nodes[index].link;
      std::optional<Redirect> redirect;
      bool asking = false;
      for (int hops = 0;; ++hops) {
        reply = co_await link->exec(cmd, deadline, asking);
        if (reply.failed || reply.type != Reply::Type::error) break;
        if (reply.str.starts_with("CLUSTERDOWN")) self->topology_->refresh();
        redirect = parse_redirect(reply.str);
        if (!redirect || hops >= kMaxRedirects) break;
        index = c.find(redirect->to);
        if (index == Cluster::kNone) {
          // A node the map does not have yet (a new primary): connect now and
          // let the command wait for it within its deadline.
          auto created = self->make_node_link(redirect->to);
          std::lock_guard lock(c.mu);
          c.nodes.push_back({redirect->to, created});
          index = static_cast<std::uint16_t>(c.nodes.size() - 1);
        }
        if (redirect->moved) {
          // The slot lives there now; the whole map is asked for again.
          c.slots[redirect->slot] = index;
          self->topology_->refresh();
        }
        if (self->options_.on_event) self->options_.on_event(redirect->moved ? RedisEvent::moved : RedisEvent::ask);
        asking = !redirect->moved;
        link = c.nodes[index].link;
        if (!co_await link->ready(deadline)) {
          reply = Reply::failure("redirected to " + redirect->to.text() + ", not connected");
          break;
        }
      }
    }
  }
  if (!reply.ok()) self->report_error(op);
  co_return reply;
}

void RedisClient::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (link_) link_->stop();
  if (cluster_) {
    for (const auto& node : cluster_->nodes) node.link->stop();
  }
  if (owns_topology_ && topology_) topology_->stop();
}

}  // namespace canaryd::store
