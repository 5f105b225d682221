#!/usr/bin/env bash
# ctest packaging_compose: docker/compose.yaml is valid for Debian's
# docker-compose (`config -q`), every service stays on the host network, both
# canaryd replicas are behind nginx and scraped by Prometheus, and the configs
# the demo mounts are accepted by canaryd (--check-config) and promtool.
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
