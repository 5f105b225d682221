"""Load generator for bench/load.sh and bench/soak.sh (Python 3 stdlib, asyncio).

  loadgen.py load URL --conns 2000 --streams 500 --duration 30
  loadgen.py soak URL --conns 200 --streams 20 --duration 600 --pid PID --sample 10

`conns` keep-alive connections each send chat requests back to back;
`streams` connections each run streaming requests back to back. Prints a JSON
summary (requests, errors by kind, status counts, latency percentiles, and
for soak the RSS samples of PID every --sample seconds)."""

import argparse
import asyncio
import json
import sys
import time

BODY = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello"}]}).encode()
SBODY = json.dumps({"model": "gpt-4.1", "stream": True,
                    "messages": [{"role": "user", "content": "hello"}]}).encode()


def request_bytes(host, body, extra=b""):
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n" +
            extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        events = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            chunk = await reader.readexactly(size + 2)
            events += chunk.count(b"data:")
        return status, events
    idx = lower.find(b"content-length:")
    n = int(lower[idx + 15:lower.find(b"\r\n", idx)]) if idx >= 0 else 0
    await reader.readexactly(n)
    return status, 0


class Stats:
    def __init__(self):
        self.requests = 0
        self.streams = 0
        self.statuses = {}
        self.errors = {}
        self.lat = []
        self.connected = 0

    def err(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def worker(host, port, body, extra, deadline, stats, is_stream):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    except Exception as e:  # noqa: BLE001
        stats.err("connect:" + type(e).__name__)
        return
    stats.connected += 1
    req = request_bytes(host.encode(), body, extra)
    try:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            writer.write(req)
            await writer.drain()
            status, events = await asyncio.wait_for(read_response(reader), 60)
            stats.lat.append(time.monotonic() - t0)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if is_stream:
                stats.streams += 1
            else:
                stats.requests += 1
    except Exception as e:  # noqa: BLE001
        stats.err(type(e).__name__)
    finally:
        writer.close()


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1


async def sampler(pid, every, deadline, samples):
    t0 = time.monotonic()
    while time.monotonic() < deadline + every / 2:
        samples.append((round(time.monotonic() - t0), rss_kb(pid)))
        await asyncio.sleep(every)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("load", "soak"))
    ap.add_argument("url")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--stream-delay-ms", type=int, default=50)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--sample", type=float, default=10)
    a = ap.parse_args()
    hostport = a.url.split("://", 1)[-1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    deadline = time.monotonic() + a.duration
    stats = Stats()
    samples = []
    sextra = b"Accept: text/event-stream\r\nX-Mock-Stream-Delay-Ms: " + str(a.stream_delay_ms).encode() + b"\r\n"
    tasks = [worker(host, int(port), BODY, b"", deadline, stats, False) for _ in range(a.conns)]
    tasks += [worker(host, int(port), SBODY, sextra, deadline, stats, True) for _ in range(a.streams)]
    if a.pid:
        tasks.append(sampler(a.pid, a.sample, deadline, samples))
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    lat = sorted(stats.lat)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None
    out = {"mode": a.mode, "conns": a.conns, "streams": a.streams, "duration_s": round(wall, 1),
           "connected": stats.connected, "requests": stats.requests, "streams_done": stats.streams,
           "rps": round((stats.requests + stats.streams) / wall, 1), "statuses": stats.statuses,
           "errors": stats.errors, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}
    if samples:
        out["rss_kb"] = samples
    print(json.dumps(out))
    return 0 if not stats.errors and set(stats.statuses) <= {200} else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
