// The admin API (SPEC §6): /admin/rollout and its verbs, /admin/report,
// /admin/history, the status page /admin/ui. With several experiments (issue
// 17) each has the same under /admin/experiments/NAME (GET: its status;
// POST .../pause|resume|promote|abort|retry|weight; GET .../verdict,
// .../report, .../history) and GET /admin/experiments lists them; the
// unqualified routes address the only experiment (with several they answer
// 400 naming them), except /admin/report, which has every experiment and the
// total. Behind the admin token; off
// (403) when server.admin_token_env is unset. HTTP-agnostic: it takes the
// method, path, body and Authorization value, and says what to answer; the
// server writes it.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "canaryd/config.hpp"
#include "canaryd/error.hpp"

#include "admin/experiment.hpp"

namespace canaryd::shadow {
class Shadow;
}

namespace canaryd::admin {

struct Services {
  Experiments experiments;  // indexed like config.experiments
  shadow::Shadow* shadow = nullptr;
};

struct Request {
  std::string_view method;
  std::string_view path;  // "/admin/..."
  std::string_view body;
  std::string_view authorization;  // the Authorization header's value
};

struct Answer {
  Error error;               // answer with canaryd's error (status from the error table)
  nlohmann::json body;       // else this JSON, 200
  bool status_page = false;  // else the status page (status_page_html, with status_page_csp)
};

Answer handle(const Services& services, const config::Config& config, const Request& request);

// {"weight": N}, read with the same strict scanner as request bodies: a
// duplicate "weight" is refused (parsers disagree on which copy wins), and so
// is a number that does not read back as a normal double ("1e-400" would
// otherwise be read as 0, a rollback nobody typed), or one outside 0..100
// with more than two decimals. Returns the weight, or the error message.
struct WeightBody {
  double weight = 0;
  std::string error;
};
WeightBody parse_weight_body(std::string_view body);

}  // namespace canaryd::admin
