// Which experiment decides a request (issue 17): each experiment's `match`
// (model globs, split routes, one header and its value), the first that
// matches wins, and two experiments whose matches could both take one
// request are a config error. Pure functions; the proxy calls select() once
// per split request, the loader overlap() once per pair of experiments.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "canaryd/config.hpp"

namespace canaryd::config {

// '*' matches any run of characters (none included), '?' exactly one; every
// other character itself, case-sensitively (model names are).
bool glob_match(std::string_view pattern, std::string_view text);
// Whether some string matches both patterns.
bool globs_intersect(std::string_view a, std::string_view b);
bool is_glob(std::string_view pattern);

// What a request offers to the matches: its model, its normalised path, and
// a header by name (nullopt when absent).
struct MatchInput {
  std::string_view model;
  std::string_view route;
  std::function<std::optional<std::string_view>(std::string_view name)> header;
};

bool matches(const ExperimentMatch& m, const MatchInput& in);

// The index in config.experiments of the experiment that decides `in`: the
// first explicit one that matches, else the catch-all `default` when there is
// one; nullopt = none (the request goes to default_upstream).
std::optional<std::size_t> select(const Config& config, const MatchInput& in);

// "" when no request can match both; else a request both would take, in
// words ("model \"gpt-4.1\" on any route"), for the config error.
std::string overlap(const ExperimentMatch& a, const ExperimentMatch& b);

}  // namespace canaryd::config
