#include "store/store.hpp"

#include "common/sha256.hpp"

namespace canaryd::store {

std::string pin_key(std::string_view ns, std::uint64_t epoch, std::string_view sticky_key) {
  const crypto::Sha256 digest = crypto::sha256(sticky_key);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(ns.size() + 32 + 32);
  out.append(ns).append(":pin:").append(std::to_string(epoch)).push_back(':');
  for (int i = 0; i < 16; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0xf]);
  }
  return out;
}

std::string pin_namespace(std::string_view ns, std::string_view experiment) {
  if (experiment.empty() || experiment == config::kDefaultExperiment) return std::string(ns);
  std::string out(ns);
  out.append(":").append(experiment);
  return out;
}

}  // namespace canaryd::store
