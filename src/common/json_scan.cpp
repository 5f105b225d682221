#include "common/json_scan.hpp"

#include <bit>
#include <cstdint>
#include <cstring>

namespace canaryd::json {
namespace {

constexpr int kMaxDepth = 128;

}  // namespace

static_assert(std::endian::native == std::endian::little, "plain_run reads the lowest address as the lowest byte");

std::size_t plain_run(const char* p, std::size_t n) {
  // Eight bytes at a time (SWAR): a byte needs a look when it is '"', '\\'
  // or below 0x20. For each test the lowest flagged byte is exact (borrows
  // only flag bytes above a true hit), so the lowest bit of the union is the
  // first byte that needs a look. UTF-8 bytes (0x80 and up) are never flagged.
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, p + i, 8);
    const std::uint64_t q = x ^ (kOnes * '"');
    const std::uint64_t b = x ^ (kOnes * '\\');
    const std::uint64_t m = (((q - kOnes) & ~q) | ((b - kOnes) & ~b) | ((x - kOnes * 0x20) & ~x)) & kHighs;
    if (m != 0) return i + static_cast<std::size_t>(__builtin_ctzll(m) >> 3);
  }
  for (; i < n; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c == '"' || c == '\\' || c < 0x20) break;
  }
  return i;
}

namespace {

class Scanner {
 public:
  explicit Scanner(std::string_view doc) : s_(doc) {}

  std::string run(const std::string_view* keys, std::optional<Span>* values, std::size_t count) {
    skip_ws();
    if (peek() != '{') return fail("expected a JSON object");
    if (!object(0, keys, values, count)) return error_;
    skip_ws();
    if (i_ != s_.size()) return fail("trailing characters after the JSON object");
    return {};
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  std::string fail(std::string_view what) {
    error_ = std::string(what) + " at offset " + std::to_string(i_);
    return error_;
  }
  bool failed(std::string_view what) {
    fail(what);
    return false;
  }

  // Top-level object when keys != nullptr; nested values pass count = 0.
  bool object(int depth, const std::string_view* keys, std::optional<Span>* values, std::size_t count) {
    if (depth >= kMaxDepth) return failed("nesting too deep");
    ++i_;  // '{'
    skip_ws();
    if (peek() == '}') {
      ++i_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') return failed("expected a string key");
      std::size_t key_begin = i_;
      bool escaped = false;
      if (!string(&escaped)) return false;
      std::string_view key = s_.substr(key_begin + 1, i_ - key_begin - 2);
      std::string decoded;
      if (escaped && count > 0) {
        auto d = decode_string(s_.substr(key_begin, i_ - key_begin));
        decoded = d ? *d : std::string();
        key = decoded;
      }
      skip_ws();
      if (peek() != ':') return failed("expected ':'");
      ++i_;
      skip_ws();
      std::size_t value_begin = i_;
      if (!value(depth + 1)) return false;
      for (std::size_t k = 0; k < count; ++k) {
        if (keys[k] == key) {
          if (values[k]) return failed("duplicate key \"" + std::string(key) + "\"");
          values[k] = Span{value_begin, i_};
        }
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == '}') {
        ++i_;
        return true;
      }
      return failed("expected ',' or '}'");
    }
  }

  bool array(int depth) {
    if (depth >= kMaxDepth) return failed("nesting too deep");
    ++i_;  // '['
    skip_ws();
    if (peek() == ']') {
      ++i_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (!value(depth + 1)) return false;
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == ']') {
        ++i_;
        return true;
      }
      return failed("expected ',' or ']'");
    }
  }

  bool value(int depth) {
    switch (peek()) {
      case '{': return object(depth, nullptr, nullptr, 0);
      case '[': return array(depth);
      case '"': return string(nullptr);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return failed("invalid literal");
    i_ += word.size();
    return true;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

  bool number() {
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (is_digit(peek())) {
      while (is_digit(peek())) ++i_;
    } else {
      return failed("invalid value");
    }
    if (peek() == '.') {
      ++i_;
      if (!is_digit(peek())) return failed("invalid number");
      while (is_digit(peek())) ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!is_digit(peek())) return failed("invalid number");
      while (is_digit(peek())) ++i_;
    }
    return true;
  }

  bool string(bool* escaped) {
    ++i_;  // opening quote
    for (;;) {
      i_ += plain_run(s_.data() + i_, s_.size() - i_);
      if (i_ >= s_.size()) return failed("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return failed("control character in string");
      if (c == '\\') {
        if (escaped) *escaped = true;
        ++i_;
        char e = peek();
        if (e == 'u') {
          for (int k = 1; k <= 4; ++k) {
            if (i_ + k >= s_.size() || !is_hex(s_[i_ + k])) return failed("invalid \\u escape");
          }
          i_ += 5;
          continue;
        }
        if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') {
          return failed("invalid escape");
        }
        ++i_;
        continue;
      }
      ++i_;
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string error_;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

std::string scan_object(std::string_view doc, const std::string_view* keys, std::optional<Span>* values,
                        std::size_t count) {
  for (std::size_t k = 0; k < count; ++k) values[k].reset();
  return Scanner(doc).run(keys, values, count);
}

std::optional<std::string> decode_string(std::string_view lit) {
  if (lit.size() < 2 || lit.front() != '"' || lit.back() != '"') return std::nullopt;
  std::string out;
  out.reserve(lit.size() - 2);
  for (std::size_t i = 1; i + 1 < lit.size(); ++i) {
    char c = lit[i];
    if (c != '\\') {
      // An unescaped quote or control character: not one string literal.
      if (c == '"' || static_cast<unsigned char>(c) < 0x20) return std::nullopt;
      out += c;
      continue;
    }
    if (i + 2 >= lit.size()) return std::nullopt;
    char e = lit[++i];
    switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        auto read4 = [&](std::size_t at, std::uint32_t& v) {
          if (at + 4 > lit.size() - 1) return false;
          v = 0;
          for (std::size_t k = 0; k < 4; ++k) {
            char h = lit[at + k];
            if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'))) return false;
            v = v * 16 + static_cast<std::uint32_t>(hex_value(h));
          }
          return true;
        };
        std::uint32_t cp = 0;
        if (!read4(i + 1, cp)) return std::nullopt;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < lit.size() && lit[i + 1] == '\\' && lit[i + 2] == 'u') {
          std::uint32_t lo = 0;
          if (read4(i + 3, lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
          }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // lone surrogate
        append_utf8(out, cp);
        break;
      }
      default: return std::nullopt;
    }
  }
  return out;
}

namespace {

// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629: no overlongs,
// no surrogates, nothing above U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char c = byte(i);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::string encode_string(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (std::size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // Invalid UTF-8 (a client's model name or path) would make the whole
      // document unparseable for strict readers: replace it, byte by byte.
      std::size_t n = utf8_sequence(text, i);
      if (n == 0) {
        out += "\\ufffd";
      } else {
        out.append(text.substr(i, n));
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace canaryd::json
