#include "split/split.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>

#include "common/sha256.hpp"

namespace canaryd::split {
namespace {

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An exact IPv4 or IPv6 literal into 16 bytes (IPv4 as ::ffff:a.b.c.d).
bool parse_ip_strict(std::string_view text, std::uint8_t out[16]) {
  if (text.empty() || text.size() > 64) return false;
  char buf[65];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  if (text.find(':') == std::string_view::npos) {
    std::uint8_t v4[4];
    if (inet_pton(AF_INET, buf, v4) != 1) return false;
    std::memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(out + 12, v4, 4);
    return true;
  }
  return inet_pton(AF_INET6, buf, out) == 1;
}

// Like parse_ip_strict, but also accepts what peers and X-Forwarded-For
// entries carry in practice: "[v6]", "[v6]:port", "v4:port", "v6%zone".
bool parse_ip(std::string_view text, std::uint8_t out[16]) {
  text = trim(text);
  if (text.empty() || text.size() > 64) return false;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return false;
    auto rest = text.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    text = text.substr(1, close - 1);
  } else if (std::count(text.begin(), text.end(), ':') == 1 && text.find('.') != std::string_view::npos) {
    text = text.substr(0, text.find(':'));
  }
  if (auto pct = text.find('%'); pct != std::string_view::npos) text = text.substr(0, pct);
  return parse_ip_strict(text, out);
}

bool is_v4_mapped(const std::uint8_t a[16]) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, 12) == 0;
}

std::string format_ip(const std::uint8_t a[16]) {
  char buf[INET6_ADDRSTRLEN];
  if (is_v4_mapped(a)) {
    inet_ntop(AF_INET, a + 12, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET6, a, buf, sizeof buf);
  }
  return buf;
}

bool prefix_matches(const CidrSet::Block& block, const std::uint8_t a[16]) {
  unsigned full = block.prefix / 8;
  if (std::memcmp(block.addr, a, full) != 0) return false;
  unsigned rem = block.prefix % 8;
  if (rem == 0) return true;
  auto mask = static_cast<std::uint8_t>(0xff << (8 - rem));
  return (block.addr[full] & mask) == (a[full] & mask);
}

std::string random_key() {
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int half = 0; half < 2; ++half) {
    std::uint64_t v = rng();
    for (int i = 0; i < 16; ++i) out[half * 16 + i] = kHex[(v >> (60 - 4 * i)) & 0xf];
  }
  return out;
}

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  // RFC 9110 token characters.
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           kExtra.find(c) != std::string_view::npos;
  });
}

}  // namespace

std::uint32_t bucket(std::string_view salt, std::string_view key) {
  const std::string_view parts[] = {salt, ":", key};
  const crypto::Sha256 digest = crypto::sha256(parts, 3);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  return static_cast<std::uint32_t>(v % kBuckets);
}

KeyHash key_hash(std::string_view salt, std::string_view key) {
  const std::string_view parts[] = {salt, ":", key};
  const crypto::Sha256 digest = crypto::sha256(parts, 3);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  std::uint64_t u = 0;
  for (int i = 8; i < 16; ++i) u = (u << 8) | digest[i];
  return {static_cast<std::uint32_t>(v % kBuckets), u};
}

std::uint32_t weight_to_threshold(double weight_percent) {
  if (std::isnan(weight_percent) || weight_percent <= 0) return 0;
  if (weight_percent >= 100) return kBuckets;
  long long t = std::llround(weight_percent * 100.0);
  return static_cast<std::uint32_t>(std::clamp<long long>(t, 0, kBuckets));
}

std::optional<Arm> parse_override(std::optional<std::string_view> value) {
  if (!value) return std::nullopt;
  if (iequals(*value, "canary")) return Arm::canary;
  if (iequals(*value, "control")) return Arm::control;
  return std::nullopt;
}

CidrSet CidrSet::parse(const std::vector<std::string>& cidrs) {
  CidrSet set;
  for (const auto& entry : cidrs) {
    std::string_view text = trim(entry);
    std::string_view addr = text;
    std::optional<unsigned> prefix;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
      addr = text.substr(0, slash);
      auto digits = text.substr(slash + 1);
      if (digits.empty() || digits.size() > 3 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        throw std::invalid_argument("invalid CIDR \"" + entry + "\": bad prefix length");
      }
      prefix = static_cast<unsigned>(std::stoul(std::string(digits)));
    }
    Block block{};
    if (!parse_ip_strict(addr, block.addr)) {
      throw std::invalid_argument("invalid CIDR \"" + entry + "\": not an IPv4 or IPv6 address");
    }
    bool v4 = addr.find(':') == std::string_view::npos;
    unsigned max = v4 ? 32 : 128;
    unsigned p = prefix.value_or(max);
    if (p > max) {
      throw std::invalid_argument("invalid CIDR \"" + entry + "\": prefix length above " + std::to_string(max));
    }
    block.prefix = v4 ? p + 96 : p;
    set.blocks_.push_back(block);
  }
  return set;
}

bool CidrSet::contains(std::string_view ip) const {
  if (blocks_.empty()) return false;
  std::uint8_t a[16];
  if (!parse_ip(ip, a)) return false;
  return std::any_of(blocks_.begin(), blocks_.end(), [&](const Block& b) { return prefix_matches(b, a); });
}

std::optional<std::string> canonical_ip(std::string_view text) {
  std::uint8_t a[16];
  if (!parse_ip(text, a)) return std::nullopt;
  return format_ip(a);
}

std::vector<KeySource> parse_sources(const std::vector<std::string>& specs) {
  if (specs.empty()) throw std::invalid_argument("sticky_key: at least one source is required");
  std::vector<KeySource> out;
  for (const auto& spec : specs) {
    std::string_view s = spec;
    if (s == "client_ip") {
      out.push_back({KeySource::Kind::client_ip, {}});
    } else if (s == "body:user") {
      out.push_back({KeySource::Kind::body_user, {}});
    } else if (s.substr(0, 7) == "header:" && valid_header_name(s.substr(7))) {
      out.push_back({KeySource::Kind::header, std::string(s.substr(7))});
    } else {
      throw std::invalid_argument("invalid sticky_key source \"" + spec +
                                  "\": expected \"header:<Name>\", \"body:user\" or \"client_ip\"");
    }
  }
  return out;
}

Splitter::Splitter(std::vector<KeySource> sources, CidrSet trusted_proxies, std::string salt)
    : sources_(std::move(sources)), trusted_(std::move(trusted_proxies)), salt_(std::move(salt)) {}

std::string Splitter::client_ip(const HeaderLookup& headers, std::string_view peer_ip) const {
  std::uint8_t peer[16];
  if (!parse_ip(peer_ip, peer)) return std::string(peer_ip);
  std::string peer_text = format_ip(peer);
  if (!trusted_.contains(peer_text)) return peer_text;
  const std::vector<std::string_view> lines = headers.get_all("X-Forwarded-For");

  // Right to left over the lines joined in order: the last line's last entry first.
  std::optional<std::string> leftmost;
  for (auto line = lines.rbegin(); line != lines.rend(); ++line) {
    std::string_view rest = *line;
    while (!rest.empty()) {
      auto comma = rest.rfind(',');
      std::string_view entry = comma == std::string_view::npos ? rest : rest.substr(comma + 1);
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(0, comma);
      if (trim(entry).empty()) continue;  // an empty list element (RFC 9110 §5.6.1)
      std::uint8_t a[16];
      if (!parse_ip(entry, a)) return {};  // see client_ip() in split.hpp
      std::string text = format_ip(a);
      if (!trusted_.contains(text)) return text;
      leftmost = std::move(text);
    }
  }
  return leftmost ? *leftmost : peer_text;
}

StickyKey Splitter::sticky_key(const HeaderLookup& headers, std::optional<std::string_view> body_user,
                               std::string_view peer_ip) const {
  for (const auto& source : sources_) {
    switch (source.kind) {
      case KeySource::Kind::header:
        if (auto v = headers.get(source.header_name); v && !v->empty()) {
          return {std::string(*v), source.kind};
        }
        break;
      case KeySource::Kind::body_user:
        if (body_user && !body_user->empty()) return {std::string(*body_user), source.kind};
        break;
      case KeySource::Kind::client_ip:
        if (!peer_ip.empty()) {
          if (auto ip = client_ip(headers, peer_ip); !ip.empty()) return {std::move(ip), source.kind};
        }
        break;
    }
  }
  KeySource::Kind kind = sources_.empty() ? KeySource::Kind::client_ip : sources_.back().kind;
  return {random_key(), kind, true};
}

std::optional<Decision> decide_before_hash(std::optional<Arm> override_arm, bool rolled_back) {
  if (override_arm) return Decision{*override_arm, true, false};
  if (rolled_back) return Decision{Arm::control, false, false};
  return std::nullopt;
}

Decision decide_by_hash(Arm hash, std::optional<Arm> pin) {
  if (pin == Arm::canary && hash == Arm::control) return {Arm::canary, false, true};
  return {hash, false, false};
}

Decision decide(std::optional<Arm> override_arm, bool rolled_back, Arm hash, std::optional<Arm> pin) {
  if (auto early = decide_before_hash(override_arm, rolled_back)) return *early;
  return decide_by_hash(hash, pin);
}

}  // namespace canaryd::split
