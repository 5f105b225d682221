// Command-line options of mock-upstream, the fake OpenAI-compatible upstream
// that canaryd's tests, demo and benchmarks run against. Every behaviour flag
// has a per-request header override (see docs/mock-upstream.md), so one mock
// process can serve many test cases.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mock {

enum class ResetMode { none, before, mid_stream };

struct Options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;  // 0 = the kernel picks a free port
  int threads = 1;
  std::string port_file;
  std::string name;  // "mock_name" in bodies and X-Mock-Name, when set

  // Behaviours (defaults for every request; X-Mock-* headers override them).
  int latency_ms = 0;
  double error_rate = 0.0;
  int error_status = 500;
  std::optional<std::uint64_t> error_seed;  // unset = random seed
  int status = 0;                           // 0 = normal answers
  int stream_chunks = 5;
  int stream_delay_ms = 0;
  bool hang = false;
  ResetMode reset = ResetMode::none;
  bool malformed = false;
  bool truncate = false;
  bool close = false;
  std::string require_key;

  int prompt_tokens = 10;
  int completion_tokens = 20;

  std::string tls_cert;
  std::string tls_key;

  std::size_t max_body_bytes = 64 * 1024 * 1024;
  int idle_timeout_s = 300;
};

// Parses argv. On --help prints usage and exits 0; on a bad flag prints the
// problem and the usage to stderr and exits 2 (start-up only, so exiting is fine).
Options parse_options(int argc, char** argv);

std::optional<ResetMode> parse_reset_mode(std::string_view s);

}  // namespace mock
