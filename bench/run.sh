#!/usr/bin/env bash
# canaryd benchmark suite (`make bench [QUICK=1]`): mock upstream directly vs
# nginx vs canaryd, all on 127.0.0.1, every figure a ratio against nginx
# measured in the same run. Not a test: it prints a table and the targets met
# or missed, and exits 0 unless the harness itself failed.
#
#   bench/run.sh [--quick] [--only pins] [--out FILE]
#
# The headline throughput rows run nginx and canaryd with both access logs on
# (canaryd's is on by default; nginx's is a JSON log_format of the same
# fields, to a file), then the same with both off. Streaming saturation
# (bench/stream.lua: 20-event streams back to back) gives streams/s and proxy
# CPU per relayed event; bench/alloc_count.c, preloaded into one more canaryd
# and nginx, counts heap allocations per request and per streamed event.
#
# --only pins: just the pin-store comparison (hash only vs Redis vs a 3-primary
# Redis Cluster vs in memory), five interleaved rounds, each with its own ratio
# (a few minutes).
#
# Environment:
#   BUILD_DIR    build dir holding canaryd and tools/mock-upstream (default: build)
#   BENCH_SCHED  rr (default as root): every benchmarked process and the load
#                generator run SCHED_RR, so the compilers and tests of other
#                people on this 2-core machine cannot skew one run against
#                another; nice: own autogroup at nice -20; none: as started.
#   BENCH_OUT    markdown results file (default /tmp/canaryd-bench-DATE.md)
#
# CPU placement (2 cores; see docs/benchmarks.md "Method"):
#   1-thread figures: the proxy under test alone on CPU 1; wrk, the mocks, the
#     streaming client and redis share CPU 0. nginx and canaryd get exactly the
#     same placement, and each run also records the proxy's own CPU time, so
#     "requests per proxy CPU-second" is reported next to requests/s (the
#     latter is capped by CPU 0 when the proxy is cheaper than wrk + mock).
#   2-thread figures: two cores cannot give a 2-thread proxy its own cores, so
#     everything floats on CPUs 0-1 (mock 2 threads, wrk 2 threads), the same
#     for nginx and canaryd.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
QUICK=0
ONLY=
OUT=${BENCH_OUT:-}
ARGS=("$@")
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift; [[ $ONLY == pins ]] || { echo "bench: --only takes: pins" >&2; exit 2; } ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--quick] [--only pins] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${BUILD_DIR:-build}
[[ $BUILD = /* ]] || BUILD="$ROOT/$BUILD"
CANARYD="$BUILD/canaryd"
MOCK="$BUILD/tools/mock-upstream/mock-upstream"
for b in "$CANARYD" "$MOCK"; do
  [[ -x $b ]] || { echo "bench: $b not built (ninja -C $BUILD canaryd mock-upstream)" >&2; exit 1; }
done
# The system interpreter: a version-manager shim (pyenv) costs a second per start.
PY=python3
[[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
for t in wrk nginx taskset python3 redis-server redis-cli cc od; do
  command -v "$t" >/dev/null || { echo "bench: $t missing (scripts/install-deps.sh --bench)" >&2; exit 1; }
done

# ---- scheduling -------------------------------------------------------------
SCHED_MODE=${BENCH_SCHED:-}
if [[ -z $SCHED_MODE ]]; then
  if [[ $(id -u) -eq 0 ]] && chrt -r 10 true 2>/dev/null; then SCHED_MODE=rr; else SCHED_MODE=none; fi
fi
SCHED=()
case "$SCHED_MODE" in
  rr)
    # The harness itself (bash, awk, pgrep, starting processes) runs real-time
    # too, one level below what it measures: at normal priority on a loaded
    # machine its own steps took longer than the measurements.
    if [[ -z ${BENCH_IN_RR:-} ]]; then BENCH_IN_RR=1 exec chrt -r 5 "$0" "${ARGS[@]}"; fi
    SCHED=(chrt -r 10) ;;
  nice)
    # A new session gets its own autogroup; renicing it puts the whole bench
    # ahead of other sessions' work (plain nice only orders within a group).
    if [[ -z ${BENCH_IN_SESSION:-} ]]; then
      BENCH_IN_SESSION=1 exec setsid -w "$0" "${ARGS[@]}"
    fi
    echo -20 >/proc/self/autogroup 2>/dev/null || true
    SCHED=(nice -n -20) ;;
  none) ;;
  *) echo "bench: BENCH_SCHED must be rr, nice or none" >&2; exit 2 ;;
esac

# ---- durations ---------------------------------------------------------------
if ((QUICK)); then
  D_SAT=2; D_LAT=1; ROUNDS=1; LAT_ROUNDS=3; STREAMS=24; SLOW_CHUNKS=4; IDLE_HOLD=2.5; WARM=1; D_ALLOC=1; D_IDLE=0.5
else
  D_SAT=8; D_LAT=5; ROUNDS=3; LAT_ROUNDS=3; STREAMS=120; SLOW_CHUNKS=16; IDLE_HOLD=2.5; WARM=2; D_ALLOC=4; D_IDLE=2
fi
PIN_ROUNDS=$ROUNDS
[[ $ONLY == pins ]] && PIN_ROUNDS=5
MODE=$( ((QUICK)) && echo quick || echo full )${ONLY:+, only $ONLY}
SLOW_DELAY_MS=250      # 500 slow streams: one event every 250 ms
STREAM_CHUNKS=20; STREAM_DELAY_MS=5; STREAM_CONC=8
# Streaming saturation (bench/stream.lua): 64 streams at a time, each 20 events
# sent back to back; a new stream on the connection as soon as one ends.
SSAT_CONNS=64; export BENCH_STREAM_CHUNKS=20
IDLE_CONNS=1000; SLOW_STREAMS=500
CPU_LOAD=0; CPU_PROXY=1; CPU_ALL=0,1

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/canaryd-bench.XXXXXX)
RES="$TMP/results.txt"
# Run copies of the binaries: a rebuild of the build dir during the run would
# otherwise swap them under us (or leave them half-written).
CANARYD_BUILT=$(date -u -r "$CANARYD" +%Y-%m-%dT%H:%MZ)
mkdir -p "$TMP/bin"
cp "$CANARYD" "$MOCK" "$TMP/bin/"
CANARYD="$TMP/bin/canaryd"; MOCK="$TMP/bin/mock-upstream"
: >"$RES"
declare -A PID=()

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
record() { echo "$1 $2" >>"$RES"; }

stop() {  # stop NAME...: SIGTERM each recorded PID, SIGKILL what is left after 5 s
  local pids=() name pid
  for name in "$@"; do
    pid=${PID[$name]:-}
    [[ -n $pid ]] || continue
    unset "PID[$name]"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  stop "${!PID[@]}"
  if ((rc == 0)) && [[ -z ${BENCH_KEEP_TMP:-} ]]; then rm -rf "$TMP"; else echo "bench: logs kept in $TMP" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WRAP=()  # set around a start_* call: a command prefix for that process alone (env LD_PRELOAD=...)
start() {  # start NAME CPUS CMD...: background, output to TMP/NAME.log
  local name=$1 cpus=$2; shift 2
  taskset -c "$cpus" "${SCHED[@]}" "${WRAP[@]}" "$@" >"$TMP/$name.log" 2>&1 &
  PID[$name]=$!
}

wait_port() {  # wait_port PORT NAME
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "${PID[$2]}" 2>/dev/null || { echo "bench: $2 exited:" >&2; tail -5 "$TMP/$2.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "bench: $2 not listening on $1" >&2; tail -5 "$TMP/$2.log" >&2; exit 1
}

free_ports() {  # free_ports N: N distinct free TCP ports
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

read -r P_MOCK_A P_MOCK_B P_MOCK_SOLO P_NGINX P_NGINX_LOG P_CD P_CD_LOG P_CD_REDIS P_CD_MEMPIN P_REDIS P_CD_CLUSTER \
  P_NGINX_ALLOC P_CD_ALLOC <<<"$(free_ports 13)"
# Redis Cluster nodes: each needs its port + 10000 (the cluster bus) free too.
read -r -a P_CLUSTER <<<"$("$PY" - <<'EOF'
import socket
socks, ports = [], []
while len(ports) < 3:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p > 55535:
        s.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000))
    except OSError:
        s.close(); b.close(); continue
    socks += [s, b]; ports.append(p)
print(" ".join(map(str, ports)))
EOF
)"

# ---- process starters -----------------------------------------------------
start_mocks() {  # start_mocks CPUS THREADS
  start mock_a "$1" "$MOCK" --port "$P_MOCK_A" --threads "$2" --name control
  start mock_b "$1" "$MOCK" --port "$P_MOCK_B" --threads "$2" --name canary
  wait_port "$P_MOCK_A" mock_a; wait_port "$P_MOCK_B" mock_b
}

start_nginx() {  # start_nginx NAME PORT CPUS WORKERS ACCESS_LOG(on|off)
  local name=$1 port=$2 cpus=$3 workers=$4 alog=off dir="$TMP/$1"
  mkdir -p "$dir/tmp" "$dir/logs"
  [[ $5 == on ]] && alog="$dir/access.log bench"
  sed -e "s|@WORKERS@|$workers|g" -e "s|@DIR@|$dir|g" -e "s|@ACCESS_LOG@|$alog|g" \
      -e "s|@CONTROL_PORT@|$P_MOCK_A|g" -e "s|@CANARY_PORT@|$P_MOCK_B|g" -e "s|@PORT@|$port|g" \
      "$BENCH/nginx.conf.in" >"$dir/nginx.conf"
  start "$name" "$cpus" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
  wait_port "$port" "$name"
}

start_canaryd() {  # start_canaryd NAME PORT CPUS THREADS ACCESS_LOG(true|false) PIN_TTL [REDIS_PORT|REDIS_URL]
  local name=$1 port=$2 cpus=$3 threads=$4 alog=$5 ttl=$6 redis=${7:-} cfg="$TMP/$1.yaml"
  cat >"$cfg" <<EOF
# generated by bench/run.sh
server:
  listen: "127.0.0.1:$port"
  threads: $threads
  access_log: $alog
  max_connections: 20000
  drain_delay: 0     # stop at once: the bench ends processes between sections
  shutdown_grace: 1s
upstreams:
  control:
    base_url: "http://127.0.0.1:$P_MOCK_A/v1"
    max_connections: 2048
  canary:
    base_url: "http://127.0.0.1:$P_MOCK_B/v1"
    max_connections: 2048
split:
  control: control
  canary: canary
  sticky_key: ["header:X-User-ID"]
  pin_ttl: $ttl
rollout:
  steps: [{weight: 10, pause: 24h}]   # held at 10% for the whole run, like nginx's split
  auto_promote: false
fallback:
  enabled: false
EOF
  [[ -n $redis && $redis != *://* ]] && redis="redis://127.0.0.1:$redis/0"
  [[ -n $redis ]] && printf 'redis:\n  url: "%s"\n' "$redis" >>"$cfg"
  # canaryd logs JSON lines to stdout: the access-log-on case writes them to a
  # file on disk (TMP/NAME.log), as a deployment without a log shipper would.
  start "$name" "$cpus" "$CANARYD" -c "$cfg"
  wait_port "$port" "$name"
}

pids_of() {  # the process and its children (nginx workers)
  local p=${PID[$1]}
  echo "$p" $(pgrep -P "$p" || true)
}
cpu_ticks() {  # utime+stime, clock ticks, summed over pids_of NAME
  local t=0 f
  for p in $(pids_of "$1"); do
    read -r -a f 2>/dev/null <"/proc/$p/stat" || continue
    # Fields after the "(comm)" may shift if comm has spaces; ours do not.
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
mem_kb() {  # mem_kb NAME: "RSS PSS" in KiB summed over pids_of NAME
  local rss=0 pss=0 v
  for p in $(pids_of "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0); rss=$((rss + ${v:-0}))
    v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); pss=$((pss + ${v:-0}))
  done
  echo "$rss $pss"
}
HZ=$(getconf CLK_TCK)

# ---- heap allocation counter (bench/alloc_count.c) ---------------------------
# Built here from source into the temp dir, never committed as a binary.
ALLOC_SO="$TMP/bin/alloc_count.so"
declare -A ALLOC_FILE=()  # NAME -> its counter file
cc -O2 -Wall -shared -fPIC -o "$ALLOC_SO" "$BENCH/alloc_count.c" -ldl ||
  { echo "bench: cc could not build bench/alloc_count.c" >&2; exit 1; }
start_counted() {  # start_counted start_nginx|start_canaryd NAME ARGS...: that proxy with the counter preloaded
  local fn=$1 name=$2
  ALLOC_FILE[$name]="$TMP/$name.allocs"
  WRAP=(env LD_PRELOAD="$ALLOC_SO" ALLOC_COUNT_FILE="${ALLOC_FILE[$name]}")
  "$fn" "${@:2}"
  WRAP=()
  [[ $(od -An -t x8 -N 8 "${ALLOC_FILE[$name]}" 2>/dev/null | tr -d ' ') == 31544e434f4c4c41 ]] ||
    { echo "bench: $name did not load the allocation counter" >&2; exit 1; }
}
alloc_counts() {  # alloc_counts NAME: "malloc calloc realloc aligned new free bytes", totals so far
  od -An -t u8 -v -j 8 -N 56 "${ALLOC_FILE[$1]}" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
}

URL_PATH=/v1/chat/completions
# wrk_run KEY CPUS THREADS CONNS SECONDS PORT [PROXY_NAME]: records
# KEY.rps/.p50/.p99/.errors and, with PROXY_NAME, KEY.cpu_us_per_req and
# KEY.cpu_util. WRK_SCRIPT=stream.lua wrk_run ... runs the streaming load
# instead of chat.lua: then KEY.rps is streams/s, and KEY.eps (events/s) and
# KEY.cpu_us_per_event are recorded too. A proxy started with an allocation
# counter (start_counted) also gets KEY.allocs_per_req, .new_per_req,
# .bytes_per_req (and per event).
wrk_run() {
  local key=$1 cpus=$2 thr=$3 conns=$4 secs=$5 port=$6 proxy=${7:-} t0=0 t1=0 w0 w1 line a0= a1=
  local script=${WRK_SCRIPT:-chat.lua}
  if [[ -n $proxy ]] && ! kill -0 "${PID[$proxy]:-0}" 2>/dev/null; then
    # A crashed proxy is a finding, not a harness failure: say so and go on.
    log "$key: SKIPPED, $proxy is not running (its log: $TMP/$proxy.log): $(tail -1 "$TMP/$proxy.log" 2>/dev/null)"
    record "crashed.$proxy" 1
    BENCH_KEEP_TMP=1
    return 0
  fi
  [[ -n $proxy ]] && t0=$(cpu_ticks "$proxy")
  [[ -n $proxy && -n ${ALLOC_FILE[$proxy]:-} ]] && a0=$(alloc_counts "$proxy")
  w0=$(date +%s%N)
  line=$(taskset -c "$cpus" "${SCHED[@]}" wrk -t"$thr" -c"$conns" -d"${secs}s" --timeout 5s --latency \
           -s "$BENCH/$script" "http://127.0.0.1:$port$URL_PATH" | grep '^BENCH ') || {
    log "$key: wrk failed${proxy:+ ($proxy log: $(tail -1 "$TMP/$proxy.log" 2>/dev/null))}"
    [[ -n $proxy ]] && record "crashed.$proxy" 1
    BENCH_KEEP_TMP=1
    return 0; }
  w1=$(date +%s%N)
  [[ -n $proxy ]] && t1=$(cpu_ticks "$proxy")
  [[ -n $a0 ]] && a1=$(alloc_counts "$proxy")
  local rps p50 p99 bad=0 err=0 reqs events= eps= unit=req a_req a_new a_bytes a_ev a_free
  for kv in $line; do
    case "$kv" in
      rps=*) rps=${kv#rps=} ;; p50=*) p50=${kv#p50=} ;; p99=*) p99=${kv#p99=} ;;
      non2xx=*|bad=*) bad=${kv#*=} ;; sockerr=*) err=${kv#sockerr=} ;; requests=*) reqs=${kv#requests=} ;;
      events=*) events=${kv#events=} ;; eps=*) eps=${kv#eps=} ;;
    esac
  done
  record "$key.rps" "$rps"; record "$key.p50" "$p50"; record "$key.p99" "$p99"
  record "$key.errors" $((bad + err))
  [[ -n $eps ]] && record "$key.eps" "$eps"
  if [[ -n $proxy && $reqs -gt 0 ]]; then
    local cpu_us=$(( (t1 - t0) * 1000000 / HZ ))
    record "$key.cpu_us_per_req" "$(awk -v c="$cpu_us" -v r="$reqs" 'BEGIN{printf "%.2f", c/r}')"
    record "$key.cpu_util" "$(awk -v c="$cpu_us" -v w=$(( (w1 - w0) / 1000 )) 'BEGIN{printf "%.2f", c/w}')"
    [[ -n $events && $events -gt 0 ]] &&
      record "$key.cpu_us_per_event" "$(awk -v c="$cpu_us" -v e="$events" 'BEGIN{printf "%.3f", c/e}')"
  fi
  if [[ -n $a1 && $reqs -gt 0 ]]; then
    # alloc_counts: malloc calloc realloc aligned new free bytes. Allocations =
    # every call that can hand out memory (all but free).
    local per
    per=$(awk -v a="$a0" -v b="$a1" -v r="$reqs" -v e="${events:-0}" 'BEGIN{
      split(a, x, " "); split(b, y, " ")
      n = 0; for (i = 1; i <= 5; i++) n += y[i] - x[i]
      printf "%.2f %.2f %.0f %.3f %.2f", n / r, (y[5] - x[5]) / r, (y[7] - x[7]) / r, (e > 0 ? n / e : -1), (y[6] - x[6]) / r }')
    read -r a_req a_new a_bytes a_ev a_free <<<"$per"
    record "$key.allocs_per_req" "$a_req"; record "$key.new_per_req" "$a_new"
    record "$key.bytes_per_req" "$a_bytes"; record "$key.frees_per_req" "$a_free"
    [[ $a_ev != -1.000 ]] && record "$key.allocs_per_event" "$a_ev"
    log "$key: $a_req allocations per request ($a_new operator new, $a_bytes bytes)${events:+, $a_ev per event}"
  fi
  [[ -n $events ]] && unit=streams
  log "$key: $rps $unit/s${eps:+ ($eps events/s)} p50=${p50}us p99=${p99}us errors=$((bad + err))"
}
warm() {  # warm CPUS PORT: fill the upstream keep-alive pools, page the code in
  if ((QUICK)); then
    client "$1" idle --port "$2" --connections 64 --hold 0 >/dev/null
  else
    taskset -c "$1" "${SCHED[@]}" wrk -t1 -c64 -d"${WARM}s" -s "$BENCH/chat.lua" "http://127.0.0.1:$2$URL_PATH" >/dev/null
  fi
}

client() {  # client CPUS ARGS...: bench/sse_client.py
  taskset -c "$1" "${SCHED[@]}" "$PY" "$BENCH/sse_client.py" "${@:2}"
}
stream_run() {  # stream_run KEY PORT
  local j
  j=$(client "$CPU_LOAD" stream --port "$2" --streams "$STREAMS" --concurrency "$STREAM_CONC" \
        --chunks "$STREAM_CHUNKS" --delay-ms "$STREAM_DELAY_MS")
  local kv
  for kv in $j; do
    case "${kv%%=*}" in
      ttfb_p50_us|ttfb_p99_us|event_p50_us|event_p99_us|errors) record "$1.${kv%%=*}" "${kv#*=}" ;;
    esac
  done
  log "$1: $j"
}

memory_run() {  # memory_run NAME PORT: idle, 1,000 and 2,000 idle keep-alive conns, 500 slow streams
  local name=$1 port=$2 fifo="$TMP/$1.fifo" cpid line
  record "mem.$name.idle_kb" "$(mem_kb "$name" | cut -d' ' -f1)"
  record "mem.$name.idle_pss_kb" "$(mem_kb "$name" | cut -d' ' -f2)"
  # Read twice: 0.3 s after the last connection got its answer ("just idle":
  # canaryd's sessions still hold their read buffers, Worker::kKeepBuffer),
  # and 1.5 s after (settled: every connection parked, the burst's heap given
  # back), which the target is judged on. Then the same with 2,000.
  local n
  for n in "$IDLE_CONNS" "$((2 * IDLE_CONNS))"; do
    mkfifo "$fifo"
    client "$CPU_LOAD" idle --port "$port" --connections "$n" --hold "$IDLE_HOLD" >"$fifo" &
    cpid=$!
    exec 4<"$fifo"
    read -r line <&4
    sleep 0.3
    record "mem.$name.conns${n}_fresh_kb" "$(mem_kb "$name" | cut -d' ' -f1)"
    sleep 1.2
    record "mem.$name.conns${n}_kb" "$(mem_kb "$name" | cut -d' ' -f1)"
    log "mem $name: $n idle keep-alive: $line, $(mem_kb "$name") KiB rss/pss"
    read -r line <&4 || true
    exec 4<&-; wait "$cpid" || true; rm -f "$fifo"
    sleep 0.5
  done
  mkfifo "$fifo"
  client "$CPU_LOAD" slow --port "$port" --concurrency "$SLOW_STREAMS" --chunks "$SLOW_CHUNKS" \
    --delay-ms "$SLOW_DELAY_MS" --timeout 60 >"$fifo" &
  cpid=$!
  exec 4<"$fifo"
  read -r line <&4
  sleep 0.3
  record "mem.$name.streams_kb" "$(mem_kb "$name" | cut -d' ' -f1)"
  record "mem.$name.streams_pss_kb" "$(mem_kb "$name" | cut -d' ' -f2)"
  log "mem $name: $SLOW_STREAMS slow streams: $line, $(mem_kb "$name") KiB rss/pss"
  read -r line <&4 || true
  log "mem $name: $line"
  record "mem.$name.streams_ok" "$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$line")"
  exec 4<&-; wait "$cpid" || true; rm -f "$fifo"
}

# ---- pins: hash only (pin_ttl 0) vs pin_ttl 1h on Redis, on a 3-primary Redis
# Cluster (and in memory) ---------------------------------------------------------
# Needs the mocks and `canaryd` (pin_ttl 0) running on the 1-thread placement.
# Rounds are interleaved and each records its own Redis/hash ratio, so drift
# on this shared machine hits both alike and the spread is visible. The
# cluster's three nodes share CPU 0 with wrk and the mocks, as the single
# Redis does.
start_cluster() {
  local p hosts=()
  for p in "${P_CLUSTER[@]}"; do
    mkdir -p "$TMP/cluster-$p"
    start "cluster_$p" "$CPU_LOAD" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$TMP/cluster-$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
    wait_port "$p" "cluster_$p"
    hosts+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >"$TMP/cluster-create.log" 2>&1 ||
    { echo "bench: redis-cli --cluster create failed:" >&2; tail -5 "$TMP/cluster-create.log" >&2; exit 1; }
  for _ in $(seq 200); do
    local ok=1
    for p in "${P_CLUSTER[@]}"; do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
    done
    ((ok)) && return 0
    sleep 0.05
  done
  echo "bench: the cluster did not reach cluster_state:ok" >&2; exit 1
}
cluster_url() { local IFS=,; echo "redis+cluster://${P_CLUSTER[*]/#/127.0.0.1:}"; }

pins_section() {
  start redis "$CPU_LOAD" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode yes --dir "$TMP"
  wait_port "$P_REDIS" redis
  start_cluster
  start_canaryd canaryd_redis "$P_CD_REDIS" "$CPU_PROXY" 1 false 1h "$P_REDIS"
  start_canaryd canaryd_cluster "$P_CD_CLUSTER" "$CPU_PROXY" 1 false 1h "$(cluster_url)"
  ((QUICK)) || start_canaryd canaryd_mempin "$P_CD_MEMPIN" "$CPU_PROXY" 1 false 1h
  # canaryd's log is asynchronous: its "listening" line may reach the file a little after the port opens.
  local seen=0
  for _ in $(seq 40); do grep -q '"store":"redis"' "$TMP/canaryd_redis.log" && { seen=1; break; }; sleep 0.05; done
  ((seen)) || log "warning: canaryd_redis does not report store=redis"
  warm "$CPU_LOAD" "$P_CD_REDIS"; warm "$CPU_LOAD" "$P_CD_CLUSTER"; ((QUICK)) || warm "$CPU_LOAD" "$P_CD_MEMPIN"
  # Every request carries a new X-User-ID, so with pins on each one is a first
  # assignment: a pin write on the canary side, a lookup on control's (the
  # worst case for the store).
  local r
  for r in $(seq "$PIN_ROUNDS"); do
    wrk_run pins.hash "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD" canaryd
    wrk_run pins.redis "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD_REDIS" canaryd_redis
    wrk_run pins.cluster "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD_CLUSTER" canaryd_cluster
    ((QUICK)) || wrk_run pins.memory "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD_MEMPIN" canaryd_mempin
    record pins.round_ratio "$(last_ratio pins.redis.rps pins.hash.rps)"
    record pins.round_cluster_ratio "$(last_ratio pins.cluster.rps pins.hash.rps)"
    ((QUICK)) || record pins.round_memratio "$(last_ratio pins.memory.rps pins.hash.rps)"
  done
  for r in $(seq "$PIN_ROUNDS"); do
    wrk_run pinlat.hash "$CPU_LOAD" 1 1 "$D_LAT" "$P_CD" canaryd
    wrk_run pinlat.redis "$CPU_LOAD" 1 1 "$D_LAT" "$P_CD_REDIS" canaryd_redis
    wrk_run pinlat.cluster "$CPU_LOAD" 1 1 "$D_LAT" "$P_CD_CLUSTER" canaryd_cluster
  done
  record pins.redis_keys "$(redis-cli -p "$P_REDIS" dbsize 2>/dev/null || echo '?')"
  local p keys=0 n
  for p in "${P_CLUSTER[@]}"; do
    n=$(redis-cli -p "$p" dbsize 2>/dev/null || echo 0)
    record "pins.cluster_keys_$p" "$n"
    keys=$((keys + n))
  done
  record pins.cluster_keys "$keys"
  grep -q '"msg":"redis: cluster slot map"' "$TMP/canaryd_cluster.log" ||
    log "warning: canaryd_cluster never logged a slot map"
  stop canaryd_redis canaryd_cluster canaryd_mempin redis "${P_CLUSTER[@]/#/cluster_}"
}
log_dropped() {  # log_dropped KEY PORT: canaryd's *_log_dropped_total (lines a full log queue dropped)
  local v
  v=$("$PY" - "$2" <<'EOF'
import re, sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
    found = re.findall(r"^\w+_log_dropped_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    print(f"{sum(float(x) for x in found):.0f}" if found else "")
except Exception:
    print("")
EOF
)
  [[ -n $v ]] && record "$1" "$v" || log "warning: no *_log_dropped_total on port $2"
}
last_ratio() {  # last_ratio KEY_A KEY_B: A/B of the last recorded values
  awk -v a="$1" -v b="$2" '$1 == a { x = $2 } $1 == b { y = $2 } END { if (y > 0) printf "%.3f", x / y }' "$RES"
}

finish() {  # the report: meta figures, the table, the markdown file
  record meta.load_after "$(cut -d' ' -f1 /proc/loadavg)"
  record meta.seconds $(( $(date +%s) - T_START ))
  record meta.mode "$MODE"
  record meta.sched "$SCHED_MODE"
  [[ -n $OUT ]] || OUT="/tmp/canaryd-bench-$(date +%Y%m%d-%H%M%S).md"
  "$PY" "$BENCH/report.py" "$RES" --markdown "$OUT"
  cp "$RES" "${OUT%.md}.raw.txt"
  log "markdown: $OUT (raw figures: ${OUT%.md}.raw.txt)"
}

T_START=$(date +%s)
log "mode=$MODE sched=$SCHED_MODE build=$BUILD tmp=$TMP"
record meta.load_before "$(cut -d' ' -f1 /proc/loadavg)"
record meta.canaryd_built "$CANARYD_BUILT"

if [[ $ONLY == pins ]]; then
  start_mocks "$CPU_LOAD" 1
  start_canaryd canaryd "$P_CD" "$CPU_PROXY" 1 false 0
  warm "$CPU_LOAD" "$P_CD"
  pins_section
  stop canaryd mock_a mock_b
  finish
  exit 0
fi


# ==== 1 thread: proxy alone on CPU 1, everything else on CPU 0 ================
start_mocks "$CPU_LOAD" 1
start_nginx nginx "$P_NGINX" "$CPU_PROXY" 1 off
start_canaryd canaryd "$P_CD" "$CPU_PROXY" 1 false 0

# Memory first, on fresh processes (after one warm-up request each).
for n in nginx canaryd; do
  p=P_NGINX; [[ $n == canaryd ]] && p=P_CD
  client "$CPU_LOAD" idle --port "${!p}" --connections 1 --hold 0 >/dev/null
  sleep 0.2
  memory_run "$n" "${!p}"
done

# Both access logs on, to a file in TMP (on disk): the headline rows, since
# canaryd's log is on by default. nginx's is a JSON log_format of the same fields.
start_nginx nginx_log "$P_NGINX_LOG" "$CPU_PROXY" 1 on
start_canaryd canaryd_log "$P_CD_LOG" "$CPU_PROXY" 1 true 0
for n in nginx_log canaryd_log; do  # idle RSS with the log on, after one request, as above
  p=P_NGINX_LOG; [[ $n == canaryd_log ]] && p=P_CD_LOG
  client "$CPU_LOAD" idle --port "${!p}" --connections 1 --hold 0 >/dev/null
  sleep 0.2
  record "mem.$n.idle_kb" "$(mem_kb "$n" | cut -d' ' -f1)"
done

log "warm-up"
warm "$CPU_LOAD" "$P_MOCK_A"
for p in "$P_NGINX_LOG" "$P_CD_LOG" "$P_NGINX" "$P_CD"; do warm "$CPU_LOAD" "$p"; done

# The load side's ceiling: wrk and the mock sharing CPU 0, as in every proxied
# run (a proxy cannot exceed it), and the mock with a core of its own.
wrk_run sat1.direct "$CPU_LOAD" 1 64 "$D_SAT" "$P_MOCK_A"
start mock_solo "$CPU_PROXY" "$MOCK" --port "$P_MOCK_SOLO" --threads 1 --name solo
wait_port "$P_MOCK_SOLO" mock_solo
((QUICK)) || wrk_run sat1.mock_own_core "$CPU_LOAD" 1 64 "$D_SAT" "$P_MOCK_SOLO"
for r in $(seq "$ROUNDS"); do  # interleaved, so drift hits both alike
  wrk_run sat1log.nginx "$CPU_LOAD" 1 64 "$D_SAT" "$P_NGINX_LOG" nginx_log
  wrk_run sat1log.canaryd "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD_LOG" canaryd_log
  wrk_run sat1.nginx "$CPU_LOAD" 1 64 "$D_SAT" "$P_NGINX" nginx
  wrk_run sat1.canaryd "$CPU_LOAD" 1 64 "$D_SAT" "$P_CD" canaryd
done
for r in $(seq "$LAT_ROUNDS"); do  # p99 over short runs is noisy: median of several
  # Direct baseline with the mock on CPU 1 where the proxy would be: with
  # wrk and the mock ping-ponging on one core that core is 100% busy and
  # SCHED_RR throttling (50 ms per second) would own the direct p99.
  wrk_run lat.direct "$CPU_LOAD" 1 1 "$D_LAT" "$P_MOCK_SOLO"
  wrk_run lat.nginx "$CPU_LOAD" 1 1 "$D_LAT" "$P_NGINX" nginx
  wrk_run lat.canaryd "$CPU_LOAD" 1 1 "$D_LAT" "$P_CD" canaryd
done
for r in $(seq "$ROUNDS"); do
  stream_run stream.direct "$P_MOCK_SOLO"
  stream_run stream.nginx "$P_NGINX"
  stream_run stream.canaryd "$P_CD"
done

# ---- streaming saturation: 20-event streams back to back, access logs on ------
# wrk (C, one thread on CPU 0) drives 64 streams at a time; the asyncio client
# reached under half of wrk's streams/s against the bare mock. ssat.direct is
# the load side's ceiling (wrk + mock on CPU 0, as in the proxied runs).
WRK_SCRIPT=stream.lua wrk_run ssat.direct "$CPU_LOAD" 1 "$SSAT_CONNS" "$D_SAT" "$P_MOCK_A"
((QUICK)) || WRK_SCRIPT=stream.lua wrk_run ssat.mock_own_core "$CPU_LOAD" 1 "$SSAT_CONNS" "$D_SAT" "$P_MOCK_SOLO"
for r in $(seq "$ROUNDS"); do
  WRK_SCRIPT=stream.lua wrk_run ssat.nginx "$CPU_LOAD" 1 "$SSAT_CONNS" "$D_SAT" "$P_NGINX_LOG" nginx_log
  WRK_SCRIPT=stream.lua wrk_run ssat.canaryd "$CPU_LOAD" 1 "$SSAT_CONNS" "$D_SAT" "$P_CD_LOG" canaryd_log
done
# A log that drops lines under load would be cheaper than nginx's, which never drops.
log_dropped log.canaryd1.dropped "$P_CD_LOG"
stop nginx_log canaryd_log

# ---- heap allocations: one more nginx and canaryd (access logs on) with -------
# bench/alloc_count.so preloaded; its cost stays out of every CPU figure above.
start_counted start_canaryd canaryd_alloc "$P_CD_ALLOC" "$CPU_PROXY" 1 true 0
start_counted start_nginx nginx_alloc "$P_NGINX_ALLOC" "$CPU_PROXY" 1 on
warm "$CPU_LOAD" "$P_CD_ALLOC"; warm "$CPU_LOAD" "$P_NGINX_ALLOC"
for n in canaryd nginx; do
  a0=$(alloc_counts "${n}_alloc"); sleep "$D_IDLE"; a1=$(alloc_counts "${n}_alloc")
  record "alloc.$n.idle_per_s" "$(awk -v a="$a0" -v b="$a1" -v s="$D_IDLE" 'BEGIN{
    split(a, x, " "); split(b, y, " "); n = 0; for (i = 1; i <= 5; i++) n += y[i] - x[i]; printf "%.1f", n / s }')"
done
for n in canaryd nginx; do
  p=P_CD_ALLOC; [[ $n == nginx ]] && p=P_NGINX_ALLOC
  wrk_run "alloc.$n" "$CPU_LOAD" 1 64 "$D_ALLOC" "${!p}" "${n}_alloc"
  WRK_SCRIPT=stream.lua wrk_run "allocstream.$n" "$CPU_LOAD" 1 "$SSAT_CONNS" "$D_ALLOC" "${!p}" "${n}_alloc"
done
stop canaryd_alloc nginx_alloc

pins_section
stop nginx canaryd mock_a mock_b mock_solo

# ==== 2 threads: everything floats on both CPUs ================================
start_mocks "$CPU_ALL" 2
start_nginx nginx_log "$P_NGINX_LOG" "$CPU_ALL" 2 on
start_canaryd canaryd_log "$P_CD_LOG" "$CPU_ALL" 2 true 0
start_nginx nginx "$P_NGINX" "$CPU_ALL" 2 off
start_canaryd canaryd "$P_CD" "$CPU_ALL" 2 false 0
warm "$CPU_ALL" "$P_MOCK_A"
for p in "$P_NGINX_LOG" "$P_CD_LOG" "$P_NGINX" "$P_CD"; do warm "$CPU_ALL" "$p"; done
wrk_run sat2.direct "$CPU_ALL" 2 64 "$D_SAT" "$P_MOCK_A"
for r in $(seq "$ROUNDS"); do
  wrk_run sat2log.nginx "$CPU_ALL" 2 64 "$D_SAT" "$P_NGINX_LOG" nginx_log
  wrk_run sat2log.canaryd "$CPU_ALL" 2 64 "$D_SAT" "$P_CD_LOG" canaryd_log
  wrk_run sat2.nginx "$CPU_ALL" 2 64 "$D_SAT" "$P_NGINX" nginx
  wrk_run sat2.canaryd "$CPU_ALL" 2 64 "$D_SAT" "$P_CD" canaryd
done
log_dropped log.canaryd2.dropped "$P_CD_LOG"
stop nginx_log canaryd_log nginx canaryd mock_a mock_b

finish
