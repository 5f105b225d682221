#include "common/sha256.hpp"

#include <openssl/evp.h>

#include <cstdlib>

namespace canaryd::crypto {
namespace {

const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched ? fetched : EVP_sha256();
  }();
  return md;
}

struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
};

}  // namespace

Sha256 sha256(const std::string_view* parts, std::size_t count) {
  thread_local MdCtx md;
  Sha256 out{};
  unsigned int len = 0;
  bool ok = md.ctx != nullptr && EVP_DigestInit_ex(md.ctx, sha256_md(), nullptr) == 1;
  for (std::size_t i = 0; ok && i < count; ++i) ok = EVP_DigestUpdate(md.ctx, parts[i].data(), parts[i].size()) == 1;
  ok = ok && EVP_DigestFinal_ex(md.ctx, out.data(), &len) == 1 && len == out.size();
  if (!ok) std::abort();
  return out;
}

}  // namespace canaryd::crypto
