#include "http/wire.hpp"

#include <boost/beast/http/status.hpp>
#include <charconv>

namespace canaryd::wire {
namespace {

void append_fields(std::string& out, const http::fields& fields) {
  for (const auto& f : fields) {
    out.append(f.name_string());
    out.append(": ");
    out.append(f.value());
    out.append("\r\n");
  }
  out.append("\r\n");
}

}  // namespace

void append_request_head(std::string& out, http::verb method, std::string_view target, const http::fields& fields) {
  out.append(http::to_string(method));
  out.push_back(' ');
  out.append(target);
  out.append(" HTTP/1.1\r\n");
  append_fields(out, fields);
}

void append_response_head(std::string& out, unsigned status, const http::fields& fields) {
  append_status_line(out, status);
  append_fields(out, fields);
}

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
