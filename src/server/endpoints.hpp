// canaryd's own endpoints (/health, /ready, /metrics, /admin/*) and the
// routing of /v1/* requests (client keys, split or control-only routes).
#pragma once

#include <boost/asio/awaitable.hpp>

#include "server/session.hpp"

namespace canaryd::server {

net::awaitable<bool> handle_api(RequestContext& ctx);
net::awaitable<bool> handle_own(RequestContext& ctx);

}  // namespace canaryd::server
