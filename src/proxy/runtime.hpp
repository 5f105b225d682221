// Everything derived from one config generation: the config itself, each TLS
// upstream's client context, the splitter. Swapped as a whole on reload; a
// request keeps the generation it started with.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "canaryd/config.hpp"
#include "split/split.hpp"

namespace canaryd::proxy {

// One experiment's request-path view (issue 17), resolved once per generation
// so a request does no map lookup for its arms.
struct ExperimentRuntime {
  split::Splitter splitter;  // its sticky key sources and salt
  const config::UpstreamConfig* control = nullptr;
  const config::UpstreamConfig* canary = nullptr;
  std::string pin_ns;  // store::pin_namespace(redis.namespace, name)
};

struct Runtime {
  explicit Runtime(std::shared_ptr<const config::Config> cfg);

  std::shared_ptr<const config::Config> config;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> tls;  // by upstream name
  std::vector<ExperimentRuntime> experiments;                             // by index in config->experiments
  const config::UpstreamConfig* unmatched = nullptr;                      // Config::unmatched_upstream()
  std::uint64_t generation = 0;
};

}  // namespace canaryd::proxy
