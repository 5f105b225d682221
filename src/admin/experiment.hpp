// One experiment's running parts (issue 17): its rollout controller, its
// money report and its 15-minute history, indexed like config.experiments.
// Owned by main(); the request path (proxy::Services) and the admin API
// (admin::Services) hold the same list.
#pragma once

#include <string>
#include <vector>

namespace canaryd::rollout {
class RolloutController;
}

namespace canaryd::admin {

class Report;
class History;

struct Experiment {
  std::string name;
  rollout::RolloutController* rollout = nullptr;
  Report* report = nullptr;
  History* history = nullptr;
};

using Experiments = std::vector<Experiment>;

}  // namespace canaryd::admin
