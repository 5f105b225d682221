-- wrk script for the streaming saturation run (bench/run.sh): POST a streamed
-- chat completion of STREAM_CHUNKS events sent back to back (the mock's
-- X-Mock-Stream-Chunks / X-Mock-Stream-Delay-Ms, delay 0), a new X-User-ID per
-- stream, over keep-alive connections. wrk de-chunks the body; each SSE event
-- ends in a blank line, so the events relayed are counted here, and a stream
-- that is not 200 or lacks its events (the last being [DONE]) counts as bad.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  chunks = tonumber(os.getenv("STREAM_CHUNKS") or "20")
  wrk.method = "POST"
  wrk.body = '{"model":"gpt-4.1","stream":true,' ..
             '"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Mock-Stream-Chunks"] = tostring(chunks)
  wrk.headers["X-Mock-Stream-Delay-Ms"] = "0"
  bad = 0
  events = 0
  streams = 0
end

function request()
  counter = counter + 1
  wrk.headers["X-User-ID"] = "stream-" .. thread_id .. "-" .. counter
  return wrk.format()
end

function response(status, headers, body)
  -- gsub counts in C; the events are chunks deltas + "data: [DONE]".
  local _, n = string.gsub(body, "\n\n", "")
  events = events + n
  streams = streams + 1
  if status ~= 200 or n ~= chunks + 1 or not string.find(body, "data: [DONE]", 1, true) then bad = bad + 1 end
end

function done(summary, latency, requests)
  local errors, ev, st = 0, 0, 0
  for _, t in ipairs(threads) do
    errors = errors + (t:get("bad") or 0)
    ev = ev + (t:get("events") or 0)
    st = st + (t:get("streams") or 0)
  end
  -- One machine-readable line; run.sh parses it (latencies in µs).
  io.write(string.format("BENCH requests=%d duration_us=%d rps=%.1f events=%d eps=%.1f p50=%d p99=%d bad=%d sockerr=%d\n",
    st, summary.duration, st / (summary.duration / 1e6), ev, ev / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), errors,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
