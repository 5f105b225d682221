#include "http/headers.hpp"

#include "http/wire.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace canaryd::wire {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return (x | 0x20) == (y | 0x20); });
}

bool names_in_connection(std::string_view name, std::string_view connection) {
  while (!connection.empty()) {
    auto comma = connection.find(',');
    std::string_view token = connection.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (iequals(token, name)) return true;
    if (comma == std::string_view::npos) break;
    connection.remove_prefix(comma + 1);
  }
  return false;
}

// Every Connection header line counts: a client or upstream may send several.
std::string connection_tokens(const http::fields& in) {
  std::string all;
  for (auto [it, end] = in.equal_range(http::field::connection); it != end; ++it) {
    if (!all.empty()) all += ',';
    all.append(it->value());
  }
  return all;
}

}  // namespace

bool is_hop_by_hop(std::string_view name, std::string_view connection_value) {
  static constexpr std::array<std::string_view, 9> kHop = {
      "connection", "keep-alive",          "proxy-connection",  "te", "trailer", "transfer-encoding",
      "upgrade",    "proxy-authorization", "proxy-authenticate"};
  for (auto h : kHop) {
    if (iequals(name, h)) return true;
  }
  return !connection_value.empty() && names_in_connection(name, connection_value);
}

namespace {

// The upstream request's fields, in order, to `emit(field, name, value,
// value2)` (the value is value + value2, so "Bearer " + key needs no copy):
// the client's own minus what is dropped, then the ones canaryd sets.
template <class Emit>
void upstream_fields(const http::fields& in, const UpstreamHeaderContext& ctx, Emit&& emit) {
  const std::string connection = connection_tokens(in);
  std::string forwarded_for;
  for (const auto& f : in) {
    std::string_view name = f.name_string();
    if (is_hop_by_hop(name, connection)) continue;
    switch (f.name()) {
      case http::field::host:
      case http::field::authorization:
      case http::field::content_length:
      case http::field::accept_encoding:
      case http::field::expect:  // canaryd has the whole body already; a 100 would confuse the relay
        continue;
      default: break;
    }
    if (iequals(name, "x-request-id")) continue;
    if (iequals(name, "x-forwarded-for")) {
      if (!forwarded_for.empty()) forwarded_for += ", ";
      forwarded_for.append(f.value());
      continue;
    }
    emit(f.name(), name, f.value(), std::string_view());
  }
  emit(http::field::host, "Host", ctx.host, std::string_view());
  if (!ctx.api_key.empty()) emit(http::field::authorization, "Authorization", "Bearer ", ctx.api_key);
  emit(http::field::unknown, "X-Request-ID", ctx.request_id, std::string_view());
  if (!ctx.client_ip.empty()) {
    if (!forwarded_for.empty()) forwarded_for += ", ";
    forwarded_for.append(ctx.client_ip);
  }
  if (!forwarded_for.empty()) emit(http::field::unknown, "X-Forwarded-For", forwarded_for, std::string_view());
  emit(http::field::accept_encoding, "Accept-Encoding", "identity", std::string_view());
}

}  // namespace

void upstream_request_headers(const http::fields& in, http::fields& out, const UpstreamHeaderContext& ctx) {
  upstream_fields(in, ctx, [&](http::field f, std::string_view name, std::string_view v, std::string_view v2) {
    if (v2.empty()) {
      out.insert(f, name, v);
    } else {
      std::string joined;
      joined.reserve(v.size() + v2.size());
      joined.append(v).append(v2);
      out.insert(f, name, joined);
    }
  });
}

void append_upstream_request_head(std::string& out, http::verb method, std::string_view target, const http::fields& in,
                                  const UpstreamHeaderContext& ctx, std::optional<std::size_t> content_length) {
  out.append(http::to_string(method));
  out.push_back(' ');
  out.append(target);
  out.append(" HTTP/1.1\r\n");
  upstream_fields(in, ctx, [&](http::field, std::string_view name, std::string_view v, std::string_view v2) {
    out.append(name).append(": ").append(v).append(v2).append("\r\n");
  });
  if (content_length) {
    char digits[24];
    const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, *content_length);
    out.append("Content-Length: ").append(digits, end).append("\r\n");
  }
  out.append("\r\n");
}

void append_client_response_head(std::string& out, unsigned status, const http::fields& upstream,
                                 std::initializer_list<HeadField> own, bool no_cache_unless_set) {
  append_status_line(out, status);
  const std::string connection = connection_tokens(upstream);
  bool cache_control = false;
  for (const auto& f : upstream) {
    std::string_view name = f.name_string();
    if (f.name() == http::field::content_length || is_hop_by_hop(name, connection)) continue;
    if (name.size() >= 10 && iequals(name.substr(0, 10), "x-canaryd-")) continue;
    if (std::any_of(own.begin(), own.end(), [&](const HeadField& o) { return iequals(o.name, name); })) continue;
    if (f.name() == http::field::cache_control) cache_control = true;
    out.append(name).append(": ").append(f.value()).append("\r\n");
  }
  for (const auto& o : own) {
    if (o.name.empty()) continue;  // a field the caller left out
    out.append(o.name).append(": ").append(o.value).append("\r\n");
  }
  if (no_cache_unless_set && !cache_control) out.append("Cache-Control: no-cache\r\n");
  out.append("\r\n");
}

std::string request_id_from(std::string_view supplied) {
  if (!supplied.empty() && supplied.size() <= 128 &&
      std::all_of(supplied.begin(), supplied.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    return std::string(supplied);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  // A per-thread PRNG seeded once from the OS: request ids need uniqueness, not secrecy.
  thread_local std::uint64_t state = [] {
    std::uint64_t seed = 0;
    RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof seed);
    return seed | 1;
  }();
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    // splitmix64
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 0; i < 16; ++i) id[half * 16 + i] = kHex[(z >> (i * 4)) & 0xF];
  }
  return id;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Length is not secret (keys have fixed formats); the content is.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace canaryd::wire
