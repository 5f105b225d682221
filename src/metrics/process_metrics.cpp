#include "metrics/process_metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

namespace canaryd::metrics {

namespace {

struct ProcStat {
  double cpu_seconds = 0;
  double start_ticks = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
};

std::optional<ProcStat> read_proc_stat() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  // Counting from field 3 (state) as 0: utime 11, stime 12, starttime 19, vsize 20, rss 21.
  std::string field;
  double values[22] = {};
  for (int i = 0; i < 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
    if (i >= 11) values[i] = std::strtod(field.c_str(), nullptr);
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  ProcStat stat;
  // utime + stime count clock ticks (10 ms): a process that has been idle since it started reads 0.
  // The process CPU clock counts nanoseconds and is the same quantity, so prefer it.
  stat.cpu_seconds = (values[11] + values[12]) / ticks;
  timespec cpu{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0) {
    stat.cpu_seconds = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) * 1e-9;
  }
  stat.start_ticks = values[19];
  stat.virtual_bytes = values[20];
  stat.resident_bytes = values[21] * page;
  return stat;
}

std::optional<double> read_boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      if (in >> value) return value;
      return std::nullopt;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

std::optional<double> count_open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  const int own = dirfd(dir);  // the listing's own descriptor is not the process's
  double count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    if (std::atoi(entry->d_name) == own) continue;
    ++count;
  }
  closedir(dir);
  return count;
}

prometheus::MetricFamily single(std::string name, std::string help, prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

std::vector<prometheus::MetricFamily> collect_process_metrics() {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const auto stat = read_proc_stat();
  if (stat) {
    out.push_back(single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                         MetricType::Counter, stat->cpu_seconds));
  }
  if (auto fds = count_open_fds()) {
    out.push_back(single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    const double max_fds = limit.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(limit.rlim_cur);
    out.push_back(single("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge, max_fds));
  }
  if (stat) {
    out.push_back(single("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
                         stat->virtual_bytes));
    out.push_back(single("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
                         stat->resident_bytes));
    if (auto boot = read_boot_time()) {
      out.push_back(single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                           MetricType::Gauge, *boot + stat->start_ticks / static_cast<double>(sysconf(_SC_CLK_TCK))));
    }
  }
  return out;
}

}  // namespace canaryd::metrics
