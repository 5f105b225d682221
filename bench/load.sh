#!/usr/bin/env bash
# Load check (not a test): 2,000 concurrent keep-alive connections sending
# chat requests back to back plus 500 concurrent streaming requests, for a
# bounded time, against canaryd in front of one mock-upstream. Prints the
# loadgen JSON summary and canaryd's RSS before/after; exits non-zero if any
# request failed or canaryd died.
#
#   bench/load.sh [--duration S] [--conns N] [--streams N]
#   BUILD_DIR=build-hard bench/load.sh --duration 30
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=30 CONNS=2000 STREAMS=500
source "$ROOT/bench/lib_proxy.sh" "$@"  # BUILD_DIR, --duration/--conns/--streams
start_stack "$CONNS" "$STREAMS"
echo "canaryd pid $CANARYD_PID port $CANARYD_PORT rss_kb_start $(rss "$CANARYD_PID")"
rc=0
python3 "$ROOT/bench/loadgen.py" load "http://127.0.0.1:$CANARYD_PORT" --conns "$CONNS" --streams "$STREAMS" \
  --duration "$DURATION" || rc=$?
echo "rss_kb_end $(rss "$CANARYD_PID")"
check_alive || rc=1
stop_stack
exit $rc
