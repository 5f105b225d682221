#include "config/parse_util.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <vector>

namespace canaryd::config {

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

Duration parse_duration(const std::string& raw) {
  const std::string text = trim(raw);
  const std::string hint = " (expected e.g. 500ms, 30s, 10m, 1h30m or 0)";
  if (text.empty()) throw std::invalid_argument("empty duration" + hint);
  if (text[0] == '-') throw std::invalid_argument("negative duration \"" + text + "\"");
  if (all_digits(text)) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return c == '0'; })) return Duration{0};
    throw std::invalid_argument("duration \"" + text + "\" needs a unit (ms, s, m, h), e.g. \"" + text + "s\"");
  }
  const std::string bad = "invalid duration \"" + text + "\"" + hint;
  std::int64_t total = 0;
  int last_rank = 99;  // units must go from larger to smaller, each at most once
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view int_part(text.data() + start, i - start);
    std::string_view frac_part;
    if (i < text.size() && text[i] == '.') {
      std::size_t fs = ++i;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
      frac_part = std::string_view(text.data() + fs, i - fs);
      if (frac_part.empty()) throw std::invalid_argument(bad);
    }
    if (int_part.empty() && frac_part.empty()) throw std::invalid_argument(bad);
    if (int_part.size() > 10 || frac_part.size() > 6)
      throw std::invalid_argument("duration \"" + text + "\" is too large or too precise");
    std::int64_t unit_ms = 0;
    int rank = 0;
    if (text.compare(i, 2, "ms") == 0) {
      unit_ms = 1;
      rank = 0;
      i += 2;
    } else if (text.compare(i, 1, "h") == 0) {
      unit_ms = 3600000;
      rank = 3;
      i += 1;
    } else if (text.compare(i, 1, "m") == 0) {
      unit_ms = 60000;
      rank = 2;
      i += 1;
    } else if (text.compare(i, 1, "s") == 0) {
      unit_ms = 1000;
      rank = 1;
      i += 1;
    } else
      throw std::invalid_argument(bad);
    if (rank >= last_rank) throw std::invalid_argument(bad);
    last_rank = rank;
    std::int64_t whole = 0;
    if (!int_part.empty()) std::from_chars(int_part.data(), int_part.data() + int_part.size(), whole);
    total += whole * unit_ms;
    if (!frac_part.empty()) {
      std::int64_t frac = 0, scale = 1;
      std::from_chars(frac_part.data(), frac_part.data() + frac_part.size(), frac);
      for (std::size_t k = 0; k < frac_part.size(); ++k) scale *= 10;
      if ((frac * unit_ms) % scale != 0)
        throw std::invalid_argument("duration \"" + text + "\" is finer than a millisecond");
      total += frac * unit_ms / scale;
    }
  }
  return Duration{total};
}

namespace detail {

std::string format_duration(Duration d) {
  std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  const std::pair<std::int64_t, const char*> units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  for (auto [size, name] : units) {
    if (ms >= size) {
      out += std::to_string(ms / size) + name;
      ms %= size;
    }
  }
  return out;
}

std::string format_number(double value) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, res.ptr);
}

bool is_header_token(std::string_view text) {
  if (text.empty()) return false;
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) || kExtra.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool is_env_name(std::string_view text) {
  if (text.empty() || std::isdigit(static_cast<unsigned char>(text[0]))) return false;
  return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

bool is_host_name(std::string_view text) {
  if (text.empty() || text.size() > 253) return false;
  return std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '.' || c == '_'; });
}

namespace {

bool is_ipv6(const std::string& s) {
  in6_addr a{};
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

std::uint16_t parse_port(std::string_view text, bool allow_zero) {
  unsigned value = 0;
  auto res = std::from_chars(text.data(), text.data() + text.size(), value);
  if (!all_digits(text) || res.ec != std::errc{} || res.ptr != text.data() + text.size() || value > 65535 ||
      (!allow_zero && value == 0))
    throw std::invalid_argument("invalid port \"" + std::string(text) + "\" (expected " + (allow_zero ? "0" : "1") +
                                "..65535)");
  return static_cast<std::uint16_t>(value);
}

// host[:port] or [v6][:port]; port_required for listen addresses.
HostPort split_authority(std::string_view auth, bool port_required, bool allow_zero,
                         std::optional<std::uint16_t>* port_out) {
  HostPort hp;
  std::string_view port_text;
  bool has_port = false;
  if (!auth.empty() && auth[0] == '[') {
    auto close = auth.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("missing ']' after IPv6 address");
    hp.host = std::string(auth.substr(1, close - 1));
    if (!is_ipv6(hp.host)) throw std::invalid_argument("invalid IPv6 address \"" + hp.host + "\"");
    auto rest = auth.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') throw std::invalid_argument("unexpected text after ']'");
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    auto colon = auth.rfind(':');
    if (colon != std::string_view::npos) {
      if (auth.find(':') != colon)
        throw std::invalid_argument("an IPv6 address must be written in brackets, e.g. \"[::1]:8080\"");
      hp.host = std::string(auth.substr(0, colon));
      port_text = auth.substr(colon + 1);
      has_port = true;
    } else {
      hp.host = std::string(auth);
    }
    if (hp.host.empty()) throw std::invalid_argument("missing host");
    if (!is_host_name(hp.host)) throw std::invalid_argument("invalid host \"" + hp.host + "\"");
  }
  if (hp.host.empty()) throw std::invalid_argument("missing host");
  if (has_port) {
    hp.port = parse_port(port_text, allow_zero);
    if (port_out) *port_out = hp.port;
  } else if (port_required) {
    throw std::invalid_argument("missing port (expected host:port)");
  }
  return hp;
}

}  // namespace

Url parse_url(const std::string& text) {
  Url url;
  auto sep = text.find("://");
  if (sep == std::string::npos || sep == 0)
    throw std::invalid_argument("not a URL (expected scheme://host[:port][/path])");
  url.scheme = text.substr(0, sep);
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view rest(text);
  rest.remove_prefix(sep + 3);
  if (rest.find_first_of("?#") != std::string_view::npos)
    throw std::invalid_argument("a query string or fragment is not allowed in this URL");
  auto slash = rest.find('/');
  std::string_view auth = rest.substr(0, slash);
  if (slash != std::string_view::npos) url.path = std::string(rest.substr(slash));
  auto at = auth.rfind('@');
  if (at != std::string_view::npos) {
    url.has_userinfo = true;
    url.has_password = auth.substr(0, at).find(':') != std::string_view::npos;
    auth.remove_prefix(at + 1);
  }
  std::optional<std::uint16_t> port;
  HostPort hp = split_authority(auth, false, false, &port);
  url.host = hp.host;
  url.port = port;
  return url;
}

HostPort parse_host_port(const std::string& text) { return split_authority(text, true, true, nullptr); }

std::string normalize_cidr(const std::string& text) {
  auto slash = text.find('/');
  std::string addr = text.substr(0, slash);
  int family_bits = 0;
  in6_addr buf{};
  if (inet_pton(AF_INET, addr.c_str(), &buf) == 1)
    family_bits = 32;
  else if (inet_pton(AF_INET6, addr.c_str(), &buf) == 1)
    family_bits = 128;
  else
    throw std::invalid_argument("invalid IP address \"" + addr + "\" (expected a CIDR such as 10.0.0.0/8 or fd00::/8)");
  if (slash == std::string::npos) return addr + "/" + std::to_string(family_bits);
  std::string_view len_text(text);
  len_text.remove_prefix(slash + 1);
  int len = -1;
  auto res = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (!all_digits(len_text) || res.ptr != len_text.data() + len_text.size() || len < 0 || len > family_bits)
    throw std::invalid_argument("invalid prefix length \"" + std::string(len_text) + "\" (expected 0.." +
                                std::to_string(family_bits) + ")");
  return addr + "/" + std::to_string(len);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace detail
}  // namespace canaryd::config
