// SHA-256 of a few concatenated parts, with one fetched implementation per
// process and one digest context per thread: the split and the pin key run
// on every request, and OpenSSL's one-shot EVP_Digest does an implicit fetch
// (a lock) and allocates a context on each call.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace canaryd::crypto {

using Sha256 = std::array<unsigned char, 32>;

// Aborts if OpenSSL has no SHA-256 (it is in every OpenSSL 3 default
// provider): no user could be placed consistently without it.
Sha256 sha256(const std::string_view* parts, std::size_t count);

inline Sha256 sha256(std::string_view a) { return sha256(&a, 1); }

}  // namespace canaryd::crypto
