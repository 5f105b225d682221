#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of canaryd from Debian 12
# packages. Idempotent: packages already present are not touched, so a second
# run costs one dpkg query. Used by `make`, the Dockerfile and CI.
#
#   scripts/install-deps.sh            build + test dependencies
#   scripts/install-deps.sh --build    only what compiling needs (the image's builder stage)
#   scripts/install-deps.sh --runtime  only the runtime libraries (container image)
#   scripts/install-deps.sh --bench    also nginx, wrk (make bench)
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libboost1.81-dev libssl-dev nlohmann-json3-dev libhiredis-dev
  prometheus-cpp-dev libspdlog-dev libyaml-cpp-dev libgtest-dev libgmock-dev
)
# chromium: the status page's browser test (tests/browser, driven by playwright-core).
# redis-sentinel: the Sentinel failover tests (tests/unit/redis, tests/rollout).
# clang-format: make format-check (CI fails on a formatting diff).
test_pkgs=(clang-format redis-server redis-sentinel prometheus stunnel4 openssl curl python3 procps docker.io docker-compose debootstrap chromium)
bench_pkgs=(nginx-light wrk util-linux linux-perf valgrind strace)
runtime_pkgs=(
  ca-certificates libssl3 libhiredis0.14 libprometheus-cpp-core1.0
  libspdlog1.10 libfmt9 libyaml-cpp0.7
)

want=()
case "${1:-}" in
  --runtime) want=("${runtime_pkgs[@]}") ;;
  --build) want=("${build_pkgs[@]}") ;;
  --bench) want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  "") want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [--build|--runtime|--bench]" >&2; exit 2 ;;
esac
# Node.js runs the end-to-end tests (openai SDK) and the browser test
# (playwright-core), both pinned to versions that run on Debian 12's own
# nodejs 18. A machine that already has a node >= 18 (e.g. NodeSource's, which
# bundles npm) keeps it; a node without npm gets Debian's npm.
if [[ "${1:-}" != "--runtime" && "${1:-}" != "--build" ]]; then
  if ! command -v node >/dev/null 2>&1 || \
     [[ "$(node -e 'process.stdout.write(String(process.versions.node.split(".")[0] >= 18))')" != "true" ]]; then
    want+=(nodejs npm)
  elif ! command -v npm >/dev/null 2>&1; then
    want+=(npm)
  fi
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages enable and start system services; tests start their own
# instances on free ports, so the system ones are not needed.
if [[ -z "$sudo" ]] && command -v systemctl >/dev/null 2>&1; then
  for s in redis-server redis-sentinel prometheus nginx stunnel4; do
    systemctl disable --now "$s" >/dev/null 2>&1 || true
  done
fi
