#include "metrics/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <prometheus/check_names.h>

namespace canaryd::metrics {

namespace {

unsigned this_thread_shard() noexcept {
  static std::atomic<unsigned> next{0};
  thread_local const unsigned shard = next.fetch_add(1, std::memory_order_relaxed);
  return shard % ShardedHistogram::kShards;
}

}  // namespace

ShardedHistogram::ShardedHistogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      lines_per_shard_((bounds_.size() + 1 + 7) / 8),
      counts_(new Line[kShards * lines_per_shard_]()),
      sums_(new PaddedSum[kShards]()) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    throw std::invalid_argument("histogram bounds must be strictly ascending");
  }
}

std::atomic<std::uint64_t>& ShardedHistogram::count_slot(unsigned shard, std::size_t bucket) const noexcept {
  return counts_[shard * lines_per_shard_ + bucket / 8].slot[bucket % 8];
}

void ShardedHistogram::observe(double value) noexcept {
  // A NaN would poison _sum for the life of the process.
  if (std::isnan(value)) return;
  // Bucket i counts bounds_[i-1] < v <= bounds_[i]; index bounds_.size() is +Inf.
  const auto bucket =
      static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  const unsigned shard = this_thread_shard();
  count_slot(shard, bucket).fetch_add(1, std::memory_order_relaxed);
  sums_[shard].value.fetch_add(value, std::memory_order_relaxed);
}

prometheus::ClientMetric::Histogram ShardedHistogram::snapshot() const {
  prometheus::ClientMetric::Histogram out;
  out.bucket.reserve(bounds_.size() + 1);
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b <= bounds_.size(); ++b) {
    for (unsigned s = 0; s < kShards; ++s) {
      cumulative += count_slot(s, b).load(std::memory_order_relaxed);
    }
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = b < bounds_.size() ? bounds_[b] : std::numeric_limits<double>::infinity();
    out.bucket.push_back(bucket);
  }
  out.sample_count = cumulative;
  for (unsigned s = 0; s < kShards; ++s) {
    out.sample_sum += sums_[s].value.load(std::memory_order_relaxed);
  }
  return out;
}

HistogramFamily::HistogramFamily(std::string name, std::string help, std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)) {
  if (!prometheus::CheckMetricName(name_)) {
    throw std::invalid_argument("invalid metric name: " + name_);
  }
}

ShardedHistogram& HistogramFamily::add(std::vector<prometheus::ClientMetric::Label> labels) {
  for (const auto& label : labels) {
    if (!prometheus::CheckLabelName(label.name)) {
      throw std::invalid_argument("invalid label name: " + label.name);
    }
  }
  series_.push_back({std::move(labels), std::make_unique<ShardedHistogram>(bounds_)});
  return *series_.back().histogram;
}

prometheus::MetricFamily HistogramFamily::collect() const {
  prometheus::MetricFamily family;
  family.name = name_;
  family.help = help_;
  family.type = prometheus::MetricType::Histogram;
  family.metric.reserve(series_.size());
  for (const auto& series : series_) {
    prometheus::ClientMetric metric;
    metric.label = series.labels;
    metric.histogram = series.histogram->snapshot();
    family.metric.push_back(std::move(metric));
  }
  return family;
}

}  // namespace canaryd::metrics
