// Unit tests for the config loader: defaults, each section, durations, URLs,
// secrets, error messages (file, line, key path) and the shipped configs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "canaryd/config.hpp"
#include "config/parse_util.hpp"

namespace canaryd::config {
namespace {

const std::string kMinimal = R"(upstreams:
  a:
    base_url: "http://127.0.0.1:9101/v1"
  b:
    base_url: "https://b.example.com"
split:
  control: a
  canary: b
)";

std::string error_of(const std::string& yaml) {
  try {
    load_string(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// kMinimal plus one more section.
std::string with(const std::string& extra) { return kMinimal + extra; }

TEST(ConfigDefaults, MinimalConfigGetsStructDefaults) {
  Config c = load_string(kMinimal, "t.yaml");
  ServerConfig sd;
  EXPECT_EQ(c.source_path, "t.yaml");
  EXPECT_EQ(c.server.listen, sd.listen);
  EXPECT_EQ(c.server.listen_host, "0.0.0.0");
  EXPECT_EQ(c.server.listen_port, 8080);
  EXPECT_EQ(c.server.threads, 0);
  EXPECT_EQ(c.server.max_body_bytes, sd.max_body_bytes);
  EXPECT_EQ(c.server.max_header_bytes, sd.max_header_bytes);
  EXPECT_EQ(c.server.max_connections, sd.max_connections);
  EXPECT_EQ(c.server.header_timeout, 10s);
  EXPECT_EQ(c.server.idle_timeout, 60s);
  EXPECT_EQ(c.server.drain_delay, 5s);
  EXPECT_EQ(c.server.shutdown_grace, 30s);
  EXPECT_TRUE(c.server.client_keys_value.empty());
  EXPECT_TRUE(c.server.admin_token_env.empty());
  EXPECT_TRUE(c.server.trusted_proxies.empty());
  EXPECT_TRUE(c.server.access_log);

  const UpstreamConfig& a = c.upstreams.at("a");
  UpstreamConfig ud;
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.connect_timeout, ud.connect_timeout);
  EXPECT_EQ(a.timeout, ud.timeout);
  EXPECT_EQ(a.stream_idle_timeout, ud.stream_idle_timeout);
  EXPECT_EQ(a.max_connections, ud.max_connections);
  EXPECT_EQ(a.pool_wait, ud.pool_wait);
  EXPECT_EQ(a.max_response_bytes, ud.max_response_bytes);
  EXPECT_TRUE(a.tls_verify);
  EXPECT_TRUE(a.proxy.empty());
  EXPECT_TRUE(a.models.empty());

  EXPECT_EQ(c.split.sticky_key, SplitConfig{}.sticky_key);
  EXPECT_EQ(c.split.pin_ttl, 1h);
  EXPECT_EQ(c.split.override_header, "X-Canary");
  EXPECT_EQ(c.split.salt, "");
  EXPECT_TRUE(c.rollout.steps.empty());
  EXPECT_EQ(c.rollout.analysis.interval, 10s);
  EXPECT_EQ(c.rollout.analysis.window, 5min);
  EXPECT_EQ(c.rollout.analysis.min_requests, 100u);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.max_error_rate, 0.01);
  EXPECT_EQ(c.rollout.analysis.max_p99_latency, 0ms);  // issue 14: the absolute ceiling is optional
  EXPECT_TRUE(c.rollout.analysis.relative_to_control);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.alpha, 0.01);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.critical_error_rate, 0.2);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.max_latency_increase, 0.25);
  EXPECT_EQ(c.rollout.analysis.latency_tolerance, 10ms);
  EXPECT_EQ(c.rollout.analysis.failure_limit, 2u);
  EXPECT_EQ(c.rollout.analysis.inconclusive_limit, 60u);
  for (const auto& check : c.rollout.analysis.checks) {
    EXPECT_TRUE(check.enabled);
    EXPECT_FALSE(check.dry_run);
    EXPECT_FALSE(check.critical);
    EXPECT_DOUBLE_EQ(check.max_increase, 0.5);
    EXPECT_FALSE(check.lower_is_worse);
  }
  EXPECT_TRUE(c.rollout.analysis.srm.enabled);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.srm.alpha, 0.001);
  EXPECT_EQ(c.rollout.on_failure, OnFailure::rollback);
  EXPECT_TRUE(c.rollout.auto_promote);
  EXPECT_TRUE(c.fallback.enabled);
  EXPECT_EQ(c.fallback.on, FallbackConfig{}.on);
  EXPECT_DOUBLE_EQ(c.fallback.budget, 0.2);
  EXPECT_FALSE(c.redis.has_value());
  EXPECT_TRUE(c.pricing.empty());
  EXPECT_EQ(c.metrics.prefix, "ai_proxy");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.control().name, "a");
  EXPECT_EQ(c.canary().name, "b");
}

TEST(ConfigSections, Server) {
  Config c = load_string(with(R"(server:
  listen: "[::1]:0"
  threads: 4
  max_body_bytes: 1024
  max_header_bytes: 8192
  max_connections: 5
  header_timeout: 2s
  idle_timeout: 1m30s
  drain_delay: 0
  shutdown_grace: 500ms
  trusted_proxies: ["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]
  access_log: false
)"));
  EXPECT_EQ(c.server.listen, "[::1]:0");
  EXPECT_EQ(c.server.listen_host, "::1");
  EXPECT_EQ(c.server.listen_port, 0);
  EXPECT_EQ(c.server.threads, 4);
  EXPECT_EQ(c.server.max_body_bytes, 1024u);
  EXPECT_EQ(c.server.max_header_bytes, 8192u);
  EXPECT_EQ(c.server.max_connections, 5u);
  EXPECT_EQ(c.server.header_timeout, 2s);
  EXPECT_EQ(c.server.idle_timeout, 90s);
  EXPECT_EQ(c.server.drain_delay, 0ms);
  EXPECT_EQ(c.server.shutdown_grace, 500ms);
  EXPECT_EQ(c.server.trusted_proxies,
            (std::vector<std::string>{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::1/128"}));
  EXPECT_FALSE(c.server.access_log);
}

TEST(ConfigSections, UpstreamAllKeys) {
  Config c = load_string(R"(upstreams:
  openai:
    base_url: "https://api.openai.com/v1/"
    api_key_env: CANARYD_TEST_UNSET_KEY
    connect_timeout: 2s
    timeout: 45s
    stream_idle_timeout: 20s
    max_connections: 8
    max_idle_connections: 3
    pool_wait: 0
    max_response_bytes: 1000
    tls_verify: false
    ca_file: ""
    proxy: "http://proxy.local:3128"
    models: { "gpt-4.1": "gpt-4.1-2025" }
  local:
    base_url: "http://[::1]:9000"
split: { control: openai, canary: local }
)",
                         "t.yaml");
  const auto& u = c.upstreams.at("openai");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "api.openai.com");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.base_path, "/v1");
  EXPECT_EQ(u.api_key_env, "CANARYD_TEST_UNSET_KEY");
  EXPECT_EQ(u.api_key_value, "");
  EXPECT_EQ(u.connect_timeout, 2s);
  EXPECT_EQ(u.timeout, 45s);
  EXPECT_EQ(u.stream_idle_timeout, 20s);
  EXPECT_EQ(u.max_connections, 8u);
  EXPECT_EQ(u.max_idle_connections, 3u);
  EXPECT_EQ(u.pool_wait, 0ms);
  EXPECT_EQ(u.max_response_bytes, 1000u);
  EXPECT_FALSE(u.tls_verify);
  EXPECT_EQ(u.proxy_host, "proxy.local");
  EXPECT_EQ(u.proxy_port, 3128);
  EXPECT_EQ(u.models.at("gpt-4.1"), "gpt-4.1-2025");
  const auto& l = c.upstreams.at("local");
  EXPECT_FALSE(l.tls);
  EXPECT_EQ(l.host, "::1");
  EXPECT_EQ(l.port, 9000);
  EXPECT_EQ(l.base_path, "");
}

TEST(ConfigSections, UrlDefaultPorts) {
  Config c = load_string(R"(upstreams:
  a: { base_url: "http://Example.com" }
  b: { base_url: "HTTPS://[2001:db8::1]/api/v2" }
split: { control: a, canary: b }
)");
  EXPECT_EQ(c.upstreams.at("a").port, 80);
  EXPECT_FALSE(c.upstreams.at("a").tls);
  EXPECT_EQ(c.upstreams.at("b").port, 443);
  EXPECT_TRUE(c.upstreams.at("b").tls);
  EXPECT_EQ(c.upstreams.at("b").host, "2001:db8::1");
  EXPECT_EQ(c.upstreams.at("b").base_path, "/api/v2");
}

TEST(ConfigSections, SplitRolloutFallback) {
  Config c = load_string(with(R"(  sticky_key: ["header:X-Team", "client_ip"]
  salt: "exp-1"
  pin_ttl: 0
  override_header: X-Force-Arm
rollout:
  steps:
    - { weight: 50, pause: 1m }
    - { weight: 0.5, pause: 10m }
    - weight: 100
  analysis:
    interval: 5s
    window: 1m
    min_requests: 20
    max_error_rate: 0.05
    max_p99_latency: 2s
    relative_to_control: false
  on_failure: pause
  auto_promote: false
fallback:
  enabled: false
  on: [timeout, tls_error]
  models: { "gpt-4.1": "gemini-2.5-flash" }
  budget: 1
)"));
  EXPECT_EQ(c.split.sticky_key, (std::vector<std::string>{"header:X-Team", "client_ip"}));
  EXPECT_EQ(c.split.salt, "exp-1");
  EXPECT_EQ(c.split.pin_ttl, 0ms);
  EXPECT_EQ(c.split.override_header, "X-Force-Arm");
  ASSERT_EQ(c.rollout.steps.size(), 3u);
  EXPECT_DOUBLE_EQ(c.rollout.steps[0].weight, 50);
  EXPECT_EQ(c.rollout.steps[0].pause, 1min);
  EXPECT_DOUBLE_EQ(c.rollout.steps[1].weight, 0.5);  // any order is allowed
  EXPECT_EQ(c.rollout.steps[2].pause, 0ms);
  EXPECT_EQ(c.rollout.analysis.interval, 5s);
  EXPECT_EQ(c.rollout.analysis.window, 1min);
  EXPECT_EQ(c.rollout.analysis.min_requests, 20u);
  EXPECT_DOUBLE_EQ(c.rollout.analysis.max_error_rate, 0.05);
  EXPECT_EQ(c.rollout.analysis.max_p99_latency, 2s);
  EXPECT_FALSE(c.rollout.analysis.relative_to_control);
  EXPECT_EQ(c.rollout.on_failure, OnFailure::pause);
  EXPECT_FALSE(c.rollout.auto_promote);
  EXPECT_FALSE(c.fallback.enabled);
  EXPECT_EQ(c.fallback.on, (std::vector<std::string>{"timeout", "tls_error"}));
  EXPECT_EQ(c.fallback.models.at("gpt-4.1"), "gemini-2.5-flash");
  EXPECT_DOUBLE_EQ(c.fallback.budget, 1.0);
}

TEST(ConfigSections, RedisPricingMetricsLog) {
  Config c = load_string(with(R"(redis:
  url: "rediss://cache.example.com/3"
  timeout: 50ms
  namespace: prod
  tls_verify: false
pricing:
  "gpt-4.1": { input: 8.00, output: 32 }
metrics:
  prefix: my_proxy
log:
  level: debug
)"));
  ASSERT_TRUE(c.redis.has_value());
  EXPECT_TRUE(c.redis->tls);
  EXPECT_EQ(c.redis->host, "cache.example.com");
  EXPECT_EQ(c.redis->port, 6379);
  EXPECT_EQ(c.redis->db, 3);
  EXPECT_EQ(c.redis->timeout, 50ms);
  EXPECT_EQ(c.redis->ns, "prod");
  EXPECT_FALSE(c.redis->tls_verify);
  EXPECT_DOUBLE_EQ(c.pricing.at("gpt-4.1").input, 8.0);
  EXPECT_DOUBLE_EQ(c.pricing.at("gpt-4.1").output, 32.0);
  EXPECT_EQ(c.metrics.prefix, "my_proxy");
  EXPECT_EQ(c.log.level, "debug");
}

TEST(ConfigSections, RedisDefaultsWhenSectionEmpty) {
  Config c = load_string(with("redis:\n  url: \"redis://[::1]:7000\"\n"));
  ASSERT_TRUE(c.redis);
  EXPECT_FALSE(c.redis->tls);
  EXPECT_EQ(c.redis->host, "::1");
  EXPECT_EQ(c.redis->port, 7000);
  EXPECT_EQ(c.redis->db, 0);
  EXPECT_EQ(c.redis->ns, "canaryd");
  EXPECT_EQ(c.redis->timeout, 20ms);
}

TEST(ConfigSections, RedisSentinelUrl) {
  Config c =
      load_string(with("redis:\n  url: \"rediss+sentinel://canaryd@s1:26380,s2,[::1]:26381/mymaster/2\"\n"
                       "  sentinel_password_env: CANARYD_T_UNSET_SENTINEL_PW\n"));
  ASSERT_TRUE(c.redis);
  const RedisConfig& r = *c.redis;
  EXPECT_EQ(r.mode, RedisMode::sentinel);
  EXPECT_TRUE(r.tls);
  ASSERT_EQ(r.nodes.size(), 3u);
  EXPECT_EQ(r.nodes[0].host, "s1");
  EXPECT_EQ(r.nodes[0].port, 26380);
  EXPECT_EQ(r.nodes[1].host, "s2");
  EXPECT_EQ(r.nodes[1].port, 26379);  // the Sentinel port by default
  EXPECT_EQ(r.nodes[2].host, "::1");
  EXPECT_EQ(r.nodes[2].port, 26381);
  EXPECT_EQ(r.master_name, "mymaster");
  EXPECT_EQ(r.db, 2);
  EXPECT_EQ(r.username, "canaryd");  // a user name is no secret; a password still is
  EXPECT_EQ(r.url, "rediss+sentinel://canaryd@s1:26380,s2,[::1]:26381/mymaster/2");  // as written
  EXPECT_EQ(r.sentinel_password_env, "CANARYD_T_UNSET_SENTINEL_PW");
  EXPECT_EQ(load_string(with("redis:\n  url: \"redis+sentinel://s1/m\"\n")).redis->db, 0);
}

TEST(ConfigSections, RedisSentinelListAndUsernameKeysMakeTheCanonicalUrl) {
  Config c = load_string(with(R"(redis:
  sentinels: ["10.0.0.1:26379", "10.0.0.2", "[fd00::3]:26380"]
  master_name: cache-1
  username: canaryd
)"));
  const RedisConfig& r = *c.redis;
  EXPECT_EQ(r.mode, RedisMode::sentinel);
  EXPECT_FALSE(r.tls);
  ASSERT_EQ(r.nodes.size(), 3u);
  EXPECT_EQ(r.nodes[1].port, 26379);
  EXPECT_EQ(r.host, "10.0.0.1");
  EXPECT_EQ(r.master_name, "cache-1");
  EXPECT_EQ(r.url, "redis+sentinel://canaryd@10.0.0.1:26379,10.0.0.2:26379,[fd00::3]:26380/cache-1/0");
  // The printed config says the same thing in its one-key form, and reads back to it.
  Config back = load_string(to_yaml_redacted(c));
  EXPECT_EQ(back.redis->url, r.url);
  EXPECT_EQ(back.redis->username, "canaryd");
  EXPECT_EQ(back.redis->master_name, "cache-1");
  EXPECT_EQ(back.redis->nodes.size(), 3u);
  EXPECT_EQ(to_yaml_redacted(back), to_yaml_redacted(c));
  // A master name given by key to a URL without one.
  EXPECT_EQ(load_string(with("redis:\n  url: \"redis+sentinel://s1\"\n  master_name: m\n")).redis->url,
            "redis+sentinel://s1:26379/m/0");
}

TEST(ConfigSections, RedisCluster) {
  Config c = load_string(with("redis:\n  url: \"redis+cluster://n1:7000,n2:7001,n3\"\n"));
  const RedisConfig& r = *c.redis;
  EXPECT_EQ(r.mode, RedisMode::cluster);
  EXPECT_FALSE(r.tls);
  ASSERT_EQ(r.nodes.size(), 3u);
  EXPECT_EQ(r.nodes[2].port, 6379);
  EXPECT_EQ(r.db, 0);
  // redis.cluster: true turns a one-host URL into a seed node; rediss:// keeps TLS.
  Config k =
      load_string(with("redis:\n  url: \"rediss://node-1.example.com:6380\"\n  cluster: true\n"
                       "  username: app\n"));
  EXPECT_EQ(k.redis->mode, RedisMode::cluster);
  EXPECT_TRUE(k.redis->tls);
  ASSERT_EQ(k.redis->nodes.size(), 1u);
  EXPECT_EQ(k.redis->nodes[0].host, "node-1.example.com");
  EXPECT_EQ(k.redis->url, "rediss+cluster://app@node-1.example.com:6380");
  EXPECT_EQ(load_string(to_yaml_redacted(k)).redis->mode, RedisMode::cluster);
  EXPECT_EQ(load_string(with("redis:\n  url: \"redis://a:7000/0\"\n  cluster: false\n")).redis->mode,
            RedisMode::standalone);
  EXPECT_EQ(load_string(with("redis:\n  url: \"redis+cluster://a/0\"\n")).redis->mode, RedisMode::cluster);
}

TEST(ConfigErrors, RedisTopologyKeysNameTheKeyAndLine) {
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://a:1,b:2/0\"\n")),
            "t.yaml:10: redis.url: one host only in a redis:// URL (several: redis+sentinel:// or redis+cluster://)");
  EXPECT_EQ(
      error_of(with("redis:\n  url: \"redis+sentinel://s1,s2\"\n")),
      "t.yaml:10: redis.url: the master name is missing: redis+sentinel://host1:26379,host2:26379/<master>[/<db>], "
      "or set redis.master_name");
  EXPECT_EQ(
      error_of(with("redis:\n  url: \"redis+sentinel://s1/m/x\"\n")),
      "t.yaml:10: redis.url: database must be a number, as in redis+sentinel://host:26379/mymaster/0, got \"/x\"");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis+sentinel://s1,,s2/m\"\n")),
            "t.yaml:10: redis.url: empty host in the host list");
  EXPECT_EQ(
      error_of(with("redis:\n  url: \"redis+cluster://a,b/3\"\n")),
      "t.yaml:10: redis.url: Redis Cluster has only db 0: write redis+cluster://host1:6379,host2:6379 with no path");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://a/3\"\n  cluster: true\n")),
            "t.yaml:10: redis.url: Redis Cluster has only db 0, got db 3");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis+cluster://a\"\n  cluster: false\n")),
            "t.yaml:11: redis.cluster: is false, but redis.url is a redis+cluster:// URL: remove one of them");
  EXPECT_EQ(error_of(with("redis:\n  sentinels: [\"s1\"]\n  master_name: m\n  cluster: true\n")),
            "t.yaml:12: redis.cluster: Sentinel and Cluster are two topologies: choose one");
  EXPECT_EQ(error_of(with("redis:\n  sentinels: [\"s1:26379\"]\n")),
            "t.yaml:10: redis.sentinels: redis.master_name is required with redis.sentinels (the name the sentinels "
            "monitor)");
  EXPECT_EQ(error_of(with("redis:\n  sentinels: []\n  master_name: m\n")),
            "t.yaml:10: redis.sentinels: must list at least one sentinel (\"host:port\")");
  EXPECT_EQ(error_of(with("redis:\n  sentinels:\n    - \"s1:26379\"\n    - \"s2:99999\"\n  master_name: m\n")),
            "t.yaml:12: redis.sentinels[1]: invalid port \"99999\" (expected 1..65535) (expected \"host:port\", e.g. "
            "\"10.0.0.1:26379\")");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://a\"\n  sentinels: [\"s1\"]\n  master_name: m\n")),
            "t.yaml:11: redis.sentinels: redis.url is given too: name the sentinels in one place, either here (with "
            "redis.master_name) or as redis.url: \"redis+sentinel://host1:26379,host2:26379/<master>\"");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis+sentinel://s1/one\"\n  master_name: two\n")),
            "t.yaml:11: redis.master_name: redis.url names the master already (\"one\"): give it in one place");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://a\"\n  master_name: m\n")),
            "t.yaml:11: redis.master_name: only with Sentinel (redis.sentinels, or redis.url: "
            "\"redis+sentinel://host:26379/<master>\")");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://a\"\n  sentinel_password_env: X\n")),
            "t.yaml:11: redis.sentinel_password_env: only with Sentinel (the sentinels' own password)");
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://alice@a\"\n  username: bob\n")),
            "t.yaml:11: redis.username: redis.url names another user (\"alice\"): give it in one place");
  EXPECT_EQ(error_of(with("redis:\n  username: \"a b\"\n")),
            "t.yaml:10: redis.username: invalid ACL user name, got \"a b\"");
  EXPECT_EQ(error_of(with("redis:\n  namespace: \"{x}\"\n")),
            "t.yaml:10: redis.namespace: must not contain '{' or '}' (Redis Cluster hash tags)");
}

TEST(ConfigDurations, Parse) {
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("10m"), 10min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("1h30m"), 90min);
  EXPECT_EQ(parse_duration("1m30s500ms"), 90500ms);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration("0"), 0ms);
  EXPECT_EQ(parse_duration("0s"), 0ms);
  for (const char* bad : {"", "-5s", "abc", "30", "5x", "s", "1.5ms", "30s1h", "1h1h", "1.s", "5 s"})
    EXPECT_THROW(parse_duration(bad), std::invalid_argument) << bad;
}

TEST(ConfigDurations, FormatRoundTrips) {
  using detail::format_duration;
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(500ms), "500ms");
  EXPECT_EQ(format_duration(30s), "30s");
  EXPECT_EQ(format_duration(5min), "5m");
  EXPECT_EQ(format_duration(90min), "1h30m");
  EXPECT_EQ(format_duration(1500ms), "1s500ms");
  for (auto d : {0ms, 1ms, 999ms, 61001ms, 3723004ms}) EXPECT_EQ(parse_duration(format_duration(d)), d);
}

TEST(ConfigDurations, BadDurationInFileNamesKeyAndLine) {
  EXPECT_EQ(error_of(with("server:\n  idle_timeout: -5s\n")),
            "t.yaml:10: server.idle_timeout: negative duration \"-5s\"");
  EXPECT_EQ(error_of(with("server:\n  header_timeout: 0\n")),
            "t.yaml:10: server.header_timeout: must be greater than zero");
  EXPECT_EQ(error_of(with("server:\n  drain_delay: 30\n")),
            "t.yaml:10: server.drain_delay: duration \"30\" needs a unit (ms, s, m, h), e.g. \"30s\"");
}

TEST(ConfigErrors, UnknownKeyWithLineAndSuggestion) {
  EXPECT_EQ(error_of(with("server:\n  threads: 2\n  listn: \"1.2.3.4:80\"\n")),
            "t.yaml:11: server.listn: unknown key (did you mean \"listen\"?)");
  EXPECT_EQ(error_of(with("bogus_section_name: 1\n")), "t.yaml:9: bogus_section_name: unknown key");
  EXPECT_EQ(error_of(R"(upstreams:
  a:
    base_url: "http://a"
    timout: 5s
)"),
            "t.yaml:4: upstreams.a.timout: unknown key (did you mean \"timeout\"?)");
}

TEST(ConfigErrors, RolloutStepPath) {
  EXPECT_EQ(error_of(with(R"(rollout:
  steps:
    - { weight: 10 }
    - { weight: 25 }
    - { weight: 0.125 }
)")),
            "t.yaml:13: rollout.steps[2].weight: at most two decimals allowed, got \"0.125\"");
  EXPECT_EQ(error_of(with("rollout:\n  steps:\n    - { weight: 101 }\n")),
            "t.yaml:11: rollout.steps[0].weight: must be between 0 and 100, got \"101\"");
  EXPECT_EQ(error_of(with("rollout:\n  steps:\n    - { pause: 1m }\n")),
            "t.yaml:11: rollout.steps[0].weight: required key missing");
}

TEST(ConfigErrors, BadEnums) {
  EXPECT_EQ(error_of(with("rollout:\n  on_failure: explode\n")),
            "t.yaml:10: rollout.on_failure: expected rollback or pause, got \"explode\"");
  EXPECT_EQ(error_of(with("fallback:\n  on: [timeout, 404]\n")),
            "t.yaml:10: fallback.on[1]: expected one of connect_error, tls_error, timeout, 5xx, 429, got \"404\"");
  EXPECT_EQ(error_of(with("log:\n  level: loud\n")),
            "t.yaml:10: log.level: expected one of trace, debug, info, warn, error, off, got \"loud\"");
  EXPECT_EQ(
      error_of(with("  sticky_key: [\"cookie:sid\"]\n")),
      "t.yaml:9: split.sticky_key[0]: expected \"header:NAME\", \"body:user\" or \"client_ip\", got \"cookie:sid\"");
  EXPECT_EQ(error_of(with("  override_header: \"X Canary\"\n")),
            "t.yaml:9: split.override_header: \"X Canary\" is not a valid header name");
  EXPECT_EQ(error_of(with("server:\n  access_log: maybe\n")),
            "t.yaml:10: server.access_log: expected true or false, got \"maybe\"");
}

// Issue 14's analysis keys: the judge's budget, limits, per-check options and
// the SRM check.
TEST(ConfigAnalysis, JudgeKeys) {
  Config c = load_string(with(R"(rollout:
  analysis:
    alpha: 0.005
    max_error_rate: 0.02
    critical_error_rate: 0.3
    max_p99_latency: 30s
    max_latency_increase: 0.5
    latency_tolerance: 0
    failure_limit: 3
    inconclusive_limit: 0
    checks:
      ttfb: { critical: true }
      truncated: { max_increase: 1, dry_run: true }
      empty: { enabled: false }
      tool_call_json: { direction: decrease }
    srm: { enabled: false, alpha: 0.0001 }
)"),
                         "t.yaml");
  const auto& a = c.rollout.analysis;
  EXPECT_DOUBLE_EQ(a.alpha, 0.005);
  EXPECT_DOUBLE_EQ(a.critical_error_rate, 0.3);
  EXPECT_EQ(a.max_p99_latency, 30s);
  EXPECT_DOUBLE_EQ(a.max_latency_increase, 0.5);
  EXPECT_EQ(a.latency_tolerance, 0ms);
  EXPECT_EQ(a.failure_limit, 3u);
  EXPECT_EQ(a.inconclusive_limit, 0u);
  EXPECT_TRUE(a.check(CheckId::ttfb).critical);
  EXPECT_FALSE(a.check(CheckId::duration).critical);
  EXPECT_DOUBLE_EQ(a.check(CheckId::truncated).max_increase, 1);
  EXPECT_TRUE(a.check(CheckId::truncated).dry_run);
  EXPECT_FALSE(a.check(CheckId::empty).enabled);
  EXPECT_TRUE(a.check(CheckId::tool_call_json).lower_is_worse);
  EXPECT_FALSE(a.srm.enabled);
  EXPECT_DOUBLE_EQ(a.srm.alpha, 0.0001);
  // --check-config prints them and reads back the same.
  const std::string out = to_yaml_redacted(c);
  EXPECT_EQ(to_yaml_redacted(load_string(out, "back.yaml")), out);
  EXPECT_NE(out.find("tool_call_json: {enabled: true, dry_run: false, critical: false, max_increase: 0.5, "
                     "direction: decrease}"),
            std::string::npos)
      << out;

  // A max_error_rate above the default critical rate pulls the critical rate up.
  EXPECT_DOUBLE_EQ(load_string(with("rollout:\n  analysis:\n    max_error_rate: 0.4\n"), "t.yaml")
                       .rollout.analysis.critical_error_rate,
                   0.4);
}

TEST(ConfigAnalysis, JudgeKeyErrorsNameTheKey) {
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    alpha: 0\n")),
            "t.yaml:11: rollout.analysis.alpha: must be above 0 (the chance of rolling back a healthy canary), got "
            "\"0\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    alpha: 0.7\n")),
            "t.yaml:11: rollout.analysis.alpha: must be between 0 and 0.5, got \"0.7\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    max_error_rate: 0.1\n    critical_error_rate: 0.05\n")),
            "t.yaml:12: rollout.analysis.critical_error_rate: must not be below rollout.analysis.max_error_rate "
            "(0.1), got \"0.05\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    failure_limit: 0\n")),
            "t.yaml:11: rollout.analysis.failure_limit: must be between 1 and 1000, got \"0\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    checks:\n      truncate: {}\n")),
            "t.yaml:12: rollout.analysis.checks.truncate: unknown key (did you mean \"truncated\"?)");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    checks:\n      duration: { max_increase: 0.5 }\n")),
            "t.yaml:12: rollout.analysis.checks.duration.max_increase: the latency checks' allowed increase is "
            "rollout.analysis.max_latency_increase");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    checks:\n      error_rate: { direction: decrease }\n")),
            "t.yaml:12: rollout.analysis.checks.error_rate.direction: applies to the quality checks only");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    checks:\n      empty: { direction: down }\n")),
            "t.yaml:12: rollout.analysis.checks.empty.direction: expected increase (a higher share is worse) or "
            "decrease, got \"down\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    checks:\n      critical_error_rate: { critical: false }\n")),
            "t.yaml:12: rollout.analysis.checks.critical_error_rate.critical: the critical error-rate check is "
            "always critical");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    srm: { alpha: 0 }\n")),
            "t.yaml:11: rollout.analysis.srm.alpha: must be above 0, got \"0\"");
}

TEST(ConfigErrors, NumbersOutOfRange) {
  EXPECT_EQ(error_of(with("fallback:\n  budget: 1.5\n")),
            "t.yaml:10: fallback.budget: must be between 0 and 1, got \"1.5\"");
  EXPECT_EQ(error_of(with("rollout:\n  analysis:\n    max_error_rate: -0.1\n")),
            "t.yaml:11: rollout.analysis.max_error_rate: must be between 0 and 1, got \"-0.1\"");
  EXPECT_EQ(error_of(with("server:\n  threads: -1\n")),
            "t.yaml:10: server.threads: must be between 0 and 1024, got \"-1\"");
  EXPECT_EQ(error_of(with("server:\n  max_connections: 0\n")),
            "t.yaml:10: server.max_connections: must be between 1 and 10000000, got \"0\"");
  EXPECT_EQ(error_of(with("server:\n  max_body_bytes: lots\n")),
            "t.yaml:10: server.max_body_bytes: expected an integer >= 1, got \"lots\"");
  EXPECT_EQ(error_of(with("server:\n  listen: \"0.0.0.0:70000\"\n")),
            "t.yaml:10: server.listen: invalid port \"70000\" (expected 0..65535) (expected \"host:port\" or "
            "\"[v6]:port\")");
  EXPECT_EQ(error_of(with("server:\n  trusted_proxies: [\"10.0.0.0/33\"]\n")),
            "t.yaml:10: server.trusted_proxies[0]: invalid prefix length \"33\" (expected 0..32)");
  EXPECT_NE(error_of(with("server:\n  trusted_proxies: [\"10.0.0.300\"]\n")).find("invalid IP address"),
            std::string::npos);
}

TEST(ConfigErrors, SplitReferences) {
  EXPECT_EQ(error_of(R"(upstreams:
  a: { base_url: "http://a" }
  b: { base_url: "http://b" }
split:
  control: a
  canary: a
)"),
            "t.yaml:6: split.canary: must name a different upstream than split.control");
  EXPECT_EQ(error_of(R"(upstreams:
  a: { base_url: "http://a" }
  b: { base_url: "http://b" }
split:
  control: a
  canary: c
)"),
            "t.yaml:6: split.canary: unknown upstream \"c\" (defined: a, b)");
  EXPECT_EQ(error_of(R"(upstreams:
  a: { base_url: "http://a" }
  b: { base_url: "http://b" }
split:
  canary: b
)"),
            "t.yaml:4: split.control: required key missing");
  EXPECT_EQ(error_of("server: {}\n"), "t.yaml:1: upstreams: required key missing");
  EXPECT_EQ(error_of(""), "t.yaml:1: upstreams: required key missing");
}

TEST(ConfigErrors, Urls) {
  auto up = [](const std::string& url) {
    return "upstreams:\n  a: { base_url: \"" + url +
           "\" }\n  b: { base_url: \"http://b\" }\nsplit: { control: a, canary: b }\n";
  };
  EXPECT_EQ(error_of(up("ftp://x")),
            "t.yaml:2: upstreams.a.base_url: scheme must be http:// or https://, got \"ftp://\"");
  EXPECT_EQ(error_of(up("api.openai.com/v1")),
            "t.yaml:2: upstreams.a.base_url: not a URL (expected scheme://host[:port][/path])");
  EXPECT_EQ(error_of(up("https://::1/v1")),
            "t.yaml:2: upstreams.a.base_url: an IPv6 address must be written in brackets, e.g. \"[::1]:8080\"");
  EXPECT_EQ(error_of(up("https://[::1/v1")), "t.yaml:2: upstreams.a.base_url: missing ']' after IPv6 address");
  EXPECT_EQ(error_of(up("https://host:0/v1")),
            "t.yaml:2: upstreams.a.base_url: invalid port \"0\" (expected 1..65535)");
  EXPECT_EQ(error_of(up("https://u:hunter2@host/v1")),
            "t.yaml:2: upstreams.a.base_url: credentials in the URL are not allowed: name an environment variable in "
            "api_key_env");
  EXPECT_EQ(error_of(up("https://host/v1?x=1")),
            "t.yaml:2: upstreams.a.base_url: a query string or fragment is not allowed in this URL");
}

TEST(ConfigErrors, ProxyUrl) {
  auto px = [](const std::string& proxy) {
    return "upstreams:\n  a: { base_url: \"https://a\", proxy: \"" + proxy +
           "\" }\n  b: { base_url: \"http://b\" }\nsplit: { control: a, canary: b }\n";
  };
  EXPECT_EQ(load_string(px("http://[fd00::1]:8888")).upstreams.at("a").proxy_host, "fd00::1");
  EXPECT_EQ(
      error_of(px("https://p:3128")),
      "t.yaml:2: upstreams.a.proxy: only http:// proxies are supported (HTTP CONNECT), e.g. \"http://proxy:3128\"");
  EXPECT_EQ(error_of(px("http://p")), "t.yaml:2: upstreams.a.proxy: missing port (expected \"http://host:port\")");
}

TEST(ConfigErrors, RedisUrlWithPasswordRejectedAndNotEchoed) {
  std::string msg = error_of(with("redis:\n  url: \"redis://:s3cretpw@cache:6379/0\"\n"));
  EXPECT_EQ(msg,
            "t.yaml:10: redis.url: a password in the URL is not allowed (secrets come only from the environment): "
            "remove it and name the variable in redis.password_env");
  EXPECT_EQ(msg.find("s3cretpw"), std::string::npos);
  EXPECT_EQ(error_of(with("redis:\n  url: \"http://cache\"\n")),
            "t.yaml:10: redis.url: scheme must be redis:// or rediss:// (TLS), redis+sentinel:// or "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://, got \"http://\"");
  msg = error_of(with("redis:\n  url: \"redis+sentinel://u:s3cretpw@s1,s2/m\"\n"));
  EXPECT_NE(msg.find("a password in the URL is not allowed"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("s3cretpw"), std::string::npos);
  EXPECT_EQ(error_of(with("redis:\n  url: \"redis://cache/x\"\n")),
            "t.yaml:10: redis.url: database must be a number, as in redis://host:6379/0, got \"/x\"");
}

TEST(ConfigErrors, SyntaxErrorAndDuplicates) {
  std::string msg = error_of("server:\n  listen: [\"a\"\nupstreams: {}\n");
  EXPECT_EQ(msg.rfind("t.yaml:", 0), 0u) << msg;
  EXPECT_NE(msg.find(": (syntax): "), std::string::npos) << msg;
  EXPECT_EQ(error_of(with("server:\n  threads: 1\n  threads: 2\n")),
            "t.yaml:11: server.threads: duplicate key (first at line 10)");
  EXPECT_EQ(error_of(with("upstreams: {}\n")), "t.yaml:9: upstreams: duplicate key (first at line 1)");
  EXPECT_EQ(error_of(R"(upstreams:
  a: { base_url: "http://a" }
  a: { base_url: "http://b" }
)"),
            "t.yaml:3: upstreams.a: duplicate key (first at line 2)");
  EXPECT_EQ(error_of("- a\n- b\n"), "t.yaml:1: (root): expected a mapping of sections");
  EXPECT_EQ(error_of(with("server: 5\n")), "t.yaml:9: server: expected a mapping, got \"5\"");
}

TEST(ConfigErrors, LoadFileMissing) {
  try {
    load_file("/nonexistent/canaryd.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/canaryd.yaml:1: (file): cannot open: No such file or directory");
  }
}

TEST(ConfigSecrets, ResolvedFromEnvAndNeverPrinted) {
  ::setenv("CANARYD_T_API", "sk-SECRET-api-value", 1);
  ::setenv("CANARYD_T_CLIENTS", " ck-one-SECRET , ,ck-two-SECRET,", 1);
  ::setenv("CANARYD_T_ADMIN", "adm-SECRET-token\n", 1);
  ::setenv("CANARYD_T_REDIS", "redis-SECRET-pw", 1);
  ::unsetenv("CANARYD_T_MISSING");
  Config c = load_string(R"(server:
  client_keys_env: CANARYD_T_CLIENTS
  admin_token_env: CANARYD_T_ADMIN
upstreams:
  a: { base_url: "https://a/v1", api_key_env: CANARYD_T_API }
  b: { base_url: "http://127.0.0.1:9", api_key_env: CANARYD_T_MISSING }
split: { control: a, canary: b }
redis:
  password_env: CANARYD_T_REDIS
)");
  EXPECT_EQ(c.upstreams.at("a").api_key_value, "sk-SECRET-api-value");
  EXPECT_EQ(c.upstreams.at("b").api_key_value, "");
  EXPECT_EQ(c.server.client_keys_value, (std::vector<std::string>{"ck-one-SECRET", "ck-two-SECRET"}));
  EXPECT_EQ(c.server.admin_token_value, "adm-SECRET-token");
  EXPECT_EQ(c.redis->password_value, "redis-SECRET-pw");

  std::string out = to_yaml_redacted(c);
  EXPECT_EQ(out.find("SECRET"), std::string::npos) << out;
  EXPECT_NE(out.find("<redacted: set from CANARYD_T_API>"), std::string::npos) << out;
  EXPECT_NE(out.find("<unset: CANARYD_T_MISSING>"), std::string::npos) << out;
  EXPECT_NE(out.find("<redacted: set from CANARYD_T_CLIENTS> (2 keys)"), std::string::npos) << out;
  EXPECT_NE(out.find("<redacted: set from CANARYD_T_ADMIN>"), std::string::npos) << out;
  EXPECT_NE(out.find("<redacted: set from CANARYD_T_REDIS>"), std::string::npos) << out;
}

TEST(ConfigSecrets, EnvKeyMustBeAName) {
  EXPECT_EQ(error_of(with("server:\n  admin_token_env: \"abc def\"\n")),
            "t.yaml:10: server.admin_token_env: \"abc def\" is not an environment variable name (the secret itself "
            "never goes in the file)");
}

TEST(ConfigRedacted, FullOutputRoundTrips) {
  Config c = load_file(CANARYD_CONFIG_DIR "/canaryd.yaml");
  std::string out = to_yaml_redacted(c);
  // Sections in SPEC order, durations in their short form.
  auto pos = [&](const char* s) { return out.find(s); };
  EXPECT_LT(pos("server:"), pos("\nupstreams:"));
  EXPECT_LT(pos("\nupstreams:"), pos("\nsplit:"));
  EXPECT_LT(pos("\nsplit:"), pos("\nrollout:"));
  EXPECT_LT(pos("\nrollout:"), pos("\nfallback:"));
  EXPECT_LT(pos("\nfallback:"), pos("\npricing:"));
  EXPECT_LT(pos("\npricing:"), pos("\nmetrics:"));
  EXPECT_LT(pos("\nmetrics:"), pos("\nlog:"));
  EXPECT_NE(pos("idle_timeout: 1m"), std::string::npos) << out;
  EXPECT_NE(pos("max_p99_latency: 0s"), std::string::npos) << out;
  EXPECT_NE(pos("tool_call_json: {enabled: true, dry_run: false, critical: true"), std::string::npos) << out;
  EXPECT_NE(pos("truncated: {enabled: true, dry_run: false, critical: false, max_increase: 0.5, direction: increase}"),
            std::string::npos)
      << out;
  EXPECT_NE(pos("stream_idle_timeout: 1m"), std::string::npos) << out;
  EXPECT_NE(pos("# redis: not configured"), std::string::npos) << out;

  Config back = load_string(out, "redacted.yaml");
  EXPECT_EQ(to_yaml_redacted(back), out);
  EXPECT_EQ(back.upstreams.at("openai").host, "api.openai.com");
  EXPECT_EQ(back.rollout.steps.size(), 4u);
  EXPECT_DOUBLE_EQ(back.pricing.at("deepseek-v3.2").input, 0.42);
  EXPECT_EQ(back.server.trusted_proxies, c.server.trusted_proxies);
  EXPECT_FALSE(back.redis);
}

TEST(ConfigRedacted, RoundTripWithRedisAndEdgeStrings) {
  Config c = load_string(with(R"(  salt: "123"
  override_header: ""
redis:
  url: "rediss://[::1]:6380/2"
)"));
  std::string out = to_yaml_redacted(c);
  Config back = load_string(out);
  EXPECT_EQ(back.split.salt, "123");
  EXPECT_EQ(back.split.override_header, "");
  ASSERT_TRUE(back.redis);
  EXPECT_EQ(back.redis->port, 6380);
  EXPECT_EQ(to_yaml_redacted(back), out);
}

TEST(ConfigModels, KnownModelsSortedUnique) {
  Config c = load_string(R"(upstreams:
  a: { base_url: "http://a", models: { "m-z": "m-a" } }
  b: { base_url: "http://b" }
split: { control: a, canary: b }
fallback:
  models: { "m-a": "m-fb" }
pricing:
  "m-p": { input: 1, output: 2 }
  "m-a": { input: 1 }
)");
  EXPECT_EQ(c.known_models(), (std::vector<std::string>{"m-a", "m-fb", "m-p", "m-z"}));
}

TEST(ConfigShipped, CanarydYamlLoads) {
  Config c = load_file(CANARYD_CONFIG_DIR "/canaryd.yaml");
  EXPECT_EQ(c.split.control, "openai");
  EXPECT_EQ(c.split.canary, "holysheep");
  EXPECT_EQ(c.control().host, "api.openai.com");
  EXPECT_EQ(c.canary().base_path, "/v1");
  EXPECT_EQ(c.rollout.steps.size(), 4u);
  EXPECT_EQ(c.fallback.on, (std::vector<std::string>{"connect_error", "timeout", "5xx", "429"}));
  EXPECT_EQ(c.pricing.size(), 4u);
}

// The worked config of README "Migrating several models".
TEST(ConfigShipped, ExperimentsYamlLoads) {
  Config c = load_file(CANARYD_CONFIG_DIR "/experiments.yaml");
  ASSERT_EQ(c.experiments.size(), 3u);
  EXPECT_EQ(c.experiments[0].name, "gpt");
  EXPECT_EQ(c.experiments[1].split.canary, "deepseek");
  EXPECT_EQ(c.experiments[2].match.header_value, "batch");
  EXPECT_EQ(c.unmatched_upstream().name, "openai");
  EXPECT_TRUE(c.split.control.empty());
}

TEST(ConfigShipped, DemoYamlLoads) {
  Config c = load_file(CANARYD_CONFIG_DIR "/demo.yaml");
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8080);
  EXPECT_EQ(c.server.threads, 2);
  EXPECT_EQ(c.server.admin_token_env, "CANARYD_ADMIN_TOKEN");
  EXPECT_EQ(c.control().port, 9101);
  EXPECT_EQ(c.canary().port, 9102);
  EXPECT_FALSE(c.control().tls);
  EXPECT_EQ(c.split.pin_ttl, 1h);
  ASSERT_EQ(c.rollout.steps.size(), 4u);
  EXPECT_DOUBLE_EQ(c.rollout.steps[3].weight, 100);
  EXPECT_EQ(c.rollout.steps[0].pause, 30s);
  EXPECT_EQ(c.rollout.analysis.interval, 5s);
  EXPECT_EQ(c.rollout.analysis.window, 1min);
  EXPECT_EQ(c.rollout.analysis.min_requests, 20u);
  EXPECT_FALSE(c.redis);
  EXPECT_EQ(c.pricing.size(), 4u);
}

}  // namespace
}  // namespace canaryd::config

namespace canaryd::config {
namespace {

TEST(ConfigShadow, OffByDefaultAndParsed) {
  Config off = load_string(kMinimal, "t.yaml");
  EXPECT_FALSE(off.shadow.enabled);
  Config c = load_string(with("shadow:\n  enabled: true\n  percent: 2.5\n  max_per_second: 0.5\n"
                              "  max_in_flight: 3\n  log_bodies: true\n  bodies_file: /tmp/shadow.jsonl\n"),
                         "t.yaml");
  EXPECT_TRUE(c.shadow.enabled);
  EXPECT_DOUBLE_EQ(c.shadow.percent, 2.5);
  EXPECT_DOUBLE_EQ(c.shadow.max_per_second, 0.5);
  EXPECT_EQ(c.shadow.max_in_flight, 3u);
  EXPECT_TRUE(c.shadow.log_bodies);
  EXPECT_EQ(c.shadow.bodies_file, "/tmp/shadow.jsonl");
  EXPECT_NE(to_yaml_redacted(c).find("max_in_flight: 3"), std::string::npos);
}

TEST(ConfigShadow, ErrorsNameTheKey) {
  EXPECT_EQ(
      error_of(with("shadow:\n  enabled: true\n")),
      "t.yaml:9: shadow.percent: is required when shadow.enabled is true (percent of control requests to mirror)");
  EXPECT_EQ(error_of(with("shadow:\n  enabled: true\n  percent: 0\n")),
            "t.yaml:11: shadow.percent: must be above 0 when shadow.enabled is true, got \"0\"");
  EXPECT_EQ(error_of(with("shadow:\n  percent: 101\n")),
            "t.yaml:10: shadow.percent: must be between 0 and 100, got \"101\"");
  EXPECT_EQ(error_of(with("shadow:\n  max_per_second: 0\n")),
            "t.yaml:10: shadow.max_per_second: must be between 0.01 and 1e+06, got \"0\"");
  EXPECT_EQ(error_of(with("shadow:\n  enabled: true\n  percent: 1\n  log_bodies: true\n")),
            "t.yaml:12: shadow.bodies_file: is required when shadow.log_bodies is true (prompts and answers never go "
            "to the main log)");
  EXPECT_EQ(error_of(with("shadow:\n  rate: 3\n")), "t.yaml:10: shadow.rate: unknown key");
}

// ---- experiments (issue 17) ------------------------------------------------

const std::string kThree = R"(upstreams:
  openai:
    base_url: "http://127.0.0.1:9101/v1"
  a:
    base_url: "http://127.0.0.1:9102/v1"
  b:
    base_url: "http://127.0.0.1:9103/v1"
)";

TEST(ConfigExperiments, TopLevelSplitIsTheExperimentDefault) {
  Config c = load_string(kMinimal + "rollout:\n  steps: [{weight: 10}]\n", "t.yaml");
  ASSERT_EQ(c.experiments.size(), 1u);
  const ExperimentConfig& d = c.experiments[0];
  EXPECT_EQ(d.name, "default");
  EXPECT_TRUE(d.match.any);
  EXPECT_EQ(d.split.control, "a");
  EXPECT_EQ(d.split.canary, "b");
  ASSERT_EQ(d.rollout.steps.size(), 1u);
  EXPECT_EQ(d.rollout.steps[0].weight, 10);
  EXPECT_EQ(c.unmatched_upstream().name, "a");
  EXPECT_EQ(to_yaml_redacted(c).find("experiments"), std::string::npos) << "nothing new printed for an old config";
}

TEST(ConfigExperiments, ListWithDefaultUpstream) {
  Config c = load_string(kThree + R"(experiments:
  - name: gpt
    match: { models: ["gpt-4.1"] }
    control: openai
    canary: a
    rollout: { steps: [{weight: 25}], analysis: { min_requests: 7 } }
    fallback: { models: { "gpt-4.1": "gpt-4.1-mini" }, budget: 0.1 }
  - name: claude
    match: { models: ["claude-*"], routes: ["/v1/chat/completions"], header: { name: X-Team, value: web } }
    control: openai
    canary: b
    salt: s2
    pin_ttl: 0
default_upstream: openai
)",
                         "t.yaml");
  ASSERT_EQ(c.experiments.size(), 2u);
  EXPECT_EQ(c.experiments[0].name, "gpt");
  EXPECT_EQ(c.experiments[0].split.salt, "gpt") << "an experiment's salt defaults to its name";
  EXPECT_EQ(c.experiments[0].rollout.analysis.min_requests, 7u);
  EXPECT_EQ(c.experiments[0].fallback.budget, 0.1);
  EXPECT_EQ(c.experiments[1].split.canary, "b");
  EXPECT_EQ(c.experiments[1].split.salt, "s2");
  EXPECT_EQ(c.experiments[1].split.pin_ttl, 0ms);
  EXPECT_EQ(c.experiments[1].match.header, "X-Team");
  EXPECT_EQ(c.default_upstream, "openai");
  EXPECT_EQ(c.experiment_index("claude"), 1);
  EXPECT_EQ(c.experiment_index("default"), -1);
  const auto models = c.known_models();
  EXPECT_NE(std::find(models.begin(), models.end(), "gpt-4.1-mini"), models.end());
  EXPECT_EQ(std::find(models.begin(), models.end(), "claude-*"), models.end()) << "a glob is not a label value";
  // --check-config prints the resolved experiments, and reads back the same.
  const std::string text = to_yaml_redacted(c);
  EXPECT_NE(text.find("matched in order: gpt (gpt-4.1); claude (claude-*, /v1/chat/completions, header X-Team: web); "
                      "anything else to upstream openai"),
            std::string::npos)
      << text;
  Config back = load_string(text);
  EXPECT_EQ(to_yaml_redacted(back), text);
}

TEST(ConfigExperiments, ListPlusTopLevelSplitPutsDefaultLast) {
  Config c = load_string(kThree + R"(split: { control: openai, canary: b }
experiments:
  - name: gpt
    match: { models: ["gpt-*"] }
    control: openai
    canary: a
)",
                         "t.yaml");
  ASSERT_EQ(c.experiments.size(), 2u);
  EXPECT_EQ(c.experiments[0].name, "gpt");
  EXPECT_EQ(c.experiments[1].name, "default");
  EXPECT_TRUE(c.experiments[1].match.any);
  Config back = load_string(to_yaml_redacted(c));
  EXPECT_EQ(to_yaml_redacted(back), to_yaml_redacted(c));
}

TEST(ConfigExperiments, Errors) {
  const std::string gpt = "  - name: gpt\n    match: { models: [\"gpt-4*\"] }\n    control: openai\n    canary: a\n";
  EXPECT_EQ(error_of(kThree + "experiments:\n" + gpt +
                     "  - name: mini\n    match: { models: [\"gpt-4.1-mini\"] }\n"
                     "    control: openai\n    canary: b\ndefault_upstream: openai\n"),
            "t.yaml:14: experiments[1].match: overlaps experiment \"gpt\" (line 10): both match model \"gpt-4.1-mini\" "
            "(\"gpt-4*\" and \"gpt-4.1-mini\") on any route");
  EXPECT_EQ(error_of(kThree + "experiments:\n" + gpt),
            "t.yaml:9: default_upstream: required key missing: requests no experiment matches go there (or add a "
            "top-level split, experiment default)");
  EXPECT_EQ(error_of(kThree + "split: { control: openai, canary: a }\nexperiments:\n" + gpt + "default_upstream: a\n"),
            "t.yaml:14: default_upstream: with a top-level split, requests no experiment matches go to experiment "
            "default; remove one");
  EXPECT_EQ(error_of(kThree + "experiments:\n" + gpt + gpt + "default_upstream: a\n"),
            "t.yaml:13: experiments[1].name: duplicate experiment name (first at line 9)");
  EXPECT_EQ(error_of(kThree + "experiments:\n  - name: default\n    match: { models: [x] }\n    control: openai\n"
                              "    canary: a\ndefault_upstream: a\n"),
            "t.yaml:9: experiments[0].name: \"default\" is the top-level split's experiment; give this one another "
            "name");
  EXPECT_EQ(error_of(kThree + "experiments:\n  - name: x\n    match: {}\n    control: openai\n    canary: a\n"
                              "default_upstream: a\n"),
            "t.yaml:10: experiments[0].match: must match something: models, routes or header (what no experiment "
            "matches goes to the default)");
  EXPECT_EQ(error_of(kThree + "experiments:\n" + gpt + "rollout: { steps: [] }\ndefault_upstream: a\n"),
            "t.yaml:13: rollout: belongs to the top-level split (experiment default), which is absent: put it in an "
            "experiment, or add split");
  EXPECT_EQ(error_of(kThree + "experiments:\n  - name: x\n    match: { routes: [/v1/models] }\n    control: openai\n"
                              "    canary: a\ndefault_upstream: a\n"),
            "t.yaml:10: experiments[0].match.routes[0]: expected a split route: /v1/chat/completions, "
            "/v1/completions, /v1/embeddings or /v1/responses, got \"/v1/models\"");
  EXPECT_EQ(error_of(kThree + "experiments:\n  - name: x\n    match: { models: [a] }\n    control: openai\n"
                              "    canary: openai\ndefault_upstream: a\n"),
            "t.yaml:12: experiments[0].canary: must name a different upstream than experiments[0].control");
}

}  // namespace
}  // namespace canaryd::config
