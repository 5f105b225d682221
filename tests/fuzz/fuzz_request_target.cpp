// libFuzzer harness: request targets through wire::target::normalize, which
// decides what path reaches the upstream. Invariants: a normalised path starts
// with '/', holds no dot-segment, no "//", no '\', no %2F/%5C/%00, and is a
// fixed point (normalising it again changes nothing); the query is a suffix of
// the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/target.hpp"

namespace ht = canaryd::wire::target;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  ht::Target t = ht::normalize(in);
  if (!t.ok) {
    if (t.reason.empty()) std::abort();
    return 0;
  }
  if (t.path == "*") return 0;
  const std::string& p = t.path;
  if (p.empty() || p.front() != '/') std::abort();
  if (p.find("//") != std::string::npos || p.find('\\') != std::string::npos) std::abort();
  if (p.find("/./") != std::string::npos || p.find("/../") != std::string::npos) std::abort();
  std::string_view tail(p);
  if (tail.ends_with("/.") || tail.ends_with("/..")) std::abort();
  for (std::string_view bad : {"%2F", "%2f", "%5C", "%5c", "%00"}) {
    if (p.find(bad) != std::string::npos) std::abort();
  }
  if (!in.ends_with(t.query)) std::abort();
  ht::Target again = ht::normalize(p);
  if (!again.ok || again.path != p) std::abort();
  return 0;
}
