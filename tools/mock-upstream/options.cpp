#include "options.hpp"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string_view>

namespace mock {
namespace {

constexpr const char* kUsage = R"(usage: mock-upstream [flags]
  --host H               listen address (default 127.0.0.1)
  --port P               listen port, 0 = pick a free one (default 0)
  --port-file FILE       write the bound port there once listening
  --threads N            I/O threads (default 1)
  --name NAME            "mock_name" in every JSON body and header X-Mock-Name
  --latency MS           delay before the response headers        [X-Mock-Latency-Ms]
  --error-rate F         share (0..1) of requests that fail        [X-Mock-Error-Rate]
  --error-status CODE    status of those failures (default 500)    [X-Mock-Error-Status]
  --error-seed S         seed the failure PRNG (reproducible runs)
  --status CODE          answer every request with CODE + OpenAI error body [X-Mock-Status]
  --stream-chunks N      content events per stream (default 5)     [X-Mock-Stream-Chunks]
  --stream-delay MS      delay between stream events (default 0)   [X-Mock-Stream-Delay-Ms]
  --hang                 read the request, never answer            [X-Mock-Hang: 1]
  --reset-mode M         none|before|mid-stream: RST the connection [X-Mock-Reset]
  --malformed            200 with a body that is not valid JSON    [X-Mock-Malformed: 1]
  --truncate             chunked body without its last chunk, then close [X-Mock-Truncate: 1]
  --close                Connection: close after every response    [X-Mock-Close: 1]
  --require-key KEY      401 unless "Authorization: Bearer KEY"
  --prompt-tokens N      usage.prompt_tokens (default 10)
  --completion-tokens N  usage.completion_tokens (default 20)
  --max-body BYTES       request body limit (default 64 MiB; 413 above)
  --idle-timeout S       keep-alive idle timeout (default 300)
  --tls-cert FILE --tls-key FILE   serve HTTPS
  --help
)";

[[noreturn]] void fail(const std::string& what) {
  std::cerr << "mock-upstream: " << what << "\n" << kUsage;
  std::exit(2);
}

template <class T>
T number(std::string_view flag, std::string_view v) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc{} || p != v.data() + v.size()) {
    fail(std::string(flag) + ": not a number: " + std::string(v));
  }
  return out;
}

double real(std::string_view flag, std::string_view v) {
  char* end = nullptr;
  std::string s(v);
  double d = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) fail(std::string(flag) + ": not a number: " + s);
  return d;
}

}  // namespace

std::optional<ResetMode> parse_reset_mode(std::string_view s) {
  if (s == "none" || s == "0" || s.empty()) return ResetMode::none;
  if (s == "before" || s == "1") return ResetMode::before;
  if (s == "mid-stream" || s == "mid_stream" || s == "mid") return ResetMode::mid_stream;
  return std::nullopt;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto val = [&]() -> std::string_view {
      if (has_inline) return value;
      if (i + 1 >= argc) fail(std::string(arg) + " needs a value");
      return argv[++i];
    };
    auto flag = [&]() {
      if (has_inline) fail(std::string(arg) + " takes no value");
      return true;
    };

    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--host") {
      o.host = val();
    } else if (arg == "--port") {
      o.port = number<unsigned short>(arg, val());
    } else if (arg == "--port-file") {
      o.port_file = val();
    } else if (arg == "--threads") {
      o.threads = number<int>(arg, val());
      if (o.threads < 1) fail("--threads must be >= 1");
    } else if (arg == "--name") {
      o.name = val();
    } else if (arg == "--latency") {
      o.latency_ms = number<int>(arg, val());
    } else if (arg == "--error-rate") {
      o.error_rate = real(arg, val());
      if (o.error_rate < 0 || o.error_rate > 1) fail("--error-rate must be in 0..1");
    } else if (arg == "--error-status") {
      o.error_status = number<int>(arg, val());
    } else if (arg == "--error-seed") {
      o.error_seed = number<std::uint64_t>(arg, val());
    } else if (arg == "--status") {
      o.status = number<int>(arg, val());
    } else if (arg == "--stream-chunks") {
      o.stream_chunks = number<int>(arg, val());
    } else if (arg == "--stream-delay") {
      o.stream_delay_ms = number<int>(arg, val());
    } else if (arg == "--hang") {
      o.hang = flag();
    } else if (arg == "--reset-mode") {
      auto m = parse_reset_mode(val());
      if (!m) fail("--reset-mode must be none, before or mid-stream");
      o.reset = *m;
    } else if (arg == "--malformed") {
      o.malformed = flag();
    } else if (arg == "--truncate") {
      o.truncate = flag();
    } else if (arg == "--close") {
      o.close = flag();
    } else if (arg == "--require-key") {
      o.require_key = val();
    } else if (arg == "--prompt-tokens") {
      o.prompt_tokens = number<int>(arg, val());
    } else if (arg == "--completion-tokens") {
      o.completion_tokens = number<int>(arg, val());
    } else if (arg == "--max-body") {
      o.max_body_bytes = number<std::size_t>(arg, val());
    } else if (arg == "--idle-timeout") {
      o.idle_timeout_s = number<int>(arg, val());
    } else if (arg == "--tls-cert") {
      o.tls_cert = val();
    } else if (arg == "--tls-key") {
      o.tls_key = val();
    } else {
      fail("unknown flag " + std::string(arg));
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) fail("--tls-cert and --tls-key go together");
  if (o.stream_chunks < 0) fail("--stream-chunks must be >= 0");
  if ((o.status != 0 && (o.status < 100 || o.status > 599)) || o.error_status < 100 || o.error_status > 599)
    fail("status codes must be 100..599");
  return o;
}

}  // namespace mock
