"""Errors canaryd makes itself: upstream timeout (504) and refusal (502),
request limits (413, 431, header timeout), bad requests (400, 404, 405) and
client keys (401). Each must have the OpenAI error shape."""

import json
import socket
import time
import unittest

import harness
from harness import (Canaryd, Mock, assert_openai_error, base_config, chat_body, free_port, http, raw_exchange)

CONTROL_KEY = harness.DEFAULT_ENV["CANARYD_IT_CONTROL_KEY"]


class UpstreamFailureTest(unittest.TestCase):
    """control: a mock with a 1 s timeout; canary: a port nothing listens on.
    Fallback is off so each failure shows as itself."""

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control-mock"))
        cls.dead_port = free_port()
        cls.cd = cls.enterClassContext(Canaryd(base_config(
            cls.control.base_url, f"http://127.0.0.1:{cls.dead_port}/v1",
            upstreams={"ctl": {"timeout": "1s"}},
            fallback={"enabled": False})))
        cls.chat_url = cls.cd.url + "/v1/chat/completions"

    def test_504_when_upstream_hangs(self):
        t0 = time.monotonic()
        status, headers, body = http("POST", self.chat_url, chat_body(), {"X-Mock-Hang": "1"}, timeout=10)
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 504, body)
        assert_openai_error(body, "504")
        self.assertGreaterEqual(elapsed, 0.9, "answered before the 1 s timeout")
        self.assertLess(elapsed, 3.0, "the 1 s upstream timeout took too long")
        self.assertEqual(headers.get("X-Canaryd-Arm"), "control")
        self.assertTrue(headers.get("X-Request-ID"))
        # the hung connection is not reused: the next call works
        status, _, body = http("POST", self.chat_url, chat_body())
        self.assertEqual(status, 200, body)

    def test_504_when_stream_first_byte_never_comes(self):
        t0 = time.monotonic()
        status, _, body = http("POST", self.chat_url, chat_body(stream=True), {"X-Mock-Hang": "1"}, timeout=10)
        self.assertEqual(status, 504, body)
        assert_openai_error(body, "504 stream")
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_504_when_upstream_slower_than_timeout(self):
        status, _, body = http("POST", self.chat_url, chat_body(), {"X-Mock-Latency-Ms": "2500"}, timeout=10)
        self.assertEqual(status, 504, body)
        assert_openai_error(body, "504 slow")

    def test_502_when_upstream_refuses(self):
        t0 = time.monotonic()
        status, headers, body = http("POST", self.chat_url, chat_body(), {"X-Canary": "canary"}, timeout=10)
        self.assertEqual(status, 502, body)
        assert_openai_error(body, "502")
        self.assertLess(time.monotonic() - t0, 2.0, "a refused connection must fail fast")
        self.assertEqual(headers.get("X-Canaryd-Arm"), "canary")
        self.assertEqual(headers.get("X-Canaryd-Provider"), "cny")
        self.assertIsNone(headers.get("X-Canaryd-Fallback"))


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control-mock"))
        cls.cd = cls.enterClassContext(Canaryd(base_config(
            cls.control.base_url,
            server={"max_body_bytes": 1024, "max_header_bytes": 8192, "header_timeout": "1s"})))
        cls.chat_url = cls.cd.url + "/v1/chat/completions"

    def requests_seen(self):
        return self.control.stats()["requests"]

    def test_413_on_declared_length_before_the_body_is_sent(self):
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000000\r\n\r\n")
        # only the head is sent: canaryd must answer without waiting for the body
        status, _, body = raw_exchange(self.cd.port, head, timeout=5, method="POST")
        self.assertEqual(status, 413, body)
        assert_openai_error(body, "413")

    def test_413_on_body_sent(self):
        before = self.requests_seen()
        big = chat_body(content="x" * 4000)
        status, _, body = http("POST", self.chat_url, big)
        self.assertEqual(status, 413, body)
        assert_openai_error(body, "413")
        self.assertEqual(self.requests_seen(), before)

    def test_413_on_chunked_body(self):
        payload = json.dumps(chat_body(content="y" * 4000)).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 500]), payload[i:i + 500])
                          for i in range(0, len(payload), 500)) + b"0\r\n\r\n"
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        status, _, body = raw_exchange(self.cd.port, req, timeout=5, method="POST")
        self.assertEqual(status, 413, body)

    def test_body_under_limit_passes(self):
        status, _, body = http("POST", self.chat_url, chat_body(content="z" * 200))
        self.assertEqual(status, 200, body)

    def test_431_on_huge_header(self):
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
               b"\r\nContent-Length: 2\r\n\r\n{}")
        status, _, body = raw_exchange(self.cd.port, req, timeout=5, method="POST")
        self.assertEqual(status, 431, body)
        assert_openai_error(body, "431")

    def test_400_bad_requests(self):
        before = self.requests_seen()
        cases = {
            "bad JSON": b'{"model": "gpt-4.1", "messages": [',
            "not an object": b'[1, 2]',
            "missing model": json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
            "missing messages": json.dumps({"model": "gpt-4.1"}).encode(),
        }
        for name, payload in cases.items():
            with self.subTest(case=name):
                status, headers, body = http("POST", self.chat_url, payload, {"Content-Type": "application/json"})
                self.assertEqual(status, 400, body)
                assert_openai_error(body, name)
                self.assertTrue(headers.get("X-Request-ID"))
        self.assertEqual(self.requests_seen(), before, "canaryd forwarded a request it should have refused")

    def test_405_wrong_method_on_api_route(self):
        status, _, body = http("GET", self.chat_url)
        self.assertEqual(status, 405, body)
        assert_openai_error(body, "405")

    def test_405_wrong_method_on_own_route(self):
        status, _, body = http("POST", self.cd.url + "/health", b"{}")
        self.assertEqual(status, 405, body)
        assert_openai_error(body, "405 /health")

    def test_404_unknown_route(self):
        for path in ("/nope", "/v2/chat/completions", "/"):
            with self.subTest(path=path):
                status, _, body = http("GET", self.cd.url + path)
                self.assertEqual(status, 404, body)
                assert_openai_error(body, "404")

    def test_slow_header_client_is_cut_off(self):
        with socket.create_connection(("127.0.0.1", self.cd.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Partial: ")
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("canaryd kept a stalled client connected for 10 s (header_timeout 1s)")
            elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 2.0 + 0.5, f"disconnected after {elapsed:.2f}s, header_timeout is 1s")
        self.assertGreaterEqual(elapsed, 0.8, f"disconnected after {elapsed:.2f}s, before header_timeout")
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 4"), data[:100])

    def test_still_serving_after_errors(self):
        status, _, body = http("POST", self.chat_url, chat_body())
        self.assertEqual(status, 200, body)


class ClientKeysTest(unittest.TestCase):
    KEYS = "ck-alpha-1111,ck-beta-2222"

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control-mock", require_key=CONTROL_KEY))
        cls.cd = cls.enterClassContext(Canaryd(
            base_config(cls.control.base_url, server={"client_keys_env": "CANARYD_IT_CLIENT_KEYS"}),
            env={"CANARYD_IT_CLIENT_KEYS": cls.KEYS}))
        cls.chat_url = cls.cd.url + "/v1/chat/completions"

    def test_missing_key_401(self):
        before = self.control.stats()["requests"]
        status, _, body = http("POST", self.chat_url, chat_body())
        self.assertEqual(status, 401, body)
        assert_openai_error(body, "401 missing")
        self.assertEqual(self.control.stats()["requests"], before)

    def test_wrong_key_401(self):
        for auth in ("Bearer ck-alpha-1112", "Bearer ck-alpha-111", "Basic ck-alpha-1111", "ck-alpha-1111",
                     "Bearer ck-alpha-1111,ck-beta-2222", "Bearer "):
            with self.subTest(auth=auth):
                status, _, body = http("POST", self.chat_url, chat_body(), {"Authorization": auth})
                self.assertEqual(status, 401, body)
                assert_openai_error(body, "401 wrong")

    def test_rejected_requests_are_access_logged(self):
        # SPEC section 6: one JSON line per request, refused ones included.
        _, headers, _ = http("POST", self.chat_url, chat_body(), {"Authorization": "Bearer ck-nope-0000"})
        rid = headers.get("X-Request-ID")
        self.assertTrue(rid)
        line = self.cd.wait_log(lambda l: l.get("request_id") == rid, timeout=5,
                                message="an access log line for the 401")
        self.assertEqual(line.get("status"), 401, line)

    def test_other_v1_routes_need_a_key_too(self):
        status, _, body = http("GET", self.cd.url + "/v1/models")
        self.assertEqual(status, 401, body)

    def test_right_key_200_and_not_forwarded(self):
        for key in self.KEYS.split(","):
            with self.subTest(key=key):
                status, headers, body = http("POST", self.chat_url, chat_body(), {"Authorization": f"Bearer {key}"})
                self.assertEqual(status, 200, body)
                seen = self.control.stats()["last_headers"]
                self.assertEqual(seen.get("authorization"), f"Bearer {CONTROL_KEY}")
                self.assertFalse([k for k, v in seen.items() if key in v], f"client key forwarded: {seen}")

    def test_keys_never_logged(self):
        http("POST", self.chat_url, chat_body(), {"Authorization": "Bearer ck-wrong-9999"})
        _, headers, _ = http("POST", self.chat_url, chat_body(), {"Authorization": "Bearer ck-beta-2222"})
        rid = headers.get("X-Request-ID")
        # access lines are flushed about once a second
        self.cd.wait_log(lambda l: l.get("request_id") == rid, timeout=5, message="the access line of the 200")
        logs = self.cd.logs() + self.cd.stderr()
        for secret in ("ck-alpha-1111", "ck-beta-2222", "ck-wrong-9999", CONTROL_KEY):
            self.assertNotIn(secret, logs)


if __name__ == "__main__":
    unittest.main()
