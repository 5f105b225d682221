// Everything derived from one config generation: the config itself, each TLS
// upstream's client context, the splitter. Swapped as a whole on reload; a
// request keeps the generation it started with.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "canaryd/config.hpp"
#include "split/split.hpp"

namespace canaryd::proxy {

struct Runtime {
  explicit Runtime(std::shared_ptr<const config::Config> cfg);

  std::shared_ptr<const config::Config> config;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> tls;  // by upstream name
  split::Splitter splitter;
  std::uint64_t generation = 0;
};

}  // namespace canaryd::proxy
