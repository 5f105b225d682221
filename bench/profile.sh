#!/usr/bin/env bash
# Profiles canaryd under the benchmark's saturation load (1 thread on CPU 1,
# wrk and the mocks on CPU 0, as bench/run.sh does), for the hot-path work.
#
#   bench/profile.sh perf [SECONDS]       perf record -g (frame pointers) + top symbols
#   bench/profile.sh stat [SECONDS]       syscalls and context switches per request
#   bench/profile.sh callgrind [REQUESTS] valgrind --tool=callgrind, 1 connection
#
# Environment: BUILD_DIR (default build; a build with -fno-omit-frame-pointer -g,
# e.g. build-bench, gives call graphs), PIN_TTL (default 0), REDIS=1 (pins on a
# local redis-server), ACCESS_LOG=true|false (default false), OUT dir (default
# /tmp/canaryd-profile). Every process it starts is ended by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-perf}
ARG=${2:-}
BUILD=${BUILD_DIR:-build}
[[ $BUILD = /* ]] || BUILD="$ROOT/$BUILD"
OUT=${OUT:-/tmp/canaryd-profile}
mkdir -p "$OUT"
PY=python3; [[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
SCHED=()
# perf's software clock hardly samples SCHED_RR tasks on this VM: profile at normal priority.
[[ ${PROFILE_RT:-0} == 1 && $(id -u) -eq 0 ]] && SCHED=(chrt -r 10)
ulimit -n 65536 2>/dev/null || true

declare -A PID=()
cleanup() {
  for n in "${!PID[@]}"; do kill -TERM "${PID[$n]}" 2>/dev/null || true; done
  for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
}
trap cleanup EXIT
start() { local n=$1 c=$2; shift 2; taskset -c "$c" "${SCHED[@]}" "$@" >"$OUT/$n.log" 2>&1 & PID[$n]=$!; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "profile: nothing on port $1" >&2; exit 1; }
read -r PA PB PC PR <<<"$("$PY" -c '
import socket; s=[socket.socket() for _ in range(4)]
[x.bind(("127.0.0.1",0)) for x in s]; print(*[x.getsockname()[1] for x in s])')"

start mock_a 0 "$BUILD/tools/mock-upstream/mock-upstream" --port "$PA" --name control
start mock_b 0 "$BUILD/tools/mock-upstream/mock-upstream" --port "$PB" --name canary
cat >"$OUT/canaryd.yaml" <<EOF
server: {listen: "127.0.0.1:$PC", threads: 1, access_log: ${ACCESS_LOG:-false}, drain_delay: 0, shutdown_grace: 1s}
upstreams:
  control: {base_url: "http://127.0.0.1:$PA/v1", max_connections: 2048}
  canary: {base_url: "http://127.0.0.1:$PB/v1", max_connections: 2048}
split: {control: control, canary: canary, sticky_key: ["header:X-User-ID"], pin_ttl: ${PIN_TTL:-0}}
rollout: {steps: [{weight: 10, pause: 24h}], auto_promote: false}
fallback: {enabled: false}
EOF
if [[ -n ${REDIS:-} ]]; then
  start redis 0 redis-server --port "$PR" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT"
  wait_port "$PR"
  printf 'redis: {url: "redis://127.0.0.1:%s/0"}\n' "$PR" >>"$OUT/canaryd.yaml"
fi
wait_port "$PA"; wait_port "$PB"
URL="http://127.0.0.1:$PC/v1/chat/completions"
WRK=(taskset -c 0 "${SCHED[@]}" wrk -t1 --latency -s "$ROOT/bench/chat.lua")

case "$MODE" in
  perf|stat)
    secs=${ARG:-10}
    start canaryd 1 "$BUILD/canaryd" -c "$OUT/canaryd.yaml"
    wait_port "$PC"
    "${WRK[@]}" -c64 -d2s "$URL" >/dev/null   # warm the pools
    if [[ $MODE == perf ]]; then
      # System-wide on CPU 1 (canaryd is alone there): attaching with -p loses
      # most samples on this VM's software clock.
      perf record -e cpu-clock -F 4999 -g -C 1 -o "$OUT/perf.data" -- sleep "$secs" >/dev/null 2>&1 &
      pp=$!
      "${WRK[@]}" -c64 -d"${secs}s" "$URL" | grep '^BENCH'
      wait $pp || true
      perf report -i "$OUT/perf.data" --pid "${PID[canaryd]}" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null \
        | grep -v '^$' | grep -E '^ +[0-9]' | head -60 | tee "$OUT/top-self.txt"
      echo "--- inclusive (children) ---"
      perf report -i "$OUT/perf.data" --pid "${PID[canaryd]}" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -60 | tee "$OUT/top-children.txt"
    else
      perf stat -e 'raw_syscalls:sys_enter,context-switches,cpu-migrations,page-faults' -p "${PID[canaryd]}" \
        -o "$OUT/stat.txt" -- sleep "$secs" &
      pp=$!
      line=$("${WRK[@]}" -c64 -d"${secs}s" "$URL" | grep '^BENCH')
      wait $pp || true
      echo "$line"
      reqs=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
      awk -v r="$reqs" '/raw_syscalls|context-switches|page-faults/{gsub(",","",$1); printf "%-28s %12d  %.2f per request\n", $2, $1, $1/r}' "$OUT/stat.txt"
      # Which syscalls, from a short strace of the same load.
      timeout 3 strace -c -f -p "${PID[canaryd]}" -o "$OUT/strace.txt" &
      sp=$!
      line=$("${WRK[@]}" -c64 -d2s "$URL" | grep '^BENCH'); wait $sp || true
      reqs=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
      echo "strace -c over $reqs requests (strace slows it down; counts matter, not times):"
      awk -v r="$reqs" 'NR>2 && $NF!="total" && $4 ~ /^[0-9]+$/ {printf "  %-16s %8d  %.2f per request\n", $NF, $4, $4/r}' "$OUT/strace.txt" | sort -k2 -nr | head -15
    fi
    ;;
  callgrind)
    n=${ARG:-3000}
    start canaryd 1 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
      --collect-atstart=yes "$BUILD/canaryd" -c "$OUT/canaryd.yaml"
    for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PC") 2>/dev/null && break; sleep 0.1; done
    # A fixed number of requests on one connection, so costs divide cleanly.
    "$PY" - "$PC" "$n" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
s = socket.create_connection(("127.0.0.1", port))
for i in range(n):
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-User-ID: user-%d\r\nContent-Length: %d\r\n\r\n" % (i, len(body)) + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    cl = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < cl:
        rest += s.recv(65536)
print(f"{n} requests done")
EOF
    kill -TERM "${PID[canaryd]}"; wait "${PID[canaryd]}" || true; unset 'PID[canaryd]'
    callgrind_annotate --inclusive=no "$OUT/callgrind.out" 2>/dev/null | head -45 | tee "$OUT/callgrind-self.txt"
    echo "(Ir per request: divide by $n; startup is included, so use a large request count)"
    ;;
  *) echo "usage: $0 perf|stat|callgrind [N]" >&2; exit 2 ;;
esac
