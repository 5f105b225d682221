// mock-upstream: a fake OpenAI-compatible upstream for canaryd's tests, demo
// and benchmarks. Wiring only: flags, listen, announce the port, serve until
// SIGTERM/SIGINT. See docs/mock-upstream.md.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "options.hpp"
#include "server.hpp"

namespace {

// Written to a temporary name then renamed, so a test polling for the file
// never reads a half-written port.
void write_port_file(const std::string& path, unsigned short port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

int main(int argc, char** argv) {
  mock::Options opts = mock::parse_options(argc, argv);
  try {
    mock::Server server(opts);
    const unsigned short port = server.port();
    if (!opts.port_file.empty()) write_port_file(opts.port_file, port);
    std::cout << "mock-upstream listening on " << opts.host << ":" << port << std::endl;
    server.run();
  } catch (const std::exception& e) {
    std::cerr << "mock-upstream: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
