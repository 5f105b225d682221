#!/usr/bin/env bash
# Memory per idle keep-alive connection, several canaryd binaries side by side
# (a before/after of one change, without the whole of `make bench`):
#
#   bench/idle_conns.sh [-n CONNS] [-r ROUNDS] BIN...
#
# Per binary and round: a fresh canaryd (1 thread, access log off, the bench's
# config shape, one mock upstream), RSS after one request and 1 s idle, then
# CONNS (default 1,000) keep-alive connections that each make one request and
# stay open (bench/sse_client.py idle, 100 opening at a time); RSS 0.3 s after
# the last answer ("just idle") and 1.5 s after ("settled"), per connection =
# (that - idle) / CONNS. Rounds interleave the binaries. Ends what it starts by
# PID. canaryd and the mock on CPU 0, the client on CPU 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
MOCK=$BUILD/tools/mock-upstream/mock-upstream
N=1000 ROUNDS=2
while getopts "n:r:" o; do
  case $o in
    n) N=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    *) echo "usage: $0 [-n CONNS] [-r ROUNDS] BIN..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# > 0)) || { echo "usage: $0 [-n CONNS] [-r ROUNDS] BIN..." >&2; exit 2; }
[[ -x $MOCK ]] || { echo "idle_conns: $MOCK not built" >&2; exit 1; }
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "idle_conns: nothing listens on $1" >&2; exit 1
}
rss() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN{printf "%.2f", (b - a) / n}'; }

PM=$(free_port)
taskset -c 0 "$MOCK" --port "$PM" --threads 1 --name control >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$PM"
echo "binary round idle_kib conns just_idle_kib_per_conn settled_kib_per_conn"
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    P=$(free_port)
    cat >"$TMP/c.yaml" <<EOF
server: {listen: "127.0.0.1:$P", threads: 1, access_log: false, max_connections: 20000, drain_delay: 0, shutdown_grace: 1s}
upstreams:
  control: {base_url: "http://127.0.0.1:$PM/v1", max_connections: 2048}
  canary: {base_url: "http://127.0.0.1:$PM/v1", max_connections: 2048}
split: {control: control, canary: canary, sticky_key: ["header:X-User-ID"], pin_ttl: 0}
rollout: {steps: [{weight: 10, pause: 24h}], auto_promote: false}
fallback: {enabled: false}
EOF
    taskset -c 0 "$bin" -c "$TMP/c.yaml" >"$TMP/canaryd.log" 2>&1 &
    cp=$!
    PIDS+=("$cp")
    wait_port "$P"
    python3 "$ROOT/bench/sse_client.py" idle --port "$P" --connections 1 --hold 0 >/dev/null
    sleep 1  # idle RSS settles (the first request's buffers handed back)
    r0=$(rss "$cp")
    mkfifo "$TMP/f"
    taskset -c 1 python3 "$ROOT/bench/sse_client.py" idle --port "$P" --connections "$N" --hold 3 >"$TMP/f" &
    kp=$!
    exec 4<"$TMP/f"
    read -r ready <&4
    sleep 0.3
    r1=$(rss "$cp")
    sleep 1.2
    r2=$(rss "$cp")
    read -r _ <&4 || true
    exec 4<&-
    wait "$kp" || true
    rm -f "$TMP/f"
    echo "$(basename "$bin") $round $r0 ${ready#READY } $(per "$r0" "$r1") $(per "$r0" "$r2")"
    kill -TERM "$cp"
    wait "$cp" || true
  done
done
