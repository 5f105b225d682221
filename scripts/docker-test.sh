#!/usr/bin/env bash
# The container image test: builds canaryd's image, runs it against two mock
# upstreams on loopback, and checks what a deployment relies on: /ready, one
# proxied chat call, /metrics, JSON logs, the HEALTHCHECK, a non-root PID 1,
# a read-only root filesystem, no build-only ENV, and a graceful SIGTERM (a
# slow stream started before the signal completes, /ready turns 503, the
# container exits 0). Then it runs the demo of docs/deploy.md ("Run in Docker")
# as written: the two mock images on :9101/:9102, the image with
# `-c /etc/canaryd/demo.yaml` on :8080, one chat call, /metrics, the
# HEALTHCHECK on its default port, `docker stop -t 40` (skipped, with a
# message, when one of those ports is taken).
#
#   scripts/docker-test.sh --build-dir build           image from build/canaryd (fast: ctest)
#   scripts/docker-test.sh --build-dir build --full    full multi-stage build (make docker-test)
#   scripts/docker-test.sh ... --image canaryd:0.1.0   test an image that already exists
#   --canaryd BIN / --mock BIN instead of --build-dir name the two binaries (ctest)
#
# Docker runs without a bridge: when no daemon answers and we are root, this
# starts `dockerd --bridge=none --iptables=false` and stops it at the end (a
# daemon already running with a bridge gets a warning). Every build and run
# uses --network host, so all traffic stays on 127.0.0.1.
#
# The debian:bookworm base image is made when missing (scripts/docker-base.sh:
# debootstrap, a few minutes) with --full or CANARYD_DOCKER_MAKE_BASE=1 (ctest
# and make docker-test set it); without either, a missing base is a skip.
# Exit 0 all passed, 1 a check failed, 77 skipped (no Docker here, or the base
# cannot be made: no Debian mirror; ctest SKIP).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
export DOCKER_BUILDKIT=0

build_dir="" full=0 image="" keep=0 bin="" mock_bin=""
while (($#)); do
  case "$1" in
    --build-dir) build_dir=$(realpath "$2"); shift 2 ;;
    --canaryd) bin=$(realpath "$2"); shift 2 ;;
    --mock) mock_bin=$(realpath "$2"); shift 2 ;;
    --full) full=1; shift ;;
    --image) image=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "docker-test: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -n "$build_dir" ]]; then
  bin=${bin:-$build_dir/canaryd}
  mock_bin=${mock_bin:-$build_dir/tools/mock-upstream/mock-upstream}
fi
[[ -n "$mock_bin" ]] || { echo "docker-test: give --build-dir DIR (or --mock BIN): the mock upstream comes from it" >&2; exit 2; }

skip() { echo "SKIPPED: docker image test: $*"; exit 77; }
say() { echo "docker-test: $*"; }

tmp=$(mktemp -d /tmp/canaryd-docker-test.XXXXXX)
chmod 755 "$tmp"
pids=()
container=""
demo_containers=()
dockerd_pid=""
cleanup() {
  if [[ -n "$container" ]]; then
    if ((keep)); then say "kept container $container"; else $docker rm -f "$container" >/dev/null 2>&1; fi
  fi
  ((${#demo_containers[@]})) && $docker rm -f "${demo_containers[@]}" >/dev/null 2>&1
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n "$dockerd_pid" ]]; then
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- Can Docker run here? ------------------------------------------------------
# The CLI comes from scripts/install-deps.sh (docker.io): missing is a failure.
command -v "$docker" >/dev/null 2>&1 ||
  { echo "docker-test: no docker CLI (scripts/install-deps.sh installs it: apt-get install docker.io)" >&2; exit 1; }
if ! timeout 20 $docker info >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v dockerd >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null; then
    say "no Docker daemon answers; starting dockerd --bridge=none --iptables=false"
    dockerd --bridge=none --iptables=false >"$tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 300); do
      timeout 5 $docker info >/dev/null 2>&1 && break
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.1
    done
    if ! timeout 20 $docker info >/dev/null 2>&1; then
      tail -5 "$tmp/dockerd.log" | sed 's/^/  dockerd: /'
      skip "dockerd did not start here (see its log above)"
    fi
  else
    skip "no Docker daemon reachable (not running, or no permission on its socket: $($docker info 2>&1 | tail -1))"
  fi
fi
# A daemon we did not start may have the default bridge (and its iptables
# rules): the test still keeps to --network host, but say so.
if [[ -z "$dockerd_pid" ]] && $docker network inspect bridge >/dev/null 2>&1; then
  say "WARNING: the running dockerd has a bridge network; this project expects dockerd --bridge=none --iptables=false"
fi

[[ -x "$mock_bin" ]] || { echo "docker-test: $mock_bin missing: build the mock-upstream target" >&2; exit 1; }

# --- The image -----------------------------------------------------------------
started=$(date +%s)
if [[ -z "$image" ]]; then
  if ((!full)); then
    [[ -x "$bin" ]] || { echo "docker-test: $bin missing: build the canaryd target" >&2; exit 1; }
    if ldd "$bin" | grep -qE 'lib(asan|ubsan|tsan|lsan)'; then
      skip "$bin is a sanitizer build; the runtime image has no sanitizer runtime (run make docker-test)"
    fi
  fi
  # Making the base image is a debootstrap from the Debian mirror (minutes, once).
  # Where it cannot be made (no mirror, not root) that is a skip, not a failure.
  if ! $docker image inspect debian:bookworm >/dev/null 2>&1; then
    if ((!full)) && [[ "${CANARYD_DOCKER_MAKE_BASE:-0}" != 1 ]]; then
      skip "the debian:bookworm base image is missing; set CANARYD_DOCKER_MAKE_BASE=1 (ctest and make docker-test do) to make it with debootstrap"
    fi
    say "the debian:bookworm base image is missing: making it (scripts/docker-base.sh: debootstrap --variant=minbase, a few minutes)"
    "$repo/scripts/docker-base.sh" debian:bookworm 2>"$tmp/base.err"
    base_rc=$?
    sed 's/^/  /' "$tmp/base.err" >&2
    if ((base_rc == 3)); then
      skip "$(tail -1 "$tmp/base.err" | sed 's/^docker-base: //')"
    elif ((base_rc != 0)); then
      echo "docker-test: scripts/docker-base.sh failed ($base_rc)" >&2; exit 1
    fi
  fi
  # The image's RUN steps need a container: where the daemon answers but cannot
  # start one (no cgroups, no overlay, seccomp), that is this machine, not a
  # broken Dockerfile: say so and skip rather than fail the build.
  if ! $docker run --rm --network host --entrypoint /bin/true debian:bookworm 2>"$tmp/run.err"; then
    tail -3 "$tmp/run.err" | sed 's/^/  docker: /'
    skip "Docker cannot start containers here (see above)"
  fi
  if ((full)); then
    say "building the full multi-stage image (compiles canaryd in the builder stage; slow the first time)"
    image=$("$repo/docker/build.sh" --mock) || exit 1
    mock_image=canaryd-mock:latest
  else
    say "building the runtime image around $bin (docker/Dockerfile.prebuilt) and the mock's (docker/Dockerfile.prebuilt-mock)"
    image=$("$repo/docker/build.sh" --prebuilt "$bin" --prebuilt-mock "$mock_bin" --tag canaryd:test) || exit 1
    mock_image=canaryd-mock:test
  fi
else
  mock_image=${MOCK_IMAGE:-canaryd-mock:${image##*:}}
fi
build_seconds=$(($(date +%s) - started))
size=$($docker image inspect -f '{{.Size}}' "$image") || { echo "docker-test: no image $image" >&2; exit 1; }
say "image $image: $((size / 1000000)) MB, built in ${build_seconds}s"
if ! $docker run --rm --network host --entrypoint /bin/true "$image" 2>"$tmp/run.err"; then
  tail -3 "$tmp/run.err" | sed 's/^/  docker: /'
  skip "Docker cannot start containers here (see above)"
fi

# --- Checks --------------------------------------------------------------------
passed=0 failed=0
check() {  # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then
    echo "ok - $name"; passed=$((passed + 1))
  else
    echo "FAIL - $name"; failed=$((failed + 1))
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS COMMAND...: polls every 100 ms
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.1; done
}
http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1"; }

# Not called in $(...): the PID must reach this shell's pids, or cleanup
# would not stop the mock.
start_mock() {  # start_mock NAME VAR: starts it, sets VAR to its port
  local pf=$tmp/$1.port
  "$mock_bin" --host 127.0.0.1 --port 0 --port-file "$pf" --name "$1" >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  wait_for 10 test -s "$pf" || return 1
  printf -v "$2" '%s' "$(cat "$pf")"
}
control_port="" canary_port=""
start_mock openai control_port || { echo "docker-test: mock upstream did not start" >&2; exit 1; }
start_mock holysheep canary_port || { echo "docker-test: mock upstream did not start" >&2; exit 1; }
port=$(free_port)

mkdir -p "$tmp/config"
cat >"$tmp/config/canaryd.yaml" <<YAML
server:
  listen: "127.0.0.1:$port"
  threads: 2
  drain_delay: 2s
  shutdown_grace: 20s
  admin_token_env: CANARYD_ADMIN_TOKEN
upstreams:
  openai:
    base_url: "http://127.0.0.1:$control_port/v1"
    connect_timeout: 1s
    timeout: 10s
  holysheep:
    base_url: "http://127.0.0.1:$canary_port/v1"
    connect_timeout: 1s
    timeout: 10s
split:
  control: openai
  canary: holysheep
  salt: "docker-test"
rollout:
  steps:
    - { weight: 50, pause: 1h }
pricing:
  "gpt-4.1": { input: 8.00, output: 32.00 }
YAML
chmod -R a+rX "$tmp/config"

container=canaryd-docker-test-$$
# The same hardening as the Kubernetes manifests: read-only root, no
# capabilities, no privilege escalation. CANARYD_CONFIG overrides the baked-in config.
if ! $docker run -d --name "$container" --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --health-interval 1s --health-start-period 1s --health-timeout 2s \
    -v "$tmp/config:/config:ro" -e CANARYD_CONFIG=/config/canaryd.yaml \
    -e CANARYD_HEALTH_PORT="$port" -e CANARYD_ADMIN_TOKEN=docker-test-token \
    "$image" >/dev/null; then
  echo "docker-test: docker run failed" >&2; exit 1
fi
base=http://127.0.0.1:$port

ready() { [[ $(http_status "$base/ready") == 200 ]]; }
check "/ready answers 200 after start-up" wait_for 30 ready
if ((failed)); then
  $docker logs "$container" 2>&1 | tail -20
  echo "$passed passed, $failed failed"; exit 1
fi

check "canaryd is PID 1" bash -c "$docker exec $container cat /proc/1/cmdline | tr '\\0' ' ' | grep -q '^/usr/local/bin/canaryd'"
uid=$($docker exec "$container" sh -c 'awk "/^Uid:/ {print \$2}" /proc/1/status' 2>/dev/null)
check "runs as a non-root user (uid ${uid:-?})" test -n "$uid" -a "${uid:-0}" != 0
check "the image's user is numeric and non-root ($($docker image inspect -f '{{.Config.User}}' "$image"))" \
  bash -c "[[ \$($docker image inspect -f '{{.Config.User}}' $image) =~ ^[1-9][0-9]*(:[0-9]+)?\$ ]]"
check "the root filesystem is read-only" bash -c "! $docker exec $container sh -c 'touch /tmp/canaryd-write-test' 2>/dev/null"
# Build-time settings (apt's DEBIAN_FRONTEND) are ARGs, not the runtime's ENV.
image_env=$($docker image inspect -f '{{join .Config.Env " "}}' "$image")
check "the image's environment has no build-only variables ($image_env)" \
  bash -c "[[ ' $image_env ' != *DEBIAN_FRONTEND* ]]"

chat() {
  curl -s -D "$tmp/chat.headers" -o "$tmp/chat.body" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' -H 'X-User-ID: alice' \
    -d '{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}' "$base/v1/chat/completions"
}
code=$(chat)
check "one proxied chat call answers 200 (got $code)" test "$code" = 200
check "the answer names its arm and provider" bash -c "grep -qi '^x-canaryd-arm: ' $tmp/chat.headers && grep -qiE '^x-canaryd-provider: (openai|holysheep)' $tmp/chat.headers"
check "the answer is the upstream's completion" grep -q '"choices"' "$tmp/chat.body"

curl -s --max-time 5 "$base/metrics" >"$tmp/metrics"
check "/metrics counts the call" grep -qE '^ai_proxy_requests_total\{.*status="success".*\} [1-9]' "$tmp/metrics"
check "/metrics has process metrics" grep -q '^process_resident_memory_bytes' "$tmp/metrics"

healthy() { [[ $($docker inspect -f '{{.State.Health.Status}}' "$container") == healthy ]]; }
check "the HEALTHCHECK (GET /health) reports healthy" wait_for 30 healthy

$docker logs "$container" >"$tmp/stdout.log" 2>"$tmp/stderr.log"
check "logs are JSON lines on stdout" python3 -c '
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines, "no log lines"
for l in lines: json.loads(l)
assert any("v1/chat/completions" in l for l in lines), "no access log line for the chat call"
' "$tmp/stdout.log"

# Graceful shutdown: a 20-event stream at 250 ms per event (5 s) is in flight
# when SIGTERM arrives; it must complete and the container must exit 0.
curl -s -N --max-time 30 -o "$tmp/stream.out" -w '%{http_code}' \
  -H 'Content-Type: application/json' -H 'X-User-ID: bob' \
  -H 'X-Mock-Stream-Chunks: 20' -H 'X-Mock-Stream-Delay-Ms: 250' \
  -d '{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}' \
  "$base/v1/chat/completions" >"$tmp/stream.code" &
stream_pid=$!
check "the slow stream has started" wait_for 10 test -s "$tmp/stream.out"
sent=$SECONDS
$docker kill --signal TERM "$container" >/dev/null
not_ready() { [[ $(http_status "$base/ready") == 503 ]]; }
check "after SIGTERM /ready answers 503 (drain_delay)" wait_for 2 not_ready
wait "$stream_pid"; stream_rc=$?
check "the stream in flight completes (curl $stream_rc, HTTP $(cat "$tmp/stream.code"))" \
  bash -c "[[ $stream_rc == 0 && \$(cat $tmp/stream.code) == 200 ]] && grep -q 'data: \[DONE\]' $tmp/stream.out"
check "the stream outlived the signal (it was really in flight)" test $((SECONDS - sent)) -ge 2
exit_code=$(timeout 40 $docker wait "$container")
check "the container exits 0 after the drain (got ${exit_code:-timeout})" test "${exit_code:-x}" = 0
$docker logs "$container" >"$tmp/stdout.log" 2>&1
check "the log shows the drain" bash -c "grep -q 'shutdown requested' $tmp/stdout.log && grep -q 'canaryd stopped' $tmp/stdout.log"

# --- The documented demo ---------------------------------------------------------
# docs/deploy.md "Run in Docker", as written (only the image tags and container
# names differ): two mock containers on :9101/:9102, the image with the demo
# config on :8080, one chat call, /metrics, then `docker stop -t 40`. It is also
# the one run where the HEALTHCHECK probes its default port (no CANARYD_HEALTH_PORT).
port_free() { python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
demo_skip=""
$docker image inspect "$mock_image" >/dev/null 2>&1 || demo_skip="no mock image $mock_image"
for p in 8080 9101 9102; do
  port_free "$p" || demo_skip="127.0.0.1:$p is taken (demo.yaml listens on 8080, its mocks on 9101 and 9102)"
done
if [[ -n "$demo_skip" ]]; then
  echo "skip - the documented demo and the HEALTHCHECK on its default port 8080: $demo_skip"
else
  demo=canaryd-demo-$$ mock1=mock-openai-$$ mock2=mock-holysheep-$$
  demo_containers=("$demo" "$mock1" "$mock2")
  $docker run -d --name "$mock1" --network host "$mock_image" --host 127.0.0.1 --port 9101 --name openai >/dev/null &&
  $docker run -d --name "$mock2" --network host "$mock_image" --host 127.0.0.1 --port 9102 --name holysheep >/dev/null &&
  $docker run -d --name "$demo" --network host --read-only "$image" -c /etc/canaryd/demo.yaml >/dev/null
  demo_rc=$?
  check "demo: the three documented docker run commands start" test "$demo_rc" = 0
  listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  mocks_listening() { listening 9101 && listening 9102; }
  check "demo: the mock containers listen on :9101 and :9102" wait_for 20 mocks_listening
  demo_ready() { [[ $(http_status localhost:8080/ready) == 200 ]]; }
  check "demo: curl -s localhost:8080/ready answers 200" wait_for 30 demo_ready
  curl -s localhost:8080/v1/chat/completions -H 'X-User-ID: alice' \
    -d '{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}' >"$tmp/demo.chat"
  check "demo: the documented chat call answers a mock's completion" \
    bash -c "grep -q '\"choices\"' $tmp/demo.chat && grep -qE '\"mock_name\":\"(openai|holysheep)\"' $tmp/demo.chat"
  curl -s localhost:8080/metrics | grep ai_proxy_requests_total >"$tmp/demo.metrics"
  check "demo: /metrics counts the call (curl ... | grep ai_proxy_requests_total)" \
    grep -qE '^ai_proxy_requests_total\{.*model="gpt-4.1".*status="success".*\} 1$' "$tmp/demo.metrics"
  demo_healthy() { [[ $($docker inspect -f '{{.State.Health.Status}}' "$demo") == healthy ]]; }
  check "demo: the HEALTHCHECK on its default port 8080 reports healthy" wait_for 40 demo_healthy
  $docker stop -t 40 "$demo" >/dev/null
  demo_exit=$($docker inspect -f '{{.State.ExitCode}}' "$demo")
  check "demo: docker stop -t 40 drains and exits 0 (got $demo_exit)" test "$demo_exit" = 0
  if ((failed)); then echo "--- demo container log (tail)"; $docker logs "$demo" 2>&1 | tail -10; fi
  $docker rm -f "${demo_containers[@]}" >/dev/null 2>&1
  demo_containers=()
fi

check "--check-config accepts the image's built-in config" \
  bash -c "$docker run --rm --network host $image --check-config >/dev/null"
check "--version answers" bash -c "$docker run --rm --network host $image --version | grep -q '^canaryd '"

if ((failed)); then
  echo "--- container log (tail)"; tail -20 "$tmp/stdout.log"
fi
say "image $image: $((size / 1000000)) MB"
echo "$passed passed, $failed failed"
((failed == 0))
