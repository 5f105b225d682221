// A client connection: reads requests with limits and deadlines, answers
// canaryd's own endpoints and hands proxied routes to the proxy.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>

#include "server/worker.hpp"

namespace canaryd::server {

// A new connection (peer_ip empty: read from the socket), or a parked one
// resumed (`resumed`: already counted in App::connections, known readable).
boost::asio::awaitable<void> run_session(Worker& worker, boost::asio::ip::tcp::socket socket, std::string peer_ip,
                                         bool resumed);

}  // namespace canaryd::server
