// Strict checks on a client's request head, run on the raw bytes before
// Beast's parser sees them. Beast accepts things a proxy must not pass on
// (obs-fold, identical duplicate Content-Length, a Transfer-Encoding other
// than chunked, absolute-form targets): each is a request-smuggling or
// routing-confusion vector once the request is re-framed for the upstream.
// Pure function over bytes, so the fuzz harness drives exactly this code.
#pragma once

#include <cstddef>
#include <string_view>

namespace canaryd::wire::strict {

enum class HeadStatus { incomplete, complete, bad };

struct HeadCheck {
  HeadStatus status = HeadStatus::incomplete;
  std::size_t head_size = 0;  // bytes up to and including the blank line (complete)
  std::string_view reason;    // why it is bad (a static string)
};

namespace detail {

inline bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
    default: return false;
  }
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

inline std::string_view trim_ows(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

inline HeadCheck bad(std::string_view reason) noexcept { return {HeadStatus::bad, 0, reason}; }

}  // namespace detail

// Looks at the bytes received so far. `incomplete` until the blank line that
// ends the head has arrived; line-ending errors are reported as soon as they
// are seen so a client cannot hold the connection with a head that never ends.
inline HeadCheck check_request_head(std::string_view data) noexcept {
  using namespace detail;
  // RFC 9112 §2.2: ignore empty lines before the request line (some clients
  // send a stray CRLF after a body).
  std::size_t start = 0;
  while (data.size() - start >= 2 && data[start] == '\r' && data[start + 1] == '\n') start += 2;

  std::size_t end = std::string_view::npos;  // index just past the final CRLFCRLF
  for (std::size_t i = start; i < data.size(); ++i) {
    const char c = data[i];
    if (c == '\n') {
      if (i == start || data[i - 1] != '\r') return bad("bare LF in the request head");
      if (i >= start + 3 && data[i - 2] == '\n' && data[i - 3] == '\r') {
        end = i + 1;
        break;
      }
    } else if (c == '\r') {
      if (i + 1 < data.size() && data[i + 1] != '\n') return bad("bare CR in the request head");
    } else if (c == '\0') {
      return bad("NUL in the request head");
    }
  }
  if (end == std::string_view::npos) return {HeadStatus::incomplete, 0, {}};

  std::string_view head = data.substr(start, end - start - 2);  // keeps each line's CRLF
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);

  // request-line = method SP request-target SP HTTP-version
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return bad("malformed request line");
  std::string_view method = line.substr(0, sp1);
  for (char c : method) {
    if (!is_tchar(c)) return bad("malformed request method");
  }
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return bad("malformed request line");
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return bad("unsupported HTTP version");
  if (!(target.front() == '/' || (method == "OPTIONS" && target == "*"))) {
    return bad("request target must be origin-form (a path starting with '/')");
  }
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return bad("control character in the request target");
  }

  int content_length = 0, transfer_encoding = 0, host = 0;
  std::size_t pos = eol + 2;
  while (pos < head.size()) {
    eol = head.find("\r\n", pos);
    line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.front() == ' ' || line.front() == '\t') return bad("obsolete line folding in a header");
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad("malformed header line");
    std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!is_tchar(c)) return bad("malformed header name");
    }
    std::string_view value = trim_ows(line.substr(colon + 1));
    for (char c : value) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return bad("control character in a header value");
    }
    if (iequals(name, "content-length")) {
      if (++content_length > 1) return bad("duplicate Content-Length");
      if (value.empty() || value.size() > 19) return bad("invalid Content-Length");
      for (char c : value) {
        if (c < '0' || c > '9') return bad("invalid Content-Length");
      }
    } else if (iequals(name, "transfer-encoding")) {
      if (++transfer_encoding > 1) return bad("duplicate Transfer-Encoding");
      if (!iequals(value, "chunked")) return bad("unsupported Transfer-Encoding (only chunked)");
    } else if (iequals(name, "host")) {
      if (++host > 1) return bad("duplicate Host");
    }
  }
  if (content_length > 0 && transfer_encoding > 0) return bad("both Content-Length and Transfer-Encoding");
  return {HeadStatus::complete, end, {}};
}

}  // namespace canaryd::wire::strict
