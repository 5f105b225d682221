// `canaryd ctl`: the admin client for people, with the verbs of
// `kubectl argo rollouts` (status, pause, resume, promote, abort, retry,
// weight N) plus `report`. It speaks the JSON admin API of a running canaryd.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace canaryd::ctl {

int main(int argc, char** argv);

// The human-readable renderings, exposed for tests.
std::string render_status(const nlohmann::json& status);
std::string render_report(const nlohmann::json& report);
std::string render_shadow(const nlohmann::json& shadow);
// GET /admin/experiments (issue 17): one line per experiment.
std::string render_experiments(const nlohmann::json& list);
// GET /admin/report with several experiments: each one's report, then the total.
std::string render_reports(const nlohmann::json& report);

}  // namespace canaryd::ctl
