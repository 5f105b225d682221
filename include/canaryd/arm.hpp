// The two sides of the split. Shared by split, store, rollout, metrics, server.
#pragma once

#include <cstdint>
#include <string_view>

namespace canaryd {

enum class Arm : std::uint8_t { control = 0, canary = 1 };

constexpr std::string_view arm_name(Arm arm) { return arm == Arm::canary ? "canary" : "control"; }

}  // namespace canaryd
