// Small parsers behind the config loader: durations, URLs, host:port pairs,
// CIDRs, header tokens, number formatting. Kept apart from the YAML walk so
// each can be unit-tested on its own. They throw std::invalid_argument with a
// message fit for the user; the loader prefixes it with FILE:LINE: key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "canaryd/config.hpp"

namespace canaryd::config::detail {

struct Url {
  std::string scheme;         // lower-cased
  bool has_userinfo = false;  // "user@" or "user:pass@" (never copied out)
  bool has_password = false;  // userinfo holds a ':'
  std::string host;           // IPv6 without brackets
  std::optional<std::uint16_t> port;
  std::string path;  // "" or starts with '/', as written
};

// scheme://[userinfo@]host[:port][/path]; rejects query and fragment. The
// messages never echo the userinfo, so a password typed into a URL is not
// printed back in an error.
Url parse_url(const std::string& text);

struct HostPort {
  std::string host;  // IPv6 without brackets
  std::uint16_t port = 0;
};
// "host:port" or "[v6]:port", port 0..65535.
HostPort parse_host_port(const std::string& text);

// "10.0.0.0/8", "::1", "fd00::/8" -> "addr/len" (a bare address gets /32 or /128).
std::string normalize_cidr(const std::string& text);

bool is_header_token(std::string_view text);
bool is_env_name(std::string_view text);
bool is_host_name(std::string_view text);

// 5400000ms -> "1h30m", 1500ms -> "1s500ms", 0 -> "0s"; parse_duration reads it back.
std::string format_duration(Duration d);
// Shortest text that reads back as the same double ("0.01", "100", "2.5").
std::string format_number(double value);

std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace canaryd::config::detail
