#!/usr/bin/env bash
# ctest packaging_compose: docker/compose.yaml is valid for Debian's
# docker-compose (`config -q`), every service stays on the host network, both
# canaryd replicas are behind nginx and scraped by Prometheus, and the configs
# the demo mounts are accepted by canaryd (--check-config) and promtool. The
# same for its Sentinel variant (compose.sentinel.yaml), whose sentinel.conf a
# real redis-sentinel reads.
# Needs no Docker daemon. docker-compose and promtool come from
# scripts/install-deps.sh: either missing is a failure, not a skip.
set -uo pipefail
cd "$(dirname "$0")/../.."
passed=0 failed=0
check() {
  local name=$1; shift
  if "$@"; then echo "ok - $name"; passed=$((passed + 1)); else echo "FAIL - $name"; failed=$((failed + 1)); fi
}

if ! command -v docker-compose >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "compose-config: installing docker-compose (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; }
  fi
  command -v docker-compose >/dev/null 2>&1 ||
    { echo "FAIL - docker-compose is not installed (scripts/install-deps.sh installs it: apt-get install docker-compose)"
      exit 1; }
fi

compose=docker/compose.yaml
check "docker-compose config -q accepts $compose" docker-compose -f "$compose" config -q
resolved=$(docker-compose -f "$compose" config 2>/dev/null)
check "every service uses the host network (no bridge)" python3 - "$resolved" <<'PY'
import sys, yaml
services = yaml.safe_load(sys.argv[1])["services"]
bad = [n for n, s in services.items() if s.get("network_mode") != "host"]
assert not bad, f"not network_mode host: {bad}"
assert not any("ports" in s for s in services.values()), "ports: are meaningless with host networking"
assert sum(1 for s in services.values() if s.get("image") == "canaryd:latest") == 2, "want two canaryd replicas"
for n in ("redis", "prometheus", "nginx", "mock-control", "mock-canary"):
    assert n in services, f"missing service {n}"
PY
check "nginx balances over both replicas" bash -c \
  "grep -q 'server 127.0.0.1:8081' docker/demo/nginx.conf && grep -q 'server 127.0.0.1:8082' docker/demo/nginx.conf"
check "Prometheus scrapes both replicas" bash -c \
  "grep -q '127.0.0.1:8081' docker/demo/prometheus.yml && grep -q '127.0.0.1:8082' docker/demo/prometheus.yml"
for f in docker/demo/canaryd-1.yaml docker/demo/canaryd-2.yaml; do
  if [[ -n "${CANARYD_BIN:-}" ]]; then
    check "canaryd --check-config accepts $f" bash -c "'$CANARYD_BIN' --check-config -c $f >/dev/null"
  else
    echo "skip - canaryd --check-config $f: CANARYD_BIN is not set (ctest sets it)"
  fi
done
# The Sentinel variant (issue 16): an override of compose.yaml.
sentinel=docker/compose.sentinel.yaml
check "docker-compose config -q accepts $compose + $sentinel" docker-compose -f "$compose" -f "$sentinel" config -q
resolved=$(docker-compose -f "$compose" -f "$sentinel" config 2>/dev/null)
check "Sentinel variant: host network, a replica of :6380, three sentinels, both replicas on redis+sentinel" \
  python3 - "$resolved" <<'PY'
import sys, yaml
services = yaml.safe_load(sys.argv[1])["services"]
bad = [n for n, s in services.items() if s.get("network_mode") != "host"]
assert not bad, f"not network_mode host: {bad}"
assert "6380" in services["redis-replica"]["command"], "the replica does not follow the primary :6380"
ports = sorted(s["entrypoint"][-1].split("--port ")[1] for n, s in services.items() if n.startswith("sentinel-"))
assert ports == ["26380", "26381", "26382"], ports
for n in ("canaryd-1", "canaryd-2"):
    conf = services[n]["command"][-1]
    assert conf.endswith(f"canaryd-sentinel-{n[-1]}.yaml"), conf
    assert any(v.endswith(conf + ":ro") for v in services[n]["volumes"]), f"{conf} is not mounted"
    text = open("docker/demo/" + conf.rsplit("/", 1)[1]).read()
    assert "redis+sentinel://127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382/canaryd-demo/0" in text
PY
for f in docker/demo/canaryd-sentinel-1.yaml docker/demo/canaryd-sentinel-2.yaml; do
  if [[ -n "${CANARYD_BIN:-}" ]]; then
    check "canaryd --check-config accepts $f" bash -c "'$CANARYD_BIN' --check-config -c $f >/dev/null"
  fi
done
# demo/sentinel.conf as a real sentinel reads it (a copy: sentinels rewrite their file).
sentinel_check() {
  local dir port rc=1
  dir=$(mktemp -d /tmp/canaryd-sentinel.XXXXXX)
  cp docker/demo/sentinel.conf "$dir/sentinel.conf"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server "$dir/sentinel.conf" --sentinel --port "$port" --dir "$dir" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    if redis-cli -p "$port" SENTINEL MASTER canaryd-demo 2>/dev/null | grep -qx 6380; then rc=0; break; fi
    sleep 0.05
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -rf "$dir"
  return $rc
}
check "redis-sentinel reads docker/demo/sentinel.conf (monitors canaryd-demo at :6380)" sentinel_check

if ! command -v promtool >/dev/null 2>&1; then
  check "promtool is installed (scripts/install-deps.sh installs it: apt-get install prometheus)" false
else
  # With the rules directory it mounts (deploy/prometheus) where the container sees it.
  tmpcfg=$(mktemp /tmp/canaryd-prometheus.XXXXXX.yml)
  sed "s|/etc/canaryd-rules/|$PWD/deploy/prometheus/|" docker/demo/prometheus.yml >"$tmpcfg"
  check "promtool check config accepts docker/demo/prometheus.yml and its rules" bash -c \
    "promtool check config $tmpcfg >/dev/null"
  rm -f "$tmpcfg"
fi
echo "$passed passed, $failed failed"
((failed == 0))
