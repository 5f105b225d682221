// canaryd's own endpoints (/health, /ready, /metrics, /admin/*) and the
// routing of /v1/* requests (client keys, split or control-only routes).
#pragma once

#include <boost/asio/awaitable.hpp>

#include "proxy/request.hpp"
#include "server/worker.hpp"

namespace canaryd::server {

boost::asio::awaitable<bool> handle_api(proxy::Request& r);
boost::asio::awaitable<bool> handle_own(Worker& worker, proxy::Request& r);

}  // namespace canaryd::server
