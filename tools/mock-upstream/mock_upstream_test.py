#!/usr/bin/env python3
"""Smoke test of mock-upstream: starts the binary on port 0, exercises the
endpoints, the per-request behaviour headers and the stats, then SIGTERMs it.
Usage: mock_upstream_test.py /path/to/mock-upstream"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="mock-upstream-test-")
port_file = os.path.join(tmp, "port")
proc = subprocess.Popen([BIN, "--port", "0", "--port-file", port_file, "--threads", "3", "--name", "t",
                         "--error-seed", "7"], stdout=subprocess.PIPE)
try:
    line = proc.stdout.readline().decode()
    assert line.startswith("mock-upstream listening on 127.0.0.1:"), line
    port = int(open(port_file).read())
    assert line.strip().endswith(":%d" % port), line

    def call(method, path, body=None, headers=None, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        return r, r.read()

    def stats():
        return json.loads(call("GET", "/mock/stats")[1])

    chat = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})

    # Plain chat completion, model echoed, mock_name in body and header.
    r, b = call("POST", "/v1/chat/completions", chat)
    d = json.loads(b)
    assert r.status == 200 and d["object"] == "chat.completion" and d["model"] == "gpt-4.1", d
    assert d["choices"][0]["finish_reason"] == "stop" and d["usage"]["total_tokens"] == 30, d
    assert d["mock_name"] == "t" and r.getheader("X-Mock-Name") == "t"

    # Tool call.
    tools = json.dumps({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f1"}}]})
    d = json.loads(call("POST", "/prefix/v1/chat/completions", tools)[1])
    tc = d["choices"][0]["message"]["tool_calls"][0]
    assert tc["function"]["name"] == "f1" and json.loads(tc["function"]["arguments"]) == {}
    assert d["choices"][0]["finish_reason"] == "tool_calls"

    # Stream with usage: N chunks + usage + [DONE], each event its own HTTP chunk.
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True}}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Mock-Stream-Chunks: 3\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    s.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head and b"chunked" in head.lower(), head
    events = [e for e in rest.decode().split("\r\n") if e.startswith("data: ")]
    assert len(events) == 5, events
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all("mock_ts_us" in p for p in payloads)
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["prompt_tokens"] == 10
    assert events[-1].strip() == "data: [DONE]"
    assert rest.endswith(b"0\r\n\r\n")

    # Other endpoints.
    d = json.loads(call("POST", "/v1/embeddings", json.dumps({"model": "e", "input": ["a", "b", "c"]}))[1])
    assert len(d["data"]) == 3 and len(d["data"][2]["embedding"]) == 8
    d = json.loads(call("POST", "/v1/embeddings", json.dumps({"model": "e", "input": "a", "encoding_format": "base64"}))[1])
    assert isinstance(d["data"][0]["embedding"], str)
    d = json.loads(call("POST", "/v1/completions", json.dumps({"model": "c", "prompt": "x"}))[1])
    assert d["object"] == "text_completion"
    d = json.loads(call("POST", "/v1/responses", json.dumps({"model": "r", "input": "x"}))[1])
    assert d["object"] == "response" and d["usage"]["output_tokens"] == 20 and d["output_text"]
    d = json.loads(call("GET", "/v1/models")[1])
    assert d["object"] == "list" and d["data"]

    # Errors.
    r, b = call("POST", "/v1/chat/completions", "{bad")
    assert r.status == 400 and json.loads(b)["error"]["code"] == "invalid_json"
    r, b = call("POST", "/v1/chat/completions", chat, {"X-Mock-Status": "429"})
    e = json.loads(b)["error"]
    assert r.status == 429 and e["message"] == "Rate limit reached" and e["param"] is None
    r, b = call("POST", "/v1/chat/completions", chat, {"X-Mock-Error-Rate": "1", "X-Mock-Error-Status": "503"})
    assert r.status == 503 and json.loads(b)["error"]["code"] == "mock_error"
    r, b = call("POST", "/v1/chat/completions", chat, {"X-Mock-Malformed": "1"})
    assert r.status == 200
    try:
        json.loads(b)
        raise AssertionError("malformed body parsed")
    except json.JSONDecodeError:
        pass
    r, _ = call("GET", "/nope")
    assert r.status == 404

    # Reset before any byte.
    try:
        call("POST", "/v1/chat/completions", chat, {"X-Mock-Reset": "before"})
        raise AssertionError("expected a reset")
    except (ConnectionResetError, http.client.RemoteDisconnected):
        pass

    # Latency.
    t0 = time.monotonic()
    call("POST", "/v1/chat/completions", chat, {"X-Mock-Latency-Ms": "200"})
    assert time.monotonic() - t0 >= 0.2

    # Deterministic error sequence after reset.
    def sequence():
        call("POST", "/mock/reset")
        return [call("GET", "/v1/models", None, {"X-Mock-Error-Rate": "0.5"})[0].status for _ in range(12)]
    a, b2 = sequence(), sequence()
    assert a == b2 and 500 in a and 200 in a, (a, b2)

    # Pool reuse: a connection opened before a reset counts once after it.
    pooled = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    call("POST", "/v1/chat/completions", chat, None, pooled)
    call("POST", "/mock/reset")
    for i in range(3):
        call("POST", "/v1/chat/completions", chat, {"X-Request-ID": "r%d" % i, "Authorization": "Bearer k"}, pooled)
    st = stats()
    assert st["connections_accepted"] == 1 and st["requests"] == 3, st
    assert st["active_connections"] >= 1
    assert st["last_headers"]["x-request-id"] == "r2" and st["last_headers"]["authorization"] == "Bearer k", st
    assert json.loads(st["last_body"])["model"] == "gpt-4.1"
    assert st["requests_by_path"] == {"/v1/chat/completions": 3}, st

    # Faults under concurrency must not take the server down.
    def worker():
        for i in range(40):
            hdr = {}
            if i % 7 == 0:
                hdr["X-Mock-Reset"] = "mid-stream"
            if i % 11 == 0:
                hdr["X-Mock-Truncate"] = "1"
            if i % 5 == 0:
                hdr["X-Mock-Reset"] = "before"
            try:
                call("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": i % 2 == 0}), hdr)
            except Exception:
                pass
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A client that leaves a hanging request, and one that leaves mid-stream.
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Mock-Hang: 1\r\n\r\n")
    time.sleep(0.1)
    s.close()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Mock-Stream-Delay-Ms: 50\r\n"
              b"Content-Length: 27\r\n\r\n{\"model\":\"m\",\"stream\":true}")
    s.recv(100)
    s.close()
    assert stats()["requests"] > 3

    proc.terminate()
    assert proc.wait(timeout=10) == 0
    print("mock-upstream smoke test: OK")
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
