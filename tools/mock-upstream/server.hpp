// mock-upstream's HTTP/1.1 (or HTTPS) server: one io_context per thread, one
// acceptor handing connections round-robin to the threads, a Beast coroutine
// per connection with keep-alive. Behaviour (latency, errors, resets, hangs,
// streams) comes from the options, overridden per request by X-Mock-* headers.
#pragma once

#include <memory>

#include "options.hpp"

namespace mock {

class Server {
 public:
  // Binds and listens; throws std::exception on failure (start-up only).
  explicit Server(Options opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  unsigned short port() const;
  // Serves until stop() or SIGTERM/SIGINT; uses opts.threads threads (the
  // calling one included).
  void run();
  // Thread-safe.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mock
