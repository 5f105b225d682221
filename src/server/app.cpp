#include "server/app.hpp"

#include <atomic>

#include "upstream/connection.hpp"

namespace canaryd::server {
namespace {

split::Splitter make_splitter(const config::Config& c) {
  return split::Splitter(split::parse_sources(c.split.sticky_key), split::CidrSet::parse(c.server.trusted_proxies),
                         c.split.salt);
}

std::atomic<std::uint64_t> g_generation{0};

}  // namespace

Runtime::Runtime(std::shared_ptr<const config::Config> cfg)
    : config(std::move(cfg)), splitter(make_splitter(*config)), generation(++g_generation) {
  for (const auto& [name, up] : config->upstreams) {
    if (up.tls) tls.emplace(name, upstream::make_tls_context(up));
  }
}

}  // namespace canaryd::server
