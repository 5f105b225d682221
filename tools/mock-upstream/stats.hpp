// What the mock has seen, for tests: connection and request counters (to prove
// pool reuse), the last request's headers and body (to check header rewriting).
// Shared by every I/O thread. Requests to /mock/* are control traffic and are
// not recorded, so reading the stats does not change them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mock {

class Stats {
 public:
  // A connection counts once it carries its first API request, and again after
  // each reset: `connections_accepted` then reads as "distinct connections used
  // since the last reset", which is what a pool-reuse test wants to compare.
  class ConnectionMark {
   public:
    ~ConnectionMark();
    ConnectionMark(const ConnectionMark&) = delete;
    ConnectionMark& operator=(const ConnectionMark&) = delete;

   private:
    friend class Stats;
    explicit ConnectionMark(Stats& s) : stats_(s) {}
    Stats& stats_;
    std::uint64_t counted_epoch_ = 0;  // 0 = never counted
    bool active_ = false;
  };

  ConnectionMark connection() { return ConnectionMark(*this); }
  void on_tcp_accept() { tcp_accepts_.fetch_add(1, std::memory_order_relaxed); }

  using Headers = std::vector<std::pair<std::string, std::string>>;
  // Records one API request; returns its sequence number since the last reset
  // (0-based), which drives the deterministic error decision.
  std::uint64_t on_request(ConnectionMark& conn, const std::string& path, Headers headers, const std::string& body);

  void reset();
  std::string to_json() const;

 private:
  std::atomic<std::uint64_t> epoch_{1};
  std::atomic<std::uint64_t> tcp_accepts_{0};
  std::atomic<std::uint64_t> connections_{0};
  std::atomic<std::int64_t> active_{0};
  std::atomic<std::uint64_t> requests_{0};

  mutable std::mutex mu_;  // guards the fields below
  Headers last_headers_;
  std::string last_body_;
  std::map<std::string, std::uint64_t, std::less<>> by_path_;
};

}  // namespace mock
