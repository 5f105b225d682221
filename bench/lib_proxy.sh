# Sourced by bench/load.sh and bench/soak.sh: starts one mock-upstream and
# canaryd (fallback off, limits sized for the load) and stops them by PID.
# The caller sets ROOT and its defaults for DURATION, CONNS and STREAMS, then
# sources this with its arguments: [--duration S] [--conns N] [--streams N].
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--conns N] [--streams N]" >&2; exit 2 ;;
  esac
done
TMP=$(mktemp -d /tmp/canaryd-load.XXXXXX)
MOCK_BIN=${MOCK_BIN:-$BUILD_DIR/tools/mock-upstream/mock-upstream}
CANARYD_BIN=${CANARYD_BIN:-$BUILD_DIR/canaryd}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

start_stack() {
  local conns=$1 streams=$2
  "$MOCK_BIN" --port 0 --port-file "$TMP/mock.port" --threads 1 --name load >"$TMP/mock.log" 2>&1 &
  MOCK_PID=$!
  for _ in $(seq 100); do [[ -s $TMP/mock.port ]] && break; sleep 0.1; done
  local mport; mport=$(cat "$TMP/mock.port")
  cat >"$TMP/canaryd.yaml" <<YAML
server:
  listen: "127.0.0.1:0"
  threads: 2
  max_connections: $((conns + streams + 500))
  drain_delay: 0s
  shutdown_grace: 5s
  access_log: false
upstreams:
  ctl:
    base_url: "http://127.0.0.1:$mport/v1"
    api_key_env: CANARYD_LOAD_KEY
    max_connections: $((conns + streams + 100))
    pool_wait: 10s
    timeout: 60s
  cny:
    base_url: "http://127.0.0.1:$mport/v1"
    api_key_env: CANARYD_LOAD_KEY
split:
  control: ctl
  canary: cny
fallback:
  enabled: false
pricing:
  gpt-4.1: {input: 8.0, output: 32.0}
YAML
  CANARYD_LOAD_KEY=sk-load "$CANARYD_BIN" -c "$TMP/canaryd.yaml" --log-level warn >"$TMP/canaryd.log" 2>&1 &
  CANARYD_PID=$!
  CANARYD_PORT=""
  for _ in $(seq 100); do
    CANARYD_PORT=$(ss -ltnpH 2>/dev/null | awk -v p="pid=$CANARYD_PID," '$0 ~ p {n=split($4,a,":"); print a[n]; exit}')
    [[ -n $CANARYD_PORT ]] && break
    sleep 0.1
  done
  [[ -n $CANARYD_PORT ]] || { echo "canaryd did not start: $(cat "$TMP/canaryd.log")" >&2; stop_stack; exit 1; }
}

check_alive() {
  if ! kill -0 "$CANARYD_PID" 2>/dev/null; then echo "canaryd died: $(tail -20 "$TMP/canaryd.log")" >&2; return 1; fi
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CANARYD_PORT/ready" || true)
  echo "after load: /ready $code"
  [[ $code == 200 ]]
}

stop_stack() {
  [[ -n ${CANARYD_PID:-} ]] && kill -TERM "$CANARYD_PID" 2>/dev/null && wait "$CANARYD_PID" 2>/dev/null || true
  [[ -n ${MOCK_PID:-} ]] && kill -TERM "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
