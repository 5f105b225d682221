// The LLM quality signals of one answer (issue 14): what the upstream scanner
// reads from a response, streamed or not, the rollout judge compares between
// the arms, and the metrics count. Each signal has a population ("eligible":
// the answers it applies to) and a bad outcome ("flagged"); a signal an answer
// does not apply to is neither.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace canaryd {

enum class QualitySignal : std::uint8_t {
  truncated,  // finish_reason "length" (Responses API: incomplete, max_output_tokens) / answers with a finish reason
  content_filter,  // finish_reason "content_filter" (Responses API: incomplete, content_filter) / the same population
  empty,           // no text and no tool call / finished chat, completion and Responses answers
  tool_call_json,  // a tool call whose arguments do not parse as JSON / answers with tool calls
  response_json,   // answer text that does not parse as JSON / answers to a response_format JSON request
};

inline constexpr std::size_t kQualitySignals = 5;
// Metric label values and config keys (rollout.analysis.checks.<name>).
inline constexpr std::array<std::string_view, kQualitySignals> kQualitySignalNames = {
    "truncated", "content_filter", "empty", "tool_call_json", "response_json"};

constexpr std::string_view quality_signal_name(QualitySignal s) {
  return kQualitySignalNames[static_cast<std::size_t>(s)];
}

// Bit i of each mask is QualitySignal(i).
struct QualityFlags {
  std::uint8_t eligible = 0;
  std::uint8_t flagged = 0;  // always a subset of eligible

  void mark(QualitySignal s, bool bad) {
    const auto bit = static_cast<std::uint8_t>(1u << static_cast<unsigned>(s));
    eligible |= bit;
    if (bad) flagged |= bit;
  }
  bool is_eligible(QualitySignal s) const { return (eligible >> static_cast<unsigned>(s)) & 1u; }
  bool is_flagged(QualitySignal s) const { return (flagged >> static_cast<unsigned>(s)) & 1u; }
};

}  // namespace canaryd
