#!/usr/bin/env python3
"""Streaming and connection-holding client for canaryd's benchmarks (bench/run.sh).

Modes:
  stream  run --streams SSE chat completions, --concurrency at a time, and
          measure for each the time to first byte (request written -> first
          response byte) and, for every relayed event, the relay delay:
          arrival time (CLOCK_REALTIME, taken when the bytes that complete the
          event are read) minus the event's "mock_ts_us" (CLOCK_REALTIME when
          the mock wrote it). Proxy minus direct of these is what the proxy adds.
  idle    open --connections keep-alive connections, make one small request on
          each, then hold them open and idle; prints READY, holds --hold seconds.
  slow    start --concurrency slow streams at once (each --chunks events
          --delay-ms apart); prints READY once every stream has its first event,
          then reads them to the end.

Results go to stdout as one line of key=value pairs (stream), or READY/DONE lines.
Plain asyncio Protocols (no StreamReader) keep the per-read overhead small and
the arrival timestamp close to the read; the client runs the same way against
the mock, nginx and canaryd, so its own overhead cancels out in the differences.
"""
import argparse
import asyncio
import re
import sys
import time

TS_RE = re.compile(rb'"mock_ts_us":(\d+)')
CHAT = (b'{"model":"gpt-4.1","stream":true,'
        b'"messages":[{"role":"user","content":"Say hello in one short sentence."}]}')
SMALL = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}'


def now_us():
    return time.time_ns() // 1000


def request(host, port, path, body, user, extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() +
            b"\r\nContent-Type: application/json\r\nX-User-ID: " + user.encode() +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


class Response(asyncio.Protocol):
    """One HTTP/1.1 response at a time on a keep-alive connection; de-chunks
    the body and calls on_event(event_bytes, arrival_us) per SSE event."""

    def __init__(self, on_event=None):
        self.on_event = on_event
        self.transport = None
        self.connected = asyncio.get_running_loop().create_future()
        self.lost = False
        self.reset()

    def reset(self):
        self.buf = b""
        self.headers_done = False
        self.status = 0
        self.chunked = False
        self.remaining = None  # Content-Length left, or bytes left in current chunk
        self.sse = b""
        self.first_byte_us = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.connected.set_result(True)

    def connection_lost(self, exc):
        self.lost = True
        if not self.done.done():
            self.done.set_exception(ConnectionError("connection closed before the response ended"))

    def send(self, data):
        self.transport.write(data)

    def data_received(self, data):
        t = now_us()
        if self.first_byte_us is None:
            self.first_byte_us = t
        self.buf += data
        try:
            self._parse(t)
        except Exception as e:  # malformed response: fail this request
            if not self.done.done():
                self.done.set_exception(e)

    def _body(self, data, t):
        if self.on_event is None:
            return
        self.sse += data
        while True:
            i = self.sse.find(b"\n\n")
            if i < 0:
                break
            ev, self.sse = self.sse[:i], self.sse[i + 2:]
            self.on_event(ev, t)

    def _finish(self):
        if not self.done.done():
            self.done.set_result(self.status)

    def _parse(self, t):
        if not self.headers_done:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head, self.buf = self.buf[:i].decode("latin-1"), self.buf[i + 4:]
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            self.headers_done = True
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                k = k.strip().lower()
                if k == "transfer-encoding" and "chunked" in v.lower():
                    self.chunked = True
                elif k == "content-length":
                    self.remaining = int(v.strip())
            if not self.chunked and self.remaining is None:
                raise ValueError("response without length")
            if not self.chunked:
                pass
            else:
                self.remaining = None
        if not self.chunked:
            take = self.buf[:self.remaining]
            self.buf = self.buf[len(take):]
            self.remaining -= len(take)
            self._body(take, t)
            if self.remaining == 0:
                self._finish()
            return
        while True:
            if self.remaining is None:  # expecting a chunk-size line
                i = self.buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(self.buf[:i].split(b";")[0], 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    # Trailer section: just the final CRLF (no trailers here).
                    if len(self.buf) < 2:
                        self.remaining = -1
                        return
                    self.buf = self.buf[2:]
                    self._finish()
                    return
                self.remaining = size
            if self.remaining == -1:
                if len(self.buf) < 2:
                    return
                self.buf = self.buf[2:]
                self._finish()
                return
            if self.remaining > 0:
                take = self.buf[:self.remaining]
                if not take:
                    return
                self.buf = self.buf[len(take):]
                self.remaining -= len(take)
                self._body(take, t)
                if self.remaining > 0:
                    return
            # chunk data complete: its CRLF
            if len(self.buf) < 2:
                return
            self.buf = self.buf[2:]
            self.remaining = None


async def connect(host, port, on_event=None):
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Response(on_event), host, port)
    return proto


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def mode_stream(a):
    delays, ttfbs, errors = [], [], 0
    extra = (f"X-Mock-Stream-Chunks: {a.chunks}\r\nX-Mock-Stream-Delay-Ms: {a.delay_ms}\r\n").encode()
    sem = asyncio.Semaphore(a.concurrency)

    async def one(n):
        nonlocal errors
        async with sem:
            local = []

            def on_event(ev, t):
                m = TS_RE.search(ev)
                if m:
                    local.append(t - int(m.group(1)))

            try:
                p = await connect(a.host, a.port, on_event)
                p.reset()
                t0 = now_us()
                p.send(request(a.host, a.port, a.path, CHAT, f"stream-{n}", extra))
                status = await asyncio.wait_for(p.done, a.timeout)
                p.transport.close()
                if status != 200 or len(local) != a.chunks:
                    errors += 1
                    return
                ttfbs.append(p.first_byte_us - t0)
                # The first event of a stream carries the upstream connect and
                # request time, which TTFB already covers; skip it so per-event
                # delay is about relaying.
                delays.extend(local[1:])
            except Exception as e:  # count and go on: the summary reports errors
                errors += 1
                if a.verbose:
                    print(f"stream {n}: {e!r}", file=sys.stderr)

    # Warm the proxy's upstream pool (first stream would pay a connect).
    await asyncio.gather(*(one(-i - 1) for i in range(min(a.concurrency, 4))))
    delays.clear(); ttfbs.clear(); errors = 0
    await asyncio.gather(*(one(i) for i in range(a.streams)))
    delays.sort(); ttfbs.sort()
    out = {
        "streams": a.streams, "errors": errors, "events": len(delays),
        "ttfb_p50_us": pct(ttfbs, 50), "ttfb_p99_us": pct(ttfbs, 99),
        "event_p50_us": pct(delays, 50), "event_p99_us": pct(delays, 99), "event_max_us": delays[-1] if delays else None,
    }
    # One line of key=value pairs: easy for run.sh to read without a JSON tool.
    print(" ".join(f"{k}={v}" for k, v in out.items()), flush=True)


async def mode_idle(a):
    protos, errors = [], 0
    sem = asyncio.Semaphore(100)

    async def one(n):
        nonlocal errors
        async with sem:
            try:
                p = await connect(a.host, a.port)
                p.send(request(a.host, a.port, a.path, SMALL, f"idle-{n}"))
                status = await asyncio.wait_for(p.done, a.timeout)
                if status != 200:
                    errors += 1
                protos.append(p)
            except Exception:
                errors += 1

    await asyncio.gather(*(one(i) for i in range(a.connections)))
    open_now = sum(1 for p in protos if not p.lost)
    print(f"READY open={open_now} errors={errors}", flush=True)
    await asyncio.sleep(a.hold)
    open_now = sum(1 for p in protos if not p.lost)
    for p in protos:
        p.transport.close()
    print(f"DONE open={open_now}", flush=True)


async def mode_slow(a):
    extra = (f"X-Mock-Stream-Chunks: {a.chunks}\r\nX-Mock-Stream-Delay-Ms: {a.delay_ms}\r\n").encode()
    started = 0
    all_started = asyncio.get_running_loop().create_future()
    ok = errors = 0

    async def one(n):
        nonlocal started, ok, errors
        first = [False]

        def on_event(ev, t):
            nonlocal started
            if not first[0]:
                first[0] = True
                started += 1
                if started == a.concurrency and not all_started.done():
                    all_started.set_result(True)

        try:
            p = await connect(a.host, a.port, on_event)
            p.send(request(a.host, a.port, a.path, CHAT, f"slow-{n}", extra))
            status = await asyncio.wait_for(p.done, a.timeout)
            p.transport.close()
            if status == 200:
                ok += 1
            else:
                errors += 1
        except Exception as e:
            errors += 1
            if a.verbose:
                print(f"slow {n}: {e!r}", file=sys.stderr)
        if not first[0]:
            started += 1  # a failed stream still counts, so READY is not held forever
            if started == a.concurrency and not all_started.done():
                all_started.set_result(True)

    tasks = [asyncio.ensure_future(one(i)) for i in range(a.concurrency)]
    await asyncio.wait_for(all_started, a.timeout)
    print(f"READY streams={a.concurrency}", flush=True)
    await asyncio.gather(*tasks)
    print(f"DONE ok={ok} errors={errors}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["stream", "idle", "slow"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--delay-ms", type=int, default=5)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    asyncio.run({"stream": mode_stream, "idle": mode_idle, "slow": mode_slow}[a.mode](a))


if __name__ == "__main__":
    main()
