"""Shared helpers for the fault-injection suite (on top of tests/integration/harness.py)."""

from __future__ import annotations

import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import harness  # noqa: E402
from harness import LOOPBACK, http, metric_samples  # noqa: E402,F401

CHAT = "/v1/chat/completions"


def requests_total(cd) -> float:
    """Sum of ai_proxy_requests_total over every label set (one per upstream attempt)."""
    status, _, body = http("GET", cd.url + "/metrics", timeout=5)
    assert status == 200, body[:200]
    return sum(v for _, v in metric_samples(body.decode(), "ai_proxy_requests_total"))


def no_fallback_config(control_url: str, **sections):
    """Fallback off so upstream attempts == requests sent; short upstream timeout."""
    cfg = harness.base_config(control_url, fallback={"enabled": False})
    cfg["upstreams"]["ctl"]["timeout"] = "2s"
    return harness.deep_merge(cfg, sections)


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Sends raw bytes, reads until the server closes -> (everything read, closed_by_server)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True


def status_of(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else -1


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


def still_serving(tc, cd) -> None:
    """canaryd answers /ready 200 and one good request."""
    status, _, body = http("GET", cd.url + "/ready", timeout=5)
    tc.assertEqual(status, 200, body)
    status, _, body = http("POST", cd.url + CHAT, harness.chat_body(), timeout=10)
    tc.assertEqual(status, 200, body)
