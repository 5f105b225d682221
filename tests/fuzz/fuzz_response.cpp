// libFuzzer harness: upstream response bytes through upstream::parse_response,
// the rules the exchange applies on a live connection (interim heads dropped,
// 101 refused, the body limit, the pooling rule). The first input byte picks
// the body limit, HEAD or not, and the feed step; the rest is the wire.
// Invariants: the answer does not depend on how the bytes were split; a
// reusable connection ended its response cleanly with nothing left over; no
// body is longer than the limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upstream/response.hpp"

using canaryd::upstream::parse_response;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t knobs = data[0];
  std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::uint64_t limit = (knobs & 3) == 0 ? 16 : (knobs & 3) == 1 ? 1024 : 64u << 20;
  const bool head_only = (knobs & 4) != 0;
  const std::size_t step = 1 + (knobs >> 3);

  auto whole = parse_response(wire, limit, head_only, 0);
  auto pieces = parse_response(wire, limit, head_only, step);
  if (whole.status != pieces.status || whole.interim != pieces.interim || whole.kind != pieces.kind ||
      whole.complete != pieces.complete || whole.reusable != pieces.reusable || whole.body_bytes != pieces.body_bytes ||
      whole.leftover != pieces.leftover) {
    std::abort();
  }
  if (whole.reusable && (!whole.complete || whole.leftover != 0 || head_only)) std::abort();
  if (whole.body_bytes > limit) std::abort();
  if (whole.kind != canaryd::upstream::HeadKind::final && whole.reusable) std::abort();
  return 0;
}
