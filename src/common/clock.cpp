#include "canaryd/clock.hpp"

#include <ctime>

namespace canaryd {

const SystemClock& SystemClock::instance() {
  static const SystemClock clock;
  return clock;
}

std::string rfc3339(Clock::Wall::time_point t) {
  std::time_t secs = Clock::Wall::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace canaryd
