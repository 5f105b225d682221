-- wrk script: POST a small non-streaming chat completion with a per-request
-- X-User-ID, so the proxies split on a different user every request (as the
-- nginx split_clients and canaryd's sticky key both hash on it).
-- Counts non-2xx answers itself, because wrk only reports them in its summary
-- text and a proxy answering 502 fast would otherwise look like a winner.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = '{"model":"gpt-4.1","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  wrk.headers["Content-Type"] = "application/json"
  bad = 0
end

function request()
  counter = counter + 1
  wrk.headers["X-User-ID"] = "user-" .. thread_id .. "-" .. counter
  return wrk.format()
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local errors = 0
  for _, t in ipairs(threads) do errors = errors + (t:get("bad") or 0) end
  -- One machine-readable line; run.sh parses it (latencies in µs).
  io.write(string.format("BENCH requests=%d duration_us=%d rps=%.1f p50=%d p90=%d p99=%d max=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
