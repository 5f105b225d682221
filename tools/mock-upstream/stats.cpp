#include "stats.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

namespace mock {

Stats::ConnectionMark::~ConnectionMark() {
  if (active_) stats_.active_.fetch_sub(1, std::memory_order_relaxed);
}

std::uint64_t Stats::on_request(ConnectionMark& conn, const std::string& path, Headers headers,
                                const std::string& body) {
  const std::uint64_t epoch = epoch_.load(std::memory_order_acquire);
  if (conn.counted_epoch_ != epoch) {
    conn.counted_epoch_ = epoch;
    connections_.fetch_add(1, std::memory_order_relaxed);
  }
  if (!conn.active_) {
    conn.active_ = true;
    active_.fetch_add(1, std::memory_order_relaxed);
  }
  const std::uint64_t seq = requests_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  last_headers_ = std::move(headers);
  last_body_ = body;
  auto it = by_path_.find(path);
  if (it == by_path_.end()) {
    by_path_.emplace(path, 1);
  } else {
    ++it->second;
  }
  return seq;
}

void Stats::reset() {
  std::lock_guard lock(mu_);
  epoch_.fetch_add(1, std::memory_order_acq_rel);
  tcp_accepts_ = 0;
  connections_ = 0;
  requests_ = 0;
  last_headers_.clear();
  last_body_.clear();
  by_path_.clear();
}

std::string Stats::to_json() const {
  nlohmann::json j;
  j["connections_accepted"] = connections_.load();
  j["tcp_accepts"] = tcp_accepts_.load();
  j["active_connections"] = std::max<std::int64_t>(0, active_.load());
  j["requests"] = requests_.load();
  std::lock_guard lock(mu_);
  nlohmann::json headers = nlohmann::json::object();
  for (const auto& [name, value] : last_headers_) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    // A repeated field is joined the way RFC 9110 allows for list headers.
    auto it = headers.find(lower);
    if (it == headers.end()) {
      headers[lower] = value;
    } else {
      *it = it->get<std::string>() + ", " + value;
    }
  }
  j["last_headers"] = std::move(headers);
  j["last_body"] = last_body_;
  nlohmann::json paths = nlohmann::json::object();
  for (const auto& [p, n] : by_path_) paths[p] = n;
  j["requests_by_path"] = std::move(paths);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mock
