// Hand-written HTTP/1.1 head serialization for the hot path. Beast's
// serializer walks deeply nested buffer sequences; profiling showed a third of
// all instructions per proxied request there (docs/benchmarks.md). Parsing
// stays with Beast; writing a head is a few appends into a reused string.
#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <string>
#include <string_view>

namespace canaryd::wire {

namespace http = boost::beast::http;

// "HTTP/1.1 200 OK\r\n" alone
void append_status_line(std::string& out, unsigned status);
// "1a2b\r\n" (the size line of one chunk)
void append_chunk_size(std::string& out, std::size_t size);

}  // namespace canaryd::wire
