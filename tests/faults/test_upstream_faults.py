"""Upstream and client faults: 5xx bursts, hangs, resets, malformed and
truncated bodies, unreachable and unresolvable upstreams, clients that go away
at every phase, and Redis dying under load. For each: one well-formed answer
per request (or a clean stream end), one ai_proxy_requests_total increment per
upstream attempt, no upstream connection left behind, and canaryd still serves."""

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Canaryd, LOOPBACK, Mock, chat_body, http, stream, wait_until
from fault_helpers import CHAT, no_fallback_config, requests_total, still_serving


def check_error(tc, status, body, expect):
    tc.assertIn(status, expect, body[:300])
    harness.assert_openai_error(body, f"status {status}")


class MockFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = cls.enterClassContext(Mock("faulty"))
        cls.cd = cls.enterClassContext(Canaryd(no_fallback_config(cls.mock.base_url)))
        # warm the pool: the level active_connections returns to
        http("POST", cls.cd.url + CHAT, chat_body())

    def pool_level_ok(self, level):
        wait_until(lambda: self.mock.stats()["active_connections"] <= level, timeout=5,
                   message=f"mock active_connections back to <= {level}")

    def parallel(self, n, fn):
        out = [None] * n

        def run(i):
            try:
                out[i] = fn(i)
            except Exception as e:  # noqa: BLE001 - recorded and asserted below
                out[i] = e
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return out

    def test_5xx_burst(self):
        before = requests_total(self.cd)
        results = self.parallel(20, lambda i: http("POST", self.cd.url + CHAT, chat_body(),
                                                     {"X-Mock-Status": str((500, 502, 503, 504)[i % 4])}))
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
            check_error(self, r[0], r[2], (500, 502, 503, 504))
        self.assertEqual(requests_total(self.cd) - before, 20)
        still_serving(self, self.cd)

    def test_hangs_time_out_and_free_the_connection(self):
        level = self.mock.stats()["active_connections"]
        before = requests_total(self.cd)
        results = self.parallel(4, lambda i: http("POST", self.cd.url + CHAT, chat_body(), {"X-Mock-Hang": "1"},
                                                  timeout=15))
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
            check_error(self, r[0], r[2], (504,))
        self.assertEqual(requests_total(self.cd) - before, 4)
        self.pool_level_ok(level)
        still_serving(self, self.cd)

    def test_resets_and_bad_bodies(self):
        before = requests_total(self.cd)
        cases = [({"X-Mock-Reset": "before"}, (502,)), ({"X-Mock-Reset": "mid-stream"}, (502,)),
                 ({"X-Mock-Truncate": "1"}, (502,)), ({"X-Mock-Malformed": "1"}, (200, 502))]
        for headers, expect in cases:
            with self.subTest(headers=headers):
                status, _, body = http("POST", self.cd.url + CHAT, chat_body(), headers)
                self.assertIn(status, expect, body[:300])
                if status != 200:
                    harness.assert_openai_error(body)
        self.assertEqual(requests_total(self.cd) - before, len(cases))
        still_serving(self, self.cd)

    def raw_stream(self, headers):
        """A streaming request on a raw socket -> (bytes, how it ended: 'close' or 'timeout')."""
        data = json.dumps(chat_body(stream=True)).encode()
        extra = b"".join(k.encode() + b": " + v.encode() + b"\r\n" for k, v in headers.items())
        with socket.create_connection((LOOPBACK, self.cd.port), timeout=8) as s:
            s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Connection: close\r\n" + extra + b"Content-Length: " + str(len(data)).encode() +
                      b"\r\n\r\n" + data)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out, "close"
                    out += chunk
            except socket.timeout:
                return out, "timeout"
            except ConnectionResetError:
                return out, "close"

    def test_stream_faults_end_cleanly(self):
        before = requests_total(self.cd)
        ok, how = self.raw_stream({})
        self.assertTrue(ok.startswith(b"HTTP/1.1 200"), ok[:200])
        self.assertIn(b"[DONE]", ok)
        self.assertTrue(ok.endswith(b"0\r\n\r\n"), "a good stream ends with the last chunk")
        for headers in ({"X-Mock-Reset": "mid-stream"}, {"X-Mock-Truncate": "1"}):
            with self.subTest(headers=headers):
                raw, how = self.raw_stream(headers)
                # The first event was relayed; the cut is passed on as a close without the
                # final chunk, so the client cannot mistake the stream for a complete one.
                self.assertEqual(how, "close", "the stream must end, not hang")
                self.assertTrue(raw.startswith(b"HTTP/1.1 200"), raw[:200])
                self.assertNotIn(b"[DONE]", raw)
                self.assertFalse(raw.endswith(b"0\r\n\r\n"), "a cut stream must not end like a complete one")
        raw, how = self.raw_stream({"X-Mock-Malformed": "1"})
        self.assertEqual(how, "close")
        self.assertTrue(raw.startswith(b"HTTP/1.1 200"), raw[:200])
        raw, how = self.raw_stream({"X-Mock-Reset": "before"})
        self.assertTrue(raw.startswith(b"HTTP/1.1 502"), raw[:300])
        self.assertEqual(requests_total(self.cd) - before, 5)
        still_serving(self, self.cd)

    def test_client_gone_mid_body_is_never_forwarded(self):
        self.mock.reset()
        before = requests_total(self.cd)
        with socket.create_connection((LOOPBACK, self.cd.port), timeout=5) as s:
            s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"model\":\"gpt-4.1\",")
        time.sleep(0.3)  # let canaryd see the close (nothing to poll on: the point is that nothing happens)
        self.assertEqual(self.mock.stats()["requests"], 0)
        self.assertEqual(requests_total(self.cd) - before, 0)
        still_serving(self, self.cd)

    def test_client_gone_while_waiting_frees_the_upstream(self):
        self.mock.reset()
        with socket.create_connection((LOOPBACK, self.cd.port), timeout=5) as s:
            data = json.dumps(chat_body()).encode()
            s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"X-Mock-Hang: 1\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
            wait_until(lambda: self.mock.stats()["requests"] >= 1, timeout=5,
                       message="the hanging upstream call to start")
            during = self.mock.stats()["active_connections"]
        # The upstream timeout is 2s: the hanging connection must go before it, when the client goes.
        t0 = time.monotonic()
        wait_until(lambda: self.mock.stats()["active_connections"] < during, timeout=5,
                   message="the upstream connection of a departed client to close")
        self.assertLess(time.monotonic() - t0, 1.8, "upstream call outlived its client until the timeout")
        still_serving(self, self.cd)

    def test_client_gone_mid_stream_frees_the_upstream(self):
        level = self.mock.stats()["active_connections"]
        before = requests_total(self.cd)
        r = stream(self.cd.url + CHAT, chat_body(stream=True),
                   {"X-Mock-Stream-Chunks": "50", "X-Mock-Stream-Delay-Ms": "100"}, stop_after=2)
        self.assertEqual(r.status, 200)
        t0 = time.monotonic()
        self.pool_level_ok(level)
        self.assertLess(time.monotonic() - t0, 4.0, "the upstream stream ran on after its client left")
        wait_until(lambda: requests_total(self.cd) - before == 1, timeout=5, message="one attempt counted")
        still_serving(self, self.cd)


class UnreachableTest(unittest.TestCase):
    def check_502(self, base_url):
        with Canaryd(no_fallback_config(base_url)) as cd:
            before = requests_total(cd)
            for _ in range(3):
                status, _, body = http("POST", cd.url + CHAT, chat_body(), timeout=15)
                check_error(self, status, body, (502, 503, 504))
            self.assertEqual(requests_total(cd) - before, 3)
            s, _, _ = http("GET", cd.url + "/ready")
            self.assertEqual(s, 200)

    def test_connection_refused(self):
        self.check_502(f"http://{LOOPBACK}:{harness.free_port()}/v1")

    def test_dns_failure(self):
        self.check_502("http://nonexistent.invalid/v1")


class RedisDiesTest(unittest.TestCase):
    def start_redis(self, port):
        # scripts/install-deps.sh installs it: missing is a failure, not a skip.
        if not shutil.which("redis-server"):
            self.fail("redis-server is not installed (scripts/install-deps.sh installs it: apt-get install redis-server)")
        tmp = tempfile.mkdtemp(prefix="faults-redis-")
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
                                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        harness._register(proc)

        def ping():
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        wait_until(ping, timeout=10, message="redis-server to answer")
        return proc

    def test_redis_killed_and_restarted_under_load(self):
        port = harness.free_port()
        redis = self.start_redis(port)
        with Mock("redis-load") as mock:
            cfg = no_fallback_config(mock.base_url, redis={"url": f"redis://{LOOPBACK}:{port}/0"},
                                     split={"pin_ttl": "1h"})
            with Canaryd(cfg) as cd:
                before = requests_total(cd)
                stop = threading.Event()
                results = []
                lock = threading.Lock()

                def load(worker):
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            r = http("POST", cd.url + CHAT, chat_body(), {"X-User-ID": f"u{worker}-{i}"}, timeout=10)
                            res = r[0]
                        except Exception as e:  # noqa: BLE001
                            res = repr(e)
                        with lock:
                            results.append(res)

                threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
                for t in threads:
                    t.start()
                time.sleep(0.5)
                harness.stop_process(redis, sig=9)
                time.sleep(1.0)
                redis = self.start_redis(port)
                time.sleep(1.0)
                stop.set()
                for t in threads:
                    t.join(15)
                harness.stop_process(redis)
                self.assertTrue(results)
                bad = [r for r in results if r != 200]
                self.assertEqual(bad, [], f"{len(bad)} of {len(results)} requests failed while Redis was down")
                self.assertEqual(requests_total(cd) - before, len(results))
                still_serving(self, cd)


if __name__ == "__main__":
    unittest.main()
