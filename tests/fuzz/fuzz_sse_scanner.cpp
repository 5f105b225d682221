// libFuzzer harness: upstream SSE bytes through upstream::SseScanner (with a
// QualityScanner fed its events) and the same bytes as a whole body through
// QualityScanner::body. The scanners must give the same answer whatever the
// chunk boundaries are, and never flag a signal they did not find eligible.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upstream/quality.hpp"
#include "upstream/usage.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using canaryd::upstream::AnswerApi;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The API the quality scanner reads the events as: from the input, so every
  // parser is reached.
  const auto api = static_cast<AnswerApi>(size == 0 ? 1 : 1 + data[size - 1] % 3);
  canaryd::upstream::QualityScanner whole_quality(api, true), pieces_quality(api, true);
  canaryd::upstream::SseScanner whole;
  whole.quality = &whole_quality;
  whole.feed(bytes);

  canaryd::upstream::SseScanner pieces;
  pieces.quality = &pieces_quality;
  std::size_t step = size == 0 ? 1 : 1 + data[0] % 7;
  for (std::size_t i = 0; i < size; i += step) pieces.feed(bytes.substr(i, step));

  if (whole.events() != pieces.events() || whole.done() != pieces.done()) std::abort();
  if (whole.usage().has_value() != pieces.usage().has_value()) std::abort();
  if (whole.usage() &&
      (whole.usage()->prompt != pieces.usage()->prompt || whole.usage()->completion != pieces.usage()->completion)) {
    std::abort();
  }
  // The quality signals too are the same whatever the chunking.
  const auto wq = whole_quality.flags(), pq = pieces_quality.flags();
  if (wq.eligible != pq.eligible || wq.flagged != pq.flagged) std::abort();
  if ((wq.flagged & ~wq.eligible) != 0) std::abort();
  (void)canaryd::upstream::parse_usage(bytes);
  canaryd::upstream::QualityScanner body(api, true);
  body.body(bytes);
  if ((body.flags().flagged & ~body.flags().eligible) != 0) std::abort();
  (void)canaryd::upstream::expects_json(api, bytes);
  return 0;
}
