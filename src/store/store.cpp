#include "store/store.hpp"

#include <openssl/evp.h>

namespace canaryd::store {

std::string pin_key(std::string_view ns, std::uint64_t epoch, std::string_view sticky_key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(sticky_key.data(), sticky_key.size(), digest, &len, EVP_sha256(), nullptr) != 1 || len != 32) {
    // SHA-256 is always in OpenSSL 3's default provider; a pin under a
    // different key would split one user across two pins, so do not limp on.
    std::abort();
  }
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

}  // namespace canaryd::store
