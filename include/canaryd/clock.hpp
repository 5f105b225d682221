// The one clock the decision logic reads, so tests can move time by hand
// instead of sleeping.
#pragma once

#include <chrono>
#include <string>

namespace canaryd {

class Clock {
 public:
  using Steady = std::chrono::steady_clock;
  using Wall = std::chrono::system_clock;
  virtual ~Clock() = default;
  virtual Steady::time_point now() const = 0;
  virtual Wall::time_point wall() const = 0;
};

class SystemClock final : public Clock {
 public:
  Steady::time_point now() const override { return Steady::now(); }
  Wall::time_point wall() const override { return Wall::now(); }
  static const SystemClock& instance();
};

// A clock that only moves when told to; for tests.
class ManualClock final : public Clock {
 public:
  ManualClock()
      : steady_(Steady::time_point{} + std::chrono::hours(1)),
        wall_(Wall::time_point{} + std::chrono::hours(24 * 365 * 56)) {}
  Steady::time_point now() const override { return steady_; }
  Wall::time_point wall() const override { return wall_; }
  void advance(std::chrono::nanoseconds d) {
    steady_ += d;
    wall_ += std::chrono::duration_cast<Wall::duration>(d);
  }

 private:
  Steady::time_point steady_;
  Wall::time_point wall_;
};

// "2026-11-27T07:19:29Z"
std::string rfc3339(Clock::Wall::time_point t);

}  // namespace canaryd
