#include "config/reload.hpp"

namespace canaryd::config {

std::vector<std::string> restart_only_changes(const Config& started, const Config& next) {
  std::vector<std::string> keys;
  if (started.server.listen != next.server.listen) keys.emplace_back("server.listen");
  if (started.server.threads != next.server.threads) keys.emplace_back("server.threads");
  return keys;
}

std::string reload_refusal(const Config& started, const Config& next) {
  const char* kRestart = ": restart canaryd to change it (a reload cannot move the Redis connections)";
  // Each experiment has its own controller, Redis keys and metric series,
  // made at start-up: a reload may retune them, not add, drop or reorder them.
  auto names = [](const Config& c) {
    std::string out;
    for (const auto& e : c.experiments) out += (out.empty() ? "" : ", ") + e.name;
    return out;
  };
  if (names(started) != names(next)) {
    return "experiments: the list changed (" + names(started) + " -> " + names(next) +
           "): restart canaryd to add, remove, rename or reorder an experiment";
  }
  if (started.redis.has_value() != next.redis.has_value()) return std::string("redis") + kRestart;
  if (!started.redis) return "";
  const auto& a = *started.redis;
  const auto& b = *next.redis;
  const char* key = nullptr;
  // url is canonical: it holds the whole topology (sentinels, master name, cluster seeds).
  if (a.url != b.url) {
    key = "redis.url";
  } else if (a.username != b.username) {
    key = "redis.username";
  } else if (a.password_env != b.password_env || a.password_value != b.password_value) {
    key = "redis.password_env";
  } else if (a.sentinel_password_env != b.sentinel_password_env ||
             a.sentinel_password_value != b.sentinel_password_value) {
    key = "redis.sentinel_password_env";
  } else if (a.timeout != b.timeout) {
    key = "redis.timeout";
  } else if (a.ns != b.ns) {
    key = "redis.namespace";
  } else if (a.tls_verify != b.tls_verify) {
    key = "redis.tls_verify";
  } else if (a.ca_file != b.ca_file) {
    key = "redis.ca_file";
  }
  return key ? std::string(key) + kRestart : "";
}

}  // namespace canaryd::config
