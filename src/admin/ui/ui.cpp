#include "admin/ui.hpp"

#include <openssl/evp.h>

#include <array>
#include <vector>

namespace canaryd::admin {
namespace {

// The text between the first `<tag>` and its closing tag: exactly what a
// browser hashes for a CSP 'sha256-…' source.
std::string_view element_text(std::string_view html, std::string_view open, std::string_view close) {
  auto start = html.find(open);
  if (start == std::string_view::npos) return {};
  start += open.size();
  auto end = html.find(close, start);
  if (end == std::string_view::npos) return {};
  return html.substr(start, end - start);
}

std::string sha256_source(std::string_view text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &len, EVP_sha256(), nullptr);
  std::vector<unsigned char> b64(4 * ((len + 2) / 3) + 1);
  int n = EVP_EncodeBlock(b64.data(), digest.data(), static_cast<int>(len));
  return "'sha256-" + std::string(reinterpret_cast<const char*>(b64.data()), static_cast<std::size_t>(n)) + "'";
}

std::string make_csp() {
  const auto html = status_page_html();
  return "default-src 'none'; script-src " + sha256_source(element_text(html, "<script>", "</script>")) +
         "; style-src " + sha256_source(element_text(html, "<style>", "</style>")) +
         "; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

}  // namespace

const std::string& status_page_csp() {
  static const std::string csp = make_csp();
  return csp;
}

}  // namespace canaryd::admin
