// A lock-free histogram for the request path. prometheus-cpp 1.0.1's
// Histogram::Observe takes a per-series std::mutex (checked in the installed
// library: pthread_mutex_lock around the sum and bucket increments), and every
// request observes the same few series (the overhead histogram is one series
// hit by all threads), so canaryd keeps its hot histograms here instead:
// relaxed atomic adds, spread over per-thread shards on separate cache lines.
// A scrape reads the shards without stopping writers, so `_count`/`_sum` of one
// scrape may be off by the observations that raced it; buckets stay monotone.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

namespace canaryd::metrics {

class ShardedHistogram {
 public:
  static constexpr unsigned kShards = 8;

  // `bounds` are the finite upper bounds, ascending; +Inf is implicit.
  explicit ShardedHistogram(std::vector<double> bounds);
  ShardedHistogram(const ShardedHistogram&) = delete;
  ShardedHistogram& operator=(const ShardedHistogram&) = delete;

  void observe(double value) noexcept;
  prometheus::ClientMetric::Histogram snapshot() const;

 private:
  struct alignas(64) Line {
    std::atomic<std::uint64_t> slot[8];
  };
  struct alignas(64) PaddedSum {
    std::atomic<double> value{0.0};
  };

  std::atomic<std::uint64_t>& count_slot(unsigned shard, std::size_t bucket) const noexcept;

  std::vector<double> bounds_;
  std::size_t lines_per_shard_;
  std::unique_ptr<Line[]> counts_;     // kShards × lines_per_shard_, non-cumulative
  std::unique_ptr<PaddedSum[]> sums_;  // kShards
};

// One histogram family: its label sets are fixed at set-up, then observed lock-free.
class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<double> bounds);

  // Set-up only (not thread-safe). The reference stays valid for the family's life.
  ShardedHistogram& add(std::vector<prometheus::ClientMetric::Label> labels);
  prometheus::MetricFamily collect() const;

 private:
  struct Series {
    std::vector<prometheus::ClientMetric::Label> labels;
    std::unique_ptr<ShardedHistogram> histogram;
  };
  std::string name_;
  std::string help_;
  std::vector<double> bounds_;
  std::vector<Series> series_;
};

}  // namespace canaryd::metrics
