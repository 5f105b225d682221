// A proxied request's state through its phases (Envoy's ActiveStream,
// Pingora's Session + CTX): one object instead of a bag of locals passed to
// free functions. The phases, in order, each in its own file:
//
//   inspect.cpp   read the JSON body once: model, stream, user (400s here)
//   decide.cpp    the experiment (config/match.hpp), then the arm: override,
//                 rollback, hash, pin (split::decide's order)
//   attempt.cpp   send to the arm's upstream; a failed canary attempt falls back once to control
//   relay.cpp     the answer to the client: whole (with a Content-Length) or event by event
//   account.cpp   metrics, the analysis window, the report, the access log, the shadow pair
//
// proxy.cpp strings them together. Internal to proxy/.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/fields.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "canaryd/arm.hpp"
#include "canaryd/error.hpp"
#include "canaryd/quality.hpp"
#include "common/json_scan.hpp"
#include "proxy/request.hpp"
#include "upstream/exchange.hpp"
#include "upstream/usage.hpp"

namespace canaryd::shadow {
class ShadowPair;
}
namespace canaryd::rollout {
class RolloutController;
}
namespace canaryd::admin {
class Report;
}

namespace canaryd::proxy {

using Clock = std::chrono::steady_clock;

// What the body says, read once (inspect).
struct Inspected {
  std::string model;  // as requested ("" when none)
  std::optional<json::Span> model_span;
  bool stream = false;
  std::optional<std::string> user;
  bool json_expected = false;  // response_format / text.format asks for a JSON answer (a quality check)
};

// Which arm serves the request, and why (decide).
struct Decision {
  Arm arm = Arm::control;
  bool forced = false;
  bool pinned = false;
  std::string_view sticky_source;  // "header", "body_user", "client_ip", "random", "" (not split)
  std::uint64_t user_hash = 0;     // split::key_hash's user hash (split by hash only)
};

// How the relay ended (relay).
struct Outcome {
  Error error;           // canaryd-made failure (no upstream answer relayed whole)
  int status = 0;        // status sent to the client
  bool relayed = false;  // an upstream response (or part of it) reached the client
  bool keep_alive = false;
  bool client_gone = false;
  std::optional<upstream::Usage> usage;
  QualityFlags quality;            // the answer's LLM quality signals (split routes, 2xx; issue 14)
  Clock::time_point done;          // the upstream finished (or the relay stopped)
  Clock::duration client_write{};  // time spent writing to the client after the upstream finished
  // The last write to the client, left to the driver so that the metrics
  // count the request before the client can see its end (a client that reads
  // /metrics right after its answer must find it counted).
  bool write_pending = false;
  std::string pending_head;  // non-streaming: head + body
  std::string pending_body;  // (a stream's pending write is its final chunk)
};

// The body with its "model" value replaced by `to` (the rename of
// upstreams.X.models / fallback.models), everything else byte for byte.
std::string renamed_body(std::string_view body, const json::Span& model, std::string_view to);

class ActiveRequest {
 public:
  ActiveRequest(Request& r, RouteKind route);
  ~ActiveRequest();
  ActiveRequest(const ActiveRequest&) = delete;
  ActiveRequest& operator=(const ActiveRequest&) = delete;

  // The driver (proxy.cpp); returns whether the client connection may be reused.
  net::awaitable<bool> run();

 private:
  // inspect.cpp: the split routes' body checks; an error answers the client.
  Error inspect();
  // decide.cpp
  void select_experiment();  // the experiment that decides this request, if any
  net::awaitable<void> decide();
  void start_shadow();
  // attempt.cpp: the upstream call, with one fallback to control.
  net::awaitable<void> attempt();
  std::string_view prepare_attempt();  // model rename, body, head for arm_; returns the body to send
  const config::UpstreamConfig& control_upstream() const;  // the experiment's control, or the default upstream
  // relay.cpp
  net::awaitable<void> relay();
  net::awaitable<void> relay_whole();
  net::awaitable<void> relay_stream();
  net::awaitable<void> finish_write();
  // account.cpp
  void account_attempt(const Error& error, int status, bool client_gone, const Outcome* o);
  void log_access(int status, std::string_view error);
  void report_to_shadow(const Error& error, int status);
  net::awaitable<bool> answer_error();  // canaryd's own error for a failed attempt
  void leave_inflight();

  // Response headers every proxied answer carries.
  void add_arm_headers(boost::beast::http::fields& f) const;
  // canaryd's own time before the answering attempt was sent.
  Clock::duration overhead_before() const;

  Request& r_;
  const config::Config& cfg_;
  const RouteKind route_;
  std::string body_;  // the client's body (moved out of the request)
  Inspected in_;
  Decision decision_;

  // The experiment deciding the request (issue 17); all null when none
  // matched (or the route is not split): the request goes to the default
  // upstream, judged by no rollout.
  const config::ExperimentConfig* exp_ = nullptr;
  const ExperimentRuntime* exp_rt_ = nullptr;
  std::size_t exp_index_ = 0;
  rollout::RolloutController* ro_ = nullptr;
  admin::Report* report_ = nullptr;
  std::string_view experiment_name() const;

  // The attempt in flight (or the last one).
  Arm arm_ = Arm::control;
  const config::UpstreamConfig* up_ = nullptr;
  std::string sent_model_;
  std::string fallback_;                // reason of the fallback taken, "" when none
  Clock::duration earlier_upstream_{};  // failed attempts' upstream time: not canaryd's overhead
  std::optional<upstream::Exchange> ex_;
  std::optional<Outcome> outcome_;
  upstream::Connection* current_ = nullptr;  // the upstream connection in use, for the client watch
  std::optional<ClientWatch> watch_;
  // Declared out of the attempt loop: g++ 12 double-frees non-trivial locals
  // of a loop body that suspends and then `continue`s.
  std::string head_;
  std::string renamed_;

  std::shared_ptr<shadow::ShadowPair> pair_;  // this request is mirrored (control-served split requests)
  bool inflight_ = false;
};

}  // namespace canaryd::proxy
