// libFuzzer harness: request-body field extraction (common/json_scan.hpp),
// the code that reads `model`, `stream` and `user` from client bodies.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/json_scan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view doc(reinterpret_cast<const char*>(data), size);
  canaryd::json::Lookup<4> lookup{{"model", "stream", "user", "stream_options"}, {}};
  std::string err = canaryd::json::scan_object(doc, lookup);
  if (err.empty()) {
    for (const auto& v : lookup.values) {
      if (!v) continue;
      if (v->begin >= v->end || v->end > doc.size()) std::abort();
      auto text = v->of(doc);
      if (auto s = canaryd::json::decode_string(text)) {
        // What we decoded re-encodes to a literal that decodes to the same text.
        auto again = canaryd::json::decode_string(canaryd::json::encode_string(*s));
        if (!again) std::abort();
      }
    }
  }
  (void)canaryd::json::decode_string(doc);
  // encode_string promises valid JSON for any bytes.
  if (!canaryd::json::decode_string(canaryd::json::encode_string(doc))) std::abort();
  return 0;
}
