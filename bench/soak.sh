#!/usr/bin/env bash
# Soak (not a test): steady load for a long time (default 10 min) with
# canaryd's RSS sampled every 10 s, to show memory is flat. Prints the loadgen
# JSON summary (rss_kb: [[seconds, kB], ...]) and the RSS growth from the
# first minute's samples to the last.
#
#   bench/soak.sh [--duration S] [--conns N] [--streams N]
#   BUILD_DIR=build-hard bench/soak.sh --duration 120
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=600 CONNS=100 STREAMS=20
source "$ROOT/bench/lib_proxy.sh" "$@"  # BUILD_DIR, --duration/--conns/--streams
start_stack "$CONNS" "$STREAMS"
rc=0
out=$(python3 "$ROOT/bench/loadgen.py" soak "http://127.0.0.1:$CANARYD_PORT" --conns "$CONNS" --streams "$STREAMS" \
  --duration "$DURATION" --pid "$CANARYD_PID" --sample 10) || rc=$?
echo "$out"
python3 - "$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1]).get("rss_kb", [])
if len(s) >= 3:
    warm = max(kb for t, kb in s if t <= 60) if any(t <= 60 for t, _ in s) else s[0][1]
    print(f"rss_kb first-minute max {warm}, last {s[-1][1]}, growth {s[-1][1] - warm} kB")
PY
check_alive || rc=1
stop_stack
exit $rc
