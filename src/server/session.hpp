// A client connection: reads requests with limits and deadlines, answers
// canaryd's own endpoints and hands proxied routes to the proxy.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "server/worker.hpp"

namespace canaryd::server {

boost::asio::awaitable<void> run_session(Worker& worker, boost::asio::ip::tcp::socket socket);

}  // namespace canaryd::server
