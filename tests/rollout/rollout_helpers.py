"""Helpers for the rollout integration tests: a real redis-server on a free
loopback port, a tiny RESP client to look at what canaryd stored, a traffic
driver that sends chat requests from many distinct users, and config/admin
helpers. Everything else comes from tests/integration/harness.py (read-only,
shared): processes are stopped by PID, waits poll with a deadline.
"""

from __future__ import annotations

import http.client as httpclient
import sys
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import harness
from harness import LOOPBACK, chat_body, http_json, wait_until

ADMIN_TOKEN = "rollout-test-admin-token"
ADMIN_ENV = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}


# ---------------------------------------------------------------------------
# redis-server


class RedisServer:
    """redis-server on a free loopback port, no persistence. restart() brings it
    back on the same port (empty, like a Redis that lost its data)."""

    def __init__(self, port: Optional[int] = None, extra: Optional[list[str]] = None):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed")
        self.port = port or harness.free_port()
        self.extra = list(extra or [])  # more redis-server options (replication, cluster, ACL ...)
        self.tmp = tempfile.TemporaryDirectory(prefix="canaryd-redis-")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> "RedisServer":
        argv = ["redis-server", "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", self.tmp.name] + self.extra
        log = open(os.path.join(self.tmp.name, "redis.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        harness._register(self.proc)
        wait_until(lambda: self.command("PING") == "PONG", 10, 0.02, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop_process(self.proc, timeout=5)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no last write to the replicas."""
        if self.proc is not None:
            harness.stop_process(self.proc, timeout=5, sig=signal.SIGKILL)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, *args: str) -> Any:
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as sock:
            sock.sendall(_encode(args))
            return _Reader(sock).read()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.tmp.cleanup()


def _encode(args) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket):
        self.f = sock.makefile("rb")

    def read(self) -> Any:
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")


# ---------------------------------------------------------------------------
# config and admin


def end_replicas(tc, replicas) -> None:
    """tearDown of a test with canaryd replicas: each one ended (by PID) and
    its files removed; when the test failed, each one's log tail first."""
    failed = not getattr(tc._outcome, "success", True)
    for c in replicas:
        if failed:
            sys.stderr.write(c.tail() + "\n")
        c.kill()
        c.cleanup()


def rollout_config(control_url: str, canary_url: str, steps: list[dict], analysis: Optional[dict] = None,
                   fallback: Optional[dict] = None, redis: Optional[dict] = None, **rollout: Any) -> dict:
    """harness.base_config plus an admin token, access log off and a fast rollout:
    interval 1s, window 30s, min_requests 50, error rate 1%, p99 5s."""
    ana = {"interval": "1s", "window": "30s", "min_requests": 50, "max_error_rate": 0.01,
           "max_p99_latency": "5s", "relative_to_control": True}
    ana.update(analysis or {})
    sections: dict[str, Any] = {
        "server": {"admin_token_env": "CANARYD_IT_ADMIN_TOKEN", "access_log": False},
        "rollout": dict({"steps": steps, "analysis": ana, "on_failure": "rollback", "auto_promote": True}, **rollout),
        "split": {"sticky_key": ["header:X-User-ID"], "pin_ttl": "0"},
    }
    if fallback is not None:
        sections["fallback"] = fallback
    if redis is not None:
        sections["redis"] = redis
    return harness.base_config(control_url, canary_url, **sections)


def admin(c: harness.Canaryd, verb: str = "", body: Any = None) -> dict:
    path = "/admin/rollout" + (f"/{verb}" if verb else "")
    method = "POST" if verb else "GET"
    status, _, doc = http_json(method, c.url + path, body if body is not None else ({} if verb else None),
                               {"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    if status != 200:
        raise AssertionError(f"{method} {path} answered {status}: {doc!r}")
    return doc


def transitions(c: harness.Canaryd, replayed: bool = False) -> list[dict]:
    """canaryd's "rollout transition" log lines (made here, not adopted from Redis)."""
    msg = "rollout transition re-applied on the shared state" if replayed else "rollout transition"
    return [line for line in c.log_lines() if line.get("msg") == msg]


# ---------------------------------------------------------------------------
# traffic


@dataclass
class Result:
    t: float      # time.monotonic() when the answer arrived
    status: int
    arm: str      # X-Canaryd-Arm
    fallback: str  # X-Canaryd-Fallback ("" when none)


class Traffic:
    """Background clients: `threads` keep-alive connections sending chat
    completions, each request from a new user (X-User-ID), until stop().

        with Traffic(c.url) as t:
            wait_until(lambda: t.count(arm="canary") >= 50)
        t.results  # every answer, in arrival order per thread
    """

    def __init__(self, url: str, threads: int = 3, prefix: Optional[str] = None):
        self.url = url
        self.threads = threads
        self.prefix = prefix or uuid.uuid4().hex[:8]
        self.results: list[Result] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._n = 0

    def _next_user(self) -> str:
        with self._lock:
            self._n += 1
            return f"user-{self.prefix}-{self._n}"

    def _run(self) -> None:
        host, port = self.url.split("//", 1)[1].split(":")
        conn: Optional[httpclient.HTTPConnection] = None
        body = json.dumps(chat_body()).encode()
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers={"Content-Type": "application/json", "X-User-ID": self._next_user()})
                resp = conn.getresponse()
                resp.read()
                r = Result(time.monotonic(), resp.status, resp.headers.get("X-Canaryd-Arm", ""),
                           resp.headers.get("X-Canaryd-Fallback", "") or "")
                with self._lock:
                    self.results.append(r)
                if resp.headers.get("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - recorded, the test decides
                with self._lock:
                    self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def start(self) -> "Traffic":
        for _ in range(self.threads):
            th = threading.Thread(target=self._run, daemon=True)
            th.start()
            self._workers.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._workers:
            th.join(timeout=15)
        self._workers.clear()

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def count(self, arm: Optional[str] = None, since: float = 0.0) -> int:
        return sum(1 for r in self.snapshot() if r.t >= since and (arm is None or r.arm == arm))

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send(url: str, n: int, prefix: Optional[str] = None) -> list[Result]:
    """n requests in sequence on one keep-alive connection, each from a new user."""
    t = Traffic(url, threads=1, prefix=prefix)
    out = []
    host, port = url.split("//", 1)[1].split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps(chat_body()).encode()
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", body=body,
                         headers={"Content-Type": "application/json", "X-User-ID": t._next_user()})
            resp = conn.getresponse()
            resp.read()
            out.append(Result(time.monotonic(), resp.status, resp.headers.get("X-Canaryd-Arm", ""),
                              resp.headers.get("X-Canaryd-Fallback", "") or ""))
    finally:
        conn.close()
    return out
