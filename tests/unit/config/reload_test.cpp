// config/reload.hpp: what a SIGHUP reload may change.
#include "config/reload.hpp"

#include <gtest/gtest.h>

#include <string>

namespace canaryd::config {
namespace {

const std::string kBase = R"(upstreams:
  a:
    base_url: "http://127.0.0.1:9101/v1"
  b:
    base_url: "https://b.example.com"
split:
  control: a
  canary: b
)";

Config load(const std::string& extra) { return load_string(kBase + extra, "t.yaml"); }

TEST(Reload, ListenAndThreadsApplyOnlyAfterARestart) {
  Config a = load("server:\n  listen: \"127.0.0.1:8080\"\n  threads: 2\n");
  EXPECT_TRUE(restart_only_changes(a, a).empty());
  Config b = load("server:\n  listen: \"127.0.0.1:8081\"\n  threads: 3\n");
  EXPECT_EQ(restart_only_changes(a, b), (std::vector<std::string>{"server.listen", "server.threads"}));
  Config c = load("server:\n  listen: \"127.0.0.1:8080\"\n  threads: 2\n  idle_timeout: 5s\n");
  EXPECT_TRUE(restart_only_changes(a, c).empty());
}

TEST(Reload, AChangedRedisSectionIsRefusedNamingTheKey) {
  Config none = load("");
  Config r = load("redis:\n  url: \"redis://127.0.0.1:6379/0\"\n");
  EXPECT_EQ(reload_refusal(none, none), "");
  EXPECT_EQ(reload_refusal(r, r), "");
  EXPECT_EQ(reload_refusal(none, r).rfind("redis: restart canaryd", 0), 0u);
  EXPECT_EQ(reload_refusal(r, none).rfind("redis: restart canaryd", 0), 0u);
  const std::pair<const char*, const char*> cases[] = {
      {"redis:\n  url: \"redis://127.0.0.1:6380/0\"\n", "redis.url"},
      {"redis:\n  url: \"redis://127.0.0.1:6379/1\"\n", "redis.url"},
      {"redis:\n  url: \"redis://127.0.0.1:6379/0\"\n  timeout: 50ms\n", "redis.timeout"},
      {"redis:\n  url: \"redis://127.0.0.1:6379/0\"\n  namespace: other\n", "redis.namespace"},
  };
  for (const auto& [yaml, key] : cases) {
    std::string why = reload_refusal(r, load(yaml));
    EXPECT_EQ(why.rfind(std::string(key) + ": restart canaryd", 0), 0u) << yaml << " -> " << why;
  }
  // Other sections change freely.
  EXPECT_EQ(reload_refusal(r, load("redis:\n  url: \"redis://127.0.0.1:6379/0\"\nserver:\n  threads: 4\n")), "");
}

}  // namespace
}  // namespace canaryd::config
