#include "http/wire.hpp"

#include <boost/beast/http/status.hpp>
#include <charconv>

namespace canaryd::wire {

void append_status_line(std::string& out, unsigned status) {
  char code[8];
  auto [end, ec] = std::to_chars(code, code + sizeof code, status);
  out.append("HTTP/1.1 ");
  out.append(code, end);
  out.push_back(' ');
  std::string_view reason = http::obsolete_reason(static_cast<http::status>(status));
  out.append(reason.empty() || reason == "<unknown-status>" ? std::string_view("Unknown") : reason);
  out.append("\r\n");
}

void append_chunk_size(std::string& out, std::size_t size) {
  char hex[24];
  auto [end, ec] = std::to_chars(hex, hex + sizeof hex, size, 16);
  out.append(hex, end);
  out.append("\r\n");
}

}  // namespace canaryd::wire
