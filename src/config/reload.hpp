// What a SIGHUP reload may change (SPEC §2): the rules main() applies to a
// new config before swapping it in. Pure functions of two configs.
#pragma once

#include <string>
#include <vector>

#include "canaryd/config.hpp"

namespace canaryd::config {

// Keys a reload cannot apply to a running process: it keeps running with
// their old values (listen address, I/O thread count) and says so.
std::vector<std::string> restart_only_changes(const Config& started, const Config& next);

// Why the reload must be refused whole ("" when it may go ahead): a changed
// redis section would move pins to a new namespace or server on the old
// connections. Names the first changed key.
std::string reload_refusal(const Config& started, const Config& next);

}  // namespace canaryd::config
