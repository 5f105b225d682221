#include "http/target.hpp"

namespace canaryd::wire::target {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

Target refuse(std::string_view why) {
  Target t;
  t.reason = why;
  return t;
}

}  // namespace

std::string remove_dot_segments(std::string_view in) {
  // The output buffer holds whole segments, each "/name"; "." is dropped and
  // ".." drops the last one (never above the root).
  std::string out;
  out.reserve(in.size());
  while (!in.empty()) {
    // A: a relative prefix (only possible on a non-absolute input).
    if (in.substr(0, 3) == "../") {
      in.remove_prefix(3);
    } else if (in.substr(0, 2) == "./") {
      in.remove_prefix(2);
      // B: "/./" or a final "/."
    } else if (in.substr(0, 3) == "/./") {
      in.remove_prefix(2);
    } else if (in == "/.") {
      in = "/";
      // C: "/../" or a final "/..": drop the last output segment
    } else if (in.substr(0, 4) == "/../" || in == "/..") {
      in = in.size() == 3 ? std::string_view("/") : in.substr(3);
      auto slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
      // D: a lone "." or ".."
    } else if (in == "." || in == "..") {
      in = {};
      // E: move the first segment (with its leading '/') to the output
    } else {
      std::size_t next = in.find('/', in.front() == '/' ? 1 : 0);
      if (next == std::string_view::npos) next = in.size();
      out.append(in.substr(0, next));
      in.remove_prefix(next);
    }
  }
  return out;
}

Target normalize(std::string_view target) {
  if (target == "*") return {true, "*", {}, {}};
  std::size_t q = target.find('?');
  std::string_view raw = target.substr(0, q);
  Target t;
  if (q != std::string_view::npos) t.query = target.substr(q);
  if (raw.empty() || raw.front() != '/') return refuse("the request path must start with '/'");

  std::string decoded;
  decoded.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '#') return refuse("a fragment ('#') in the request target");
    if (c == '\\') return refuse("a '\\' in the request path");
    if (c != '%') {
      // Merge repeated slashes as nginx does (merge_slashes on).
      if (c == '/' && !decoded.empty() && decoded.back() == '/') continue;
      decoded.push_back(c);
      continue;
    }
    if (i + 2 >= raw.size()) return refuse("a malformed %-escape in the request path");
    const int hi = hex_value(raw[i + 1]);
    const int lo = hex_value(raw[i + 2]);
    if (hi < 0 || lo < 0) return refuse("a malformed %-escape in the request path");
    const auto v = static_cast<unsigned char>(hi * 16 + lo);
    i += 2;
    if (v == '/' || v == '\\') return refuse("an encoded '/' or '\\' (%2F, %5C) in the request path");
    if (v == 0) return refuse("an encoded NUL (%00) in the request path");
    if (unreserved(v)) {
      decoded.push_back(static_cast<char>(v));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      decoded.push_back('%');
      decoded.push_back(kHex[v >> 4]);
      decoded.push_back(kHex[v & 15]);
    }
  }
  t.path = remove_dot_segments(decoded);
  if (t.path.empty()) t.path = "/";
  t.ok = true;
  return t;
}

}  // namespace canaryd::wire::target
