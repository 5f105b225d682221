"""Request hygiene (issue 19): what a client sends must not reach the upstream
in a form that escapes base_url's prefix, and nothing after the head (chunked
trailers) may change how a request is routed or what is forwarded.

- targets: dot-segments (raw and %-encoded), encoded '/', '\\', NUL are a 400
  in OpenAI's shape and never forwarded; a target that stays inside /v1/ is
  forwarded in its normalised form, the query as sent;
- trailers: dropped, never merged into the request (X-Canary, X-Request-ID,
  X-User-ID, X-Forwarded-For, any field), and bounded (431 past the header limit);
- a chunked body over server.max_body_bytes gets its 413 before the close."""

import json
import socket
import unittest

import harness
from harness import Canaryd, LOOPBACK, chat_body
from fault_helpers import CHAT, body_of, raw_request, status_of
from hostile_upstream import HostileUpstream

BODY = json.dumps(chat_body()).encode()


def request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """One raw request on a new connection (Connection: close in `data`); everything until the close."""
    return raw_request(port, data, timeout)[0]


def post(target: str, extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (b"POST " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get(target: str) -> bytes:
    return b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def chunked_post(target: str, body: bytes, trailers: bytes, extra: bytes = b"") -> bytes:
    half = len(body) // 2
    return (b"POST " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n" +
            b"%x\r\n" % half + body[:half] + b"\r\n" + b"%x\r\n" % (len(body) - half) + body[half:] + b"\r\n" +
            b"0\r\n" + trailers + b"\r\n")


def header(raw: bytes, name: str) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return ""


class TargetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = cls.enterClassContext(HostileUpstream())
        cfg = harness.base_config(cls.up.base_url, fallback={"enabled": False})
        cls.cd = cls.enterClassContext(Canaryd(cfg))

    def forwarded_paths(self, since: int) -> list:
        return [path for _, path, _ in self.up.requests[since:]]

    def test_targets_that_leave_v1_are_refused_and_never_forwarded(self):
        for target in ("/v1/../../internal/admin", "/v1/..", "/v1/%2e%2e/mock/stats", "/v1/%2E%2E/%2e%2e/x",
                       "/v1/.%2e/x", "/v1/x/../../y", "/v1//../x"):
            with self.subTest(target=target):
                before = len(self.up.requests)
                for data in (get(target), post(target)):
                    raw = request(self.cd.port, data)
                    self.assertEqual(status_of(raw), 400, raw[:300])
                    err = harness.assert_openai_error(body_of(raw), target)
                    self.assertIn("leaves /v1/", err["message"])
                self.assertEqual(self.forwarded_paths(before), [], "a refused target reached the upstream")

    def test_unsafe_encodings_are_refused(self):
        for target, why in (("/v1/chat%2Fcompletions", "%2F"), ("/v1/chat%2fcompletions", "%2F"),
                            ("/v1/a%5Cb", "%5C"), ("/v1/a\\b", "'\\'"), ("/v1/a%00b", "NUL"),
                            ("/v1/models%zz", "malformed"), ("/v1/models%4", "malformed")):
            with self.subTest(target=target):
                before = len(self.up.requests)
                raw = request(self.cd.port, get(target))
                self.assertEqual(status_of(raw), 400, raw[:300])
                self.assertIn(why, harness.assert_openai_error(body_of(raw), target)["message"])
                self.assertEqual(self.forwarded_paths(before), [])

    def test_the_upstream_gets_the_normalised_path(self):
        for target, forwarded in (("/v1/x/../models", "/v1/models"), ("/v1//models", "/v1/models"),
                                  ("/v1/./models", "/v1/models"), ("/v1/%6Dodels", "/v1/models"),
                                  ("/v1/files/a%3ab", "/v1/files/a%3Ab"),
                                  ("/v1/models?after=/../x&y=%2F", "/v1/models?after=/../x&y=%2F")):
            with self.subTest(target=target):
                before = len(self.up.requests)
                raw = request(self.cd.port, get(target))
                self.assertEqual(status_of(raw), 200, raw[:300])
                self.assertEqual(self.forwarded_paths(before), [forwarded])

    def test_a_split_route_reached_through_dot_segments_is_split(self):
        before = len(self.up.requests)
        raw = request(self.cd.port, post("/v1/embeddings/../chat/./completions"))
        self.assertEqual(status_of(raw), 200, raw[:300])
        self.assertEqual(header(raw, "X-Canaryd-Arm"), "control")
        self.assertEqual(self.forwarded_paths(before), ["/v1/chat/completions"])


class TrailerTest(unittest.TestCase):
    """Both arms are HostileUpstreams, so what each received is visible. Weight 50 with a salt:
    the arm of a user is the documented hash; a trailer must not change it."""

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(HostileUpstream())
        cls.canary = cls.enterClassContext(HostileUpstream())
        cfg = harness.base_config(cls.control.base_url, cls.canary.base_url, fallback={"enabled": False},
                                  rollout={"steps": [{"weight": 50}],
                                           "analysis": {"min_requests": 1000000}},
                                  split={"sticky_key": ["header:X-User-ID", "client_ip"], "pin_ttl": "0s"},
                                  server={"max_header_bytes": 8192})
        cls.cd = cls.enterClassContext(Canaryd(cfg))

    def received(self):
        return self.control.requests + self.canary.requests

    def test_trailers_change_nothing(self):
        trailers = (b"X-Canary: canary\r\nX-Request-ID: trailer-id\r\nX-User-ID: trailer-user\r\n"
                    b"X-Forwarded-For: 203.0.113.9\r\nX-Evil: 1\r\nX-Folded: a\r\n b\r\n")
        for n in range(20):
            with self.subTest(n=n):
                before_control, before_canary = len(self.control.requests), len(self.canary.requests)
                raw = request(self.cd.port, chunked_post(CHAT, BODY, trailers,
                                                         extra=b"X-Request-ID: head-id-%d\r\n" % n))
                self.assertEqual(status_of(raw), 200, raw[:300])
                # The override in the trailer did not force the canary: the arm is the client_ip hash
                # (no X-User-ID in the head), the same for every request from 127.0.0.1.
                arm = header(raw, "X-Canaryd-Arm")
                self.assertEqual(header(raw, "X-Request-ID"), "head-id-%d" % n)
                got = self.control.requests[before_control:] + self.canary.requests[before_canary:]
                self.assertEqual(len(got), 1)
                _, _, headers = got[0]
                for name in ("x-evil", "x-folded", "x-canary", "x-user-id"):
                    self.assertNotIn(name, headers, f"trailer field {name} was forwarded")
                self.assertEqual(headers.get("x-request-id"), "head-id-%d" % n)
                self.assertEqual(headers.get("x-forwarded-for"), "127.0.0.1")
                self.assertEqual(arm, "canary" if len(self.canary.requests) > before_canary else "control")
        def access_lines():
            lines = [line for line in self.cd.log_lines()
                     if line.get("path") == CHAT and str(line.get("request_id", "")).startswith("head-id-")]
            return lines if len(lines) >= 20 else None
        arms = set()
        for line in harness.wait_until(access_lines, timeout=10, message="the 20 access lines"):
            self.assertEqual(line.get("sticky_source"), "client_ip", line)
            arms.add(line.get("arm"))
        self.assertEqual(len(arms), 1, "one client address, one arm, whatever the trailers say")

    def test_trailers_past_the_header_limit_are_431(self):
        huge = b"".join(b"X-T-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))  # ~22 KB > 8 KiB
        before = len(self.received())
        raw = request(self.cd.port, chunked_post(CHAT, BODY, huge))
        self.assertEqual(status_of(raw), 431, raw[:300])
        harness.assert_openai_error(body_of(raw))
        self.assertEqual(len(self.received()), before)
        # A trailer section that never ends is cut at the same bound, not buffered without limit.
        with socket.create_connection((LOOPBACK, self.cd.port), timeout=10) as s:
            s.sendall(chunked_post(CHAT, BODY, b"")[:-2])  # everything but the final CRLF
            sent = 0
            status = b""
            try:
                while sent < 10 * 1024 * 1024:
                    s.sendall(b"X-Pad: " + b"p" * 1000 + b"\r\n")
                    sent += 1009
            except (BrokenPipeError, ConnectionResetError):
                pass
            s.settimeout(5)
            try:
                status = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                pass
            self.assertLess(sent, 10 * 1024 * 1024, "canaryd kept reading trailers without a bound")
            if status:
                self.assertEqual(status_of(status), 431, status[:200])


class ChunkedBodyLimitTest(unittest.TestCase):
    def test_a_chunked_body_over_the_limit_gets_413_before_the_close(self):
        with HostileUpstream() as up, Canaryd(harness.base_config(up.base_url,
                                                                  server={"max_body_bytes": 1000})) as cd:
            for size in (1001, 5000, 200_000):
                with self.subTest(size=size):
                    body = b'{"model":"gpt-4.1","messages":[],"pad":"' + b"x" * size + b'"}'
                    raw = request(cd.port, chunked_post(CHAT, body, b""))
                    self.assertEqual(status_of(raw), 413, raw[:300])
                    err = harness.assert_openai_error(body_of(raw))
                    self.assertIn("1000", err["message"])
            self.assertEqual(up.requests, [])
            # Just under the limit still goes through.
            body = b'{"model":"gpt-4.1","messages":[]}'
            raw = request(cd.port, chunked_post(CHAT, body, b""))
            self.assertEqual(status_of(raw), 200, raw[:300])


if __name__ == "__main__":
    unittest.main()
