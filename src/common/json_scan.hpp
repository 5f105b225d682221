// A validating, non-allocating scan of a JSON object that records where chosen
// top-level members' values sit in the text. The request path uses it to read
// `model`, `stream`, `user` and to rename `model` in place without building a
// DOM of the whole prompt, and to find `usage` in upstream responses.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace canaryd::json {

struct Span {
  std::size_t begin = 0;  // offset of the value's first character
  std::size_t end = 0;    // one past its last character
  std::string_view of(std::string_view doc) const { return doc.substr(begin, end - begin); }
};

// Keys looked up in one scan; results are in the same order.
template <std::size_t N>
struct Lookup {
  std::string_view keys[N];
  std::optional<Span> values[N];
};

// Scans `doc`, which must be exactly one JSON object (whitespace around is
// fine), and fills `values[i]` with the span of top-level member `keys[i]`.
// Returns an empty string on success, else what is wrong ("expected ':' at
// offset 12"); a key listed in `keys` appearing twice is an error too (parsers
// disagree on which copy wins, so neither is trusted).
std::string scan_object(std::string_view doc, const std::string_view* keys, std::optional<Span>* values,
                        std::size_t count);

template <std::size_t N>
std::string scan_object(std::string_view doc, Lookup<N>& lookup) {
  return scan_object(doc, lookup.keys, lookup.values, N);
}

// Decodes a JSON string literal (with its quotes) into UTF-8. nullopt if the
// span is not one string literal. Lone surrogate escapes become U+FFFD.
std::optional<std::string> decode_string(std::string_view literal);
// Encodes UTF-8 text as a JSON string literal with quotes. Bytes that are not
// well-formed UTF-8 become \ufffd, so the result is always valid JSON.
std::string encode_string(std::string_view text);

inline bool is_true(std::string_view literal) { return literal == "true"; }

// How many bytes from `p` are plain string content: not '"', '\\', nor a
// control character (< 0x20). Eight bytes a step; the string scanners use it
// to skip the bulk of a prompt or an answer.
std::size_t plain_run(const char* p, std::size_t n);

}  // namespace canaryd::json
