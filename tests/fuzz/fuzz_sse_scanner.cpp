// libFuzzer harness: upstream SSE bytes through upstream::SseScanner. The
// scanner must give the same answer whatever the chunk boundaries are.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upstream/usage.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  canaryd::upstream::SseScanner whole;
  whole.feed(bytes);

  canaryd::upstream::SseScanner pieces;
  std::size_t step = size == 0 ? 1 : 1 + data[0] % 7;
  for (std::size_t i = 0; i < size; i += step) pieces.feed(bytes.substr(i, step));

  if (whole.events() != pieces.events() || whole.done() != pieces.done()) std::abort();
  if (whole.usage().has_value() != pieces.usage().has_value()) std::abort();
  if (whole.usage() && (whole.usage()->prompt != pieces.usage()->prompt ||
                        whole.usage()->completion != pieces.usage()->completion)) {
    std::abort();
  }
  (void)canaryd::upstream::parse_usage(bytes);
  return 0;
}
