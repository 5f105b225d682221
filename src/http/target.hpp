// The request target as canaryd routes and forwards it. A proxy that forwards
// a target verbatim lets `/v1/../internal` or `/v1/%2e%2e/x` reach a path
// outside the upstream's `base_url` prefix with canaryd's credentials, on any
// hop that normalises paths. So the path is normalised once, here, before
// routing: percent-encoded unreserved characters are decoded (RFC 3986 §2.3),
// repeated slashes merged (nginx's merge_slashes), dot-segments removed
// (RFC 3986 §5.2.4). What cannot be normalised safely is refused: an encoded
// '/', '\' or NUL (the origin may decode them into a path separator or a
// string end), a raw '\', a fragment, a malformed %-escape. Everything else
// stays as sent (other %-escapes with their hex upper-cased, the query
// untouched). Pure function over bytes, driven by a fuzz harness.
#pragma once

#include <string>
#include <string_view>

namespace canaryd::wire::target {

struct Target {
  bool ok = false;
  std::string path;         // normalised, starts with '/' (or "*" for OPTIONS *)
  std::string_view query;   // from '?' on, as sent ("" when none); a view into the input
  std::string_view reason;  // why it was refused (a static string)
};

Target normalize(std::string_view target);

// RFC 3986 §5.2.4 remove_dot_segments on an absolute path.
std::string remove_dot_segments(std::string_view path);

}  // namespace canaryd::wire::target
