// libFuzzer harness: config::load_string. Bad YAML is an exception with a
// message (start-up path); anything else (a crash, a hang) is a bug.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "canaryd/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 * 1024) return 0;
  try {
    auto cfg = canaryd::config::load_string(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
    (void)cfg;
  } catch (const std::exception&) {
  }
  return 0;
}
