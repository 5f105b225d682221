// Test processes for the Redis tests: redis-server (a single node, a
// primary with a replica and sentinels, a cluster), each started on a free
// loopback port in a temp dir and stopped by PID; a blocking hiredis
// connection for the tests' own checks. Waits poll with a deadline.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace canaryd::redis_harness {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) std::abort();
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A free port whose cluster bus port (+10000) is free too, and below 65536.
inline int free_cluster_port() {
  for (;;) {
    const int port = free_port();
    if (port > 55535) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port + 10000));
    const bool bus_free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (bus_free) return port;
  }
}

inline bool tcp_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

inline bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto deadline = Steady::now() + limit;
  while (Steady::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);  // polling interval, not a timing assumption
  }
  return pred();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "canaryd-redis-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class Child {
 public:
  Child() = default;
  Child(const std::vector<std::string>& argv, const std::string& log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
  }
  Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Child& operator=(Child&& other) noexcept {
    stop(SIGKILL);
    pid_ = std::exchange(other.pid_, -1);
    return *this;
  }
  ~Child() { stop(SIGTERM); }

  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  // Waits for a command that ends by itself; its exit status, or -1 past `limit` (then killed).
  int wait_exit(std::chrono::milliseconds limit) {
    if (pid_ <= 0) return -1;
    int status = 0;
    const bool done = poll_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit);
    if (!done) {
      stop(SIGKILL);
      return -1;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
};

// One reply of a blocking hiredis connection, as text: integers in decimal,
// "(nil)", "ERR:<text>" for an error, the elements of an array (nested arrays
// as "(array)").
struct SyncReply {
  std::string text;
  std::vector<std::string> elements;
};

inline std::string reply_text(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
    case REDIS_REPLY_NIL: return "(nil)";
    case REDIS_REPLY_ERROR: return "ERR:" + std::string(r->str, r->len);
    case REDIS_REPLY_ARRAY: return "(array)";
    default: return std::string(r->str, r->len);
  }
}

// A blocking hiredis connection, for the tests' own checks only: AUTH
// ([user] password) and SELECT first when given.
inline std::optional<SyncReply> sync_reply(int port, const std::vector<std::string>& argv,
                                           const std::string& password = "", int db = 0, const std::string& user = "") {
  timeval tv{0, 300000};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!c || c->err) {
    if (c) redisFree(c);
    return std::nullopt;
  }
  redisSetTimeout(c, timeval{5, 0});
  auto run = [&](const std::vector<std::string>& args) -> std::optional<SyncReply> {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), ptrs.data(), lens.data()));
    if (!r) return std::nullopt;
    SyncReply out;
    out.text = reply_text(r);
    if (r->type == REDIS_REPLY_ARRAY) {
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(reply_text(r->element[i]));
    }
    freeReplyObject(r);
    return out;
  };
  std::optional<SyncReply> result;
  bool ok = true;
  if (!password.empty()) {
    auto r = user.empty() ? run({"AUTH", password}) : run({"AUTH", user, password});
    ok = r && r->text == "OK";
  }
  if (ok && db != 0) {
    auto r = run({"SELECT", std::to_string(db)});
    ok = r && r->text == "OK";
  }
  if (ok) result = run(argv);
  redisFree(c);
  return result;
}

inline std::optional<std::string> sync_cmd(int port, const std::vector<std::string>& argv,
                                           const std::string& password = "", int db = 0) {
  auto r = sync_reply(port, argv, password, db);
  if (!r) return std::nullopt;
  return r->text;
}

// A test CA and, signed by it, server certificates (for rediss:// and the
// TLS ports of redis-server and redis-sentinel).
class Certs {
 public:
  explicit Certs(const TempDir& dir) : dir_(dir.path().string()) {
    sh("openssl req -x509 " + kEc + " -days 2 -subj '/CN=canaryd test CA' -keyout " + ca_key() + " -out " + ca());
  }
  // A certificate for `name` with subjectAltName `san` (e.g. "DNS:localhost,IP:127.0.0.1").
  void issue(const std::string& name, const std::string& san) {
    std::ofstream(dir_ + "/" + name + ".ext")
        << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n";
    sh("openssl req " + kEc + " -subj '/CN=" + name + "' -keyout " + key(name) + " -out " + dir_ + "/" + name + ".csr");
    sh("openssl x509 -req -in " + dir_ + "/" + name + ".csr -CA " + ca() + " -CAkey " + ca_key() +
       " -CAcreateserial -days 2 -extfile " + dir_ + "/" + name + ".ext -out " + cert(name));
  }
  std::string ca() const { return dir_ + "/ca.crt"; }
  std::string cert(const std::string& name) const { return dir_ + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }
  // redis-server / redis-sentinel options for a TLS port with the certificate `name`.
  std::vector<std::string> server_args(const std::string& name, int tls_port) const {
    return {"--tls-port",         std::to_string(tls_port),
            "--tls-cert-file",    cert(name),
            "--tls-key-file",     key(name),
            "--tls-ca-cert-file", ca(),
            "--tls-auth-clients", "no"};
  }

 private:
  static void sh(const std::string& cmd) { ASSERT_EQ(std::system((cmd + " >/dev/null 2>&1").c_str()), 0) << cmd; }
  std::string ca_key() const { return dir_ + "/ca.key"; }
  inline static const std::string kEc = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  std::string dir_;
};

// redis-server on a free loopback port, in a directory of its own (its log,
// nodes.conf), no persistence. `tls`: also a TLS port with the certificate
// `tls_name` (the plain port stays, for the tests' own checks).
class RedisServer {
 public:
  RedisServer(const TempDir& dir, std::vector<std::string> extra = {}, const Certs* tls = nullptr,
              std::string tls_name = "node", bool cluster = false)
      : port_(cluster && !tls ? free_cluster_port() : free_port()),
        tls_port_(tls ? (cluster ? free_cluster_port() : free_port()) : 0),
        extra_(std::move(extra)) {
    dir_ = dir.path() / ("redis-" + std::to_string(port_));
    std::filesystem::create_directories(dir_);
    if (tls) {
      auto args = tls->server_args(tls_name, tls_port_);
      extra_.insert(extra_.begin(), args.begin(), args.end());
    }
    start();
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  void start() {
    // shutdown-on-sigterm now: a primary does not wait for its replicas when the test stops it.
    std::vector<std::string> argv = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_.string(),
                                     "--daemonize",
                                     "no",
                                     "--shutdown-on-sigterm",
                                     "now"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    child_ = Child(argv, (dir_ / "redis.log").string());
    bool up = poll_until([&] { return sync_cmd(port_, {"PING"}, password()).has_value(); }, 10s);
    if (!up) {
      std::ifstream log(dir_ / "redis.log");
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      ADD_FAILURE() << "redis-server did not start on port " << port_ << ":\n" << text;
    }
  }
  void kill9() { child_.stop(SIGKILL); }
  void stop() { child_.stop(SIGTERM); }
  int port() const { return port_; }
  int tls_port() const { return tls_port_; }
  std::string password() const {
    for (std::size_t i = 0; i + 1 < extra_.size(); ++i) {
      if (extra_[i] == "--requirepass") return extra_[i + 1];
    }
    return "";
  }
  std::optional<std::string> cmd(const std::vector<std::string>& argv) const {
    return sync_cmd(port_, argv, password());
  }

 private:
  std::filesystem::path dir_;
  int port_;
  int tls_port_;
  std::vector<std::string> extra_;
  Child child_;
};

// A primary, optionally a replica, and `count` sentinels monitoring the
// primary as "mymaster" with fast failure detection (down-after 1 s).
class SentinelSet {
 public:
  static constexpr const char* kMaster = "mymaster";

  struct Options {
    int sentinels = 3;
    bool replica = true;
    const Certs* tls = nullptr;  // TLS ports on every node and sentinel, replication over TLS
    int down_after_ms = 1000;
  };

  SentinelSet(const TempDir& dir, Options options) : dir_(dir), options_(options) {
    // Diskless full syncs start at once (the default waits 5 s for more replicas).
    std::vector<std::string> node_extra = {"--repl-diskless-sync-delay", "0"};
    if (options_.tls) node_extra.insert(node_extra.end(), {"--tls-replication", "yes"});
    primary_ = std::make_unique<RedisServer>(dir, node_extra, options_.tls);
    if (options_.replica) {
      auto extra = node_extra;
      extra.insert(extra.end(), {"--replicaof", "127.0.0.1", std::to_string(data_port(*primary_))});
      replica_ = std::make_unique<RedisServer>(dir, extra, options_.tls);
    }
    const int quorum = std::min(2, options_.sentinels);
    for (int i = 0; i < options_.sentinels; ++i) {
      const int port = free_port();
      const int tls_port = options_.tls ? free_port() : 0;
      const auto sdir = dir.path() / ("sentinel-" + std::to_string(port));
      std::filesystem::create_directories(sdir);
      const std::string conf = (sdir / "sentinel.conf").string();
      std::ofstream out(conf);
      out << "port " << port << "\nbind 127.0.0.1\ndaemonize no\ndir " << sdir.string() << "\n";
      if (options_.tls) {
        out << "tls-port " << tls_port << "\ntls-cert-file " << options_.tls->cert("node") << "\ntls-key-file "
            << options_.tls->key("node") << "\ntls-ca-cert-file " << options_.tls->ca()
            << "\ntls-auth-clients no\ntls-replication yes\n";
      }
      out << "sentinel monitor " << kMaster << " 127.0.0.1 " << data_port(*primary_) << " " << quorum << "\n"
          << "sentinel down-after-milliseconds " << kMaster << " " << options_.down_after_ms << "\n"
          << "sentinel failover-timeout " << kMaster << " 4000\n"
          << "sentinel parallel-syncs " << kMaster << " 1\n";
      out.close();
      sentinel_ports_.push_back(port);
      sentinel_tls_ports_.push_back(tls_port);
      sentinels_.emplace_back(std::vector<std::string>{"redis-sentinel", conf}, (sdir / "sentinel.log").string());
    }
  }

  // The replica is in sync, and every sentinel sees the primary as a
  // master, the replica, and the other sentinels.
  bool wait_ready(std::chrono::milliseconds limit = 20s) {
    return poll_until(
        [&] {
          if (replica_) {
            auto info = replica_->cmd({"INFO", "replication"});
            if (!info || info->find("master_link_status:up") == std::string::npos) return false;
          }
          for (int port : sentinel_ports_) {
            auto r = sync_reply(port, {"SENTINEL", "MASTER", kMaster});
            if (!r || r->elements.empty()) return false;
            auto field = [&](const std::string& k) {
              for (std::size_t i = 0; i + 1 < r->elements.size(); i += 2) {
                if (r->elements[i] == k) return r->elements[i + 1];
              }
              return std::string();
            };
            if (field("flags") != "master") return false;
            if (field("num-other-sentinels") != std::to_string(options_.sentinels - 1)) return false;
            if (field("num-slaves") != (options_.replica ? "1" : "0")) return false;
          }
          return true;
        },
        limit);
  }

  // The port sentinel `i` names as the primary's.
  std::optional<int> master_port(std::size_t i = 0) const {
    auto r = sync_reply(sentinel_ports_.at(i), {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", kMaster});
    if (!r || r->elements.size() != 2) return std::nullopt;
    return std::stoi(r->elements[1]);
  }
  // Every sentinel names `port` as the primary's.
  bool all_name(int port) const {
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
      if (master_port(i) != port) return false;
    }
    return true;
  }
  std::optional<std::string> sentinel_cmd(const std::vector<std::string>& argv, std::size_t i = 0) const {
    return sync_cmd(sentinel_ports_.at(i), argv);
  }

  RedisServer& primary() { return *primary_; }
  RedisServer& replica() { return *replica_; }
  // The client-facing port of a node: its TLS port in a TLS set.
  int data_port(const RedisServer& node) const { return options_.tls ? node.tls_port() : node.port(); }
  // The plain port of the node whose data port is `port`.
  RedisServer* node_at(int port) {
    if (data_port(*primary_) == port) return primary_.get();
    if (replica_ && data_port(*replica_) == port) return replica_.get();
    return nullptr;
  }
  // "127.0.0.1:p1,127.0.0.1:p2,..." for a redis+sentinel:// URL.
  std::string sentinel_hosts() const {
    std::string out;
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
      out += (i ? ",127.0.0.1:" : "127.0.0.1:") +
             std::to_string(options_.tls ? sentinel_tls_ports_[i] : sentinel_ports_[i]);
    }
    return out;
  }
  const std::vector<int>& sentinel_ports() const { return sentinel_ports_; }
  const std::vector<int>& sentinel_tls_ports() const { return sentinel_tls_ports_; }
  void stop_sentinel(std::size_t i) { sentinels_.at(i).stop(SIGKILL); }

 private:
  const TempDir& dir_;
  Options options_;
  std::unique_ptr<RedisServer> primary_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<int> sentinel_ports_;
  std::vector<int> sentinel_tls_ports_;
  std::vector<Child> sentinels_;
};

// A Redis Cluster of `primaries` nodes without replicas, made with
// `redis-cli --cluster create` (slots split evenly in node order).
class ClusterSet {
 public:
  explicit ClusterSet(const TempDir& dir, int primaries = 3, const Certs* tls = nullptr,
                      std::vector<std::string> extra = {})
      : tls_(tls) {
    std::vector<std::string> args = {"--cluster-enabled",      "yes", "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", "2000"};
    if (tls) args.insert(args.end(), {"--tls-cluster", "yes", "--tls-replication", "yes"});
    args.insert(args.end(), extra.begin(), extra.end());
    for (int i = 0; i < primaries; ++i) nodes_.push_back(std::make_unique<RedisServer>(dir, args, tls, "node", true));
    std::vector<std::string> create = {"redis-cli"};
    if (tls) create.insert(create.end(), {"--tls", "--cacert", tls->ca()});
    if (!nodes_.front()->password().empty()) create.insert(create.end(), {"-a", nodes_.front()->password()});
    create.insert(create.end(), {"--cluster", "create"});
    for (const auto& n : nodes_) create.push_back("127.0.0.1:" + std::to_string(data_port(*n)));
    create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    Child cli(create, dir.file("cluster-create.log"));
    EXPECT_EQ(cli.wait_exit(60s), 0) << "redis-cli --cluster create failed; see " << dir.file("cluster-create.log");
    const bool ok = poll_until(
        [&] {
          for (const auto& n : nodes_) {
            auto info = n->cmd({"CLUSTER", "INFO"});
            if (!info || info->find("cluster_state:ok") == std::string::npos ||
                info->find("cluster_known_nodes:" + std::to_string(primaries)) == std::string::npos)
              return false;
          }
          return true;
        },
        30s);
    EXPECT_TRUE(ok) << "the cluster did not reach cluster_state:ok";
  }

  int data_port(const RedisServer& node) const { return tls_ ? node.tls_port() : node.port(); }
  RedisServer& node(std::size_t i) { return *nodes_.at(i); }
  std::size_t size() const { return nodes_.size(); }
  std::string id(std::size_t i) { return node(i).cmd({"CLUSTER", "MYID"}).value_or(""); }
  // "127.0.0.1:p1,127.0.0.1:p2,..." for a redis+cluster:// URL.
  std::string hosts() const {
    std::string out;
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      out += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(data_port(*nodes_[i]));
    return out;
  }
  // The node that owns `slot` (as node 0 sees it), by index.
  std::optional<std::size_t> owner(int slot) {
    auto nodes = node(0).cmd({"CLUSTER", "NODES"});
    if (!nodes) return std::nullopt;
    std::istringstream lines(*nodes);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      std::vector<std::string> fields;
      for (std::string w; f >> w;) fields.push_back(w);
      if (fields.size() < 9) continue;
      for (std::size_t k = 8; k < fields.size(); ++k) {
        const std::string& range = fields[k];
        if (range.front() == '[') continue;  // a migration in progress
        const auto dash = range.find('-');
        const int lo = std::stoi(range.substr(0, dash));
        const int hi = dash == std::string::npos ? lo : std::stoi(range.substr(dash + 1));
        if (slot < lo || slot > hi) continue;
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
          if (id(i) == fields[0]) return i;
        }
      }
    }
    return std::nullopt;
  }
  // Moves `slot` from node `from` to node `to` the way redis-cli --cluster
  // reshard does: IMPORTING/MIGRATING, MIGRATE the keys `batch` at a time
  // (calling `between` after each batch), then SETSLOT NODE on every node.
  void migrate(int slot, std::size_t from, std::size_t to, int batch, const std::function<void()>& between) {
    const std::string s = std::to_string(slot);
    const std::string from_id = id(from);
    const std::string to_id = id(to);
    ASSERT_EQ(node(to).cmd({"CLUSTER", "SETSLOT", s, "IMPORTING", from_id}), "OK");
    ASSERT_EQ(node(from).cmd({"CLUSTER", "SETSLOT", s, "MIGRATING", to_id}), "OK");
    for (;;) {
      auto keys =
          sync_reply(node(from).port(), {"CLUSTER", "GETKEYSINSLOT", s, std::to_string(batch)}, node(from).password());
      ASSERT_TRUE(keys);
      if (keys->elements.empty()) break;
      std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(data_port(node(to))), "", "0", "5000"};
      if (!node(to).password().empty()) migrate.insert(migrate.end(), {"AUTH", node(to).password()});
      migrate.push_back("KEYS");
      migrate.insert(migrate.end(), keys->elements.begin(), keys->elements.end());
      auto r = node(from).cmd(migrate);
      ASSERT_TRUE(r && (*r == "OK" || *r == "NOKEY")) << (r ? *r : "no answer");
      if (between) between();
    }
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      ASSERT_EQ(node(i).cmd({"CLUSTER", "SETSLOT", s, "NODE", to_id}), "OK");
    }
  }

 private:
  const Certs* tls_;
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

}  // namespace canaryd::redis_harness
