// The process_* families the Prometheus client libraries export (names, types
// and meanings as client_golang's process collector defines them), read from
// /proc/self at scrape time. Linux only; a field that cannot be read is left out.
#pragma once

#include <vector>

#include <prometheus/metric_family.h>

namespace canaryd::metrics {

std::vector<prometheus::MetricFamily> collect_process_metrics();

}  // namespace canaryd::metrics
