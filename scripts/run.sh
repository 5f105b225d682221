#!/usr/bin/env bash
# `make run`: starts canaryd with CONFIG; for the demo config also the two mock
# upstreams it points at (control on :9101, canary on :9102). Ctrl-C stops all.
set -euo pipefail
build=${1:-build}
config=${2:-config/demo.yaml}
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

if [[ "$config" == "config/demo.yaml" ]]; then
  export CANARYD_ADMIN_TOKEN=${CANARYD_ADMIN_TOKEN:-demo-admin-token}
  "$build/tools/mock-upstream/mock-upstream" --port 9101 --name openai --latency 40 --stream-delay 50 >/dev/null &
  pids+=($!)
  "$build/tools/mock-upstream/mock-upstream" --port 9102 --name holysheep --latency 15 --stream-delay 30 >/dev/null &
  pids+=($!)
  cat <<MSG

  canaryd demo: control = mock "openai" on :9101, canary = mock "holysheep" on :9102

  Try, in another terminal:
    curl -s localhost:8080/v1/chat/completions -H 'X-User-ID: alice' \\
      -d '{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}' -D - -o /dev/null | grep -i x-canaryd
    curl -sN localhost:8080/v1/chat/completions -H 'X-User-ID: bob' \\
      -d '{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    curl -s localhost:8080/metrics | grep ai_proxy_requests_total
    CANARYD_ADMIN_TOKEN=$CANARYD_ADMIN_TOKEN $build/canaryd ctl status
  OpenAI SDK (Node):  new OpenAI({ baseURL: "http://127.0.0.1:8080/v1", apiKey: "unused" })
  OpenAI SDK (Python): OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")

  Ctrl-C stops canaryd and both mocks.

MSG
fi
"$build/canaryd" -c "$config" &
pids+=($!)
wait "${pids[-1]}"
