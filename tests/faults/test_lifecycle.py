"""Lifecycle under load: SIGTERM's staged drain (readiness fails while
requests are still served, in-flight streams finish within shutdown_grace, are
cut after it with a log line) and SIGHUP reload (new config applied, in-flight
requests finish on the old one, a bad file is rejected naming the key)."""

import http.client as http_client
import json
import select
import signal
import socket
import threading
import time
import unittest

from harness import Canaryd, Mock, base_config, chat_body, http, http_json, stream, wait_until
from fault_helpers import CHAT, no_fallback_config


class DrainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = cls.enterClassContext(Mock("drain-mock"))

    def start_stream(self, cd, chunks, delay_ms):
        out = {}

        def run():
            try:
                out["r"] = stream(cd.url + CHAT, chat_body(stream=True),
                                  {"X-Mock-Stream-Chunks": str(chunks), "X-Mock-Stream-Delay-Ms": str(delay_ms)},
                                  timeout=30)
            except http_client.IncompleteRead as e:
                out["cut"] = e  # the connection closed without the final chunk
        t = threading.Thread(target=run)
        t.start()
        return t, out

    def test_drain_serves_then_stream_finishes_within_grace(self):
        cfg = no_fallback_config(self.mock.base_url, server={"drain_delay": "1500ms", "shutdown_grace": "10s"})
        cd = Canaryd(cfg).start()
        try:
            t, out = self.start_stream(cd, chunks=20, delay_ms=150)  # ~3s of stream
            wait_until(lambda: self.mock.stats()["active_connections"] >= 1, timeout=5, message="stream in flight")
            t0 = time.monotonic()
            cd.signal(signal.SIGTERM)
            wait_until(lambda: http("GET", cd.url + "/ready", timeout=2)[0] == 503, timeout=1.0,
                       message="/ready 503 during drain_delay")
            # new requests are still served during drain_delay
            status, hdrs, body = http("POST", cd.url + CHAT, chat_body(), timeout=5)
            self.assertEqual(status, 200, body)
            self.assertLess(time.monotonic() - t0, 1.5, "that request had to land inside drain_delay")
            rc = cd.wait_exit(timeout=20)
            t.join(10)
            self.assertEqual(rc, 0, cd.tail())
            r = out["r"]
            self.assertEqual(r.status, 200)
            self.assertTrue(r.done and r.complete, "the in-flight stream must finish within shutdown_grace")
            self.assertFalse([l for l in cd.log_lines() if "cut" in l.get("msg", "")], cd.tail())
        finally:
            cd.kill()
            cd.cleanup()

    def test_past_grace_streams_are_cut_and_logged(self):
        cfg = no_fallback_config(self.mock.base_url, server={"drain_delay": "0s", "shutdown_grace": "1s"})
        cd = Canaryd(cfg).start()
        try:
            streams = [self.start_stream(cd, chunks=100, delay_ms=100) for _ in range(2)]  # ~10s each
            wait_until(lambda: self.mock.stats()["active_connections"] >= 2, timeout=5, message="streams in flight")
            t0 = time.monotonic()
            cd.signal(signal.SIGTERM)
            rc = cd.wait_exit(timeout=10)
            elapsed = time.monotonic() - t0
            for t, _ in streams:
                t.join(10)
            self.assertEqual(rc, 0, cd.tail())
            self.assertLess(elapsed, 5, "cut must happen at shutdown_grace")
            for _, out in streams:
                # A cut stream is a close without the final chunk (IncompleteRead), never a clean [DONE].
                self.assertIn("cut", out, f"stream was not cut: {out.get('r')}")
            cut = [l for l in cd.log_lines() if "cut" in l.get("msg", "")]
            self.assertTrue(cut, cd.tail())
            self.assertEqual(cut[0].get("cut"), 2, cut)
            wait_until(lambda: self.mock.stats()["active_connections"] == 0, timeout=5,
                       message="upstream connections closed after the cut")
        finally:
            cd.kill()
            cd.cleanup()


class IdleKeepAliveTest(unittest.TestCase):
    """server.idle_timeout closes a keep-alive connection that waits for its
    next request (the wait holds no buffer or timer of its own: the worker's
    sweep closes it), and a connection that keeps sending is never cut."""

    @classmethod
    def setUpClass(cls):
        cls.mock = cls.enterClassContext(Mock("idle-mock"))

    def request(self, sock):
        body = json.dumps(chat_body()).encode()
        sock.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "closed before the answer")
            out += chunk
        head, rest = out.split(b"\r\n\r\n", 1)
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
        while len(rest) < length:
            rest += sock.recv(65536)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])

    def test_idle_connection_closed_after_idle_timeout_busy_one_kept(self):
        cfg = no_fallback_config(self.mock.base_url, server={"idle_timeout": "600ms"})
        with Canaryd(cfg) as cd:
            idle = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            busy = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            self.request(idle)
            t0 = time.monotonic()
            closed_at = None
            # The busy connection sends every 100 ms for 2 s: well past the
            # idle timeout in total, never idle that long. Meanwhile: when did
            # the idle one see the server's EOF?
            while time.monotonic() - t0 < 2.0:
                self.request(busy)
                if closed_at is None and select.select([idle], [], [], 0.1)[0]:
                    self.assertEqual(idle.recv(1), b"", "the idle connection got bytes, not a close")
                    closed_at = time.monotonic() - t0
            self.assertIsNotNone(closed_at, "the idle connection was not closed within 2 s")
            # After the timeout, and within the sweep's period (250 ms) and some slack of it.
            self.assertGreaterEqual(closed_at, 0.6)
            self.assertLess(closed_at, 1.6)
            self.request(busy)  # still open and serving
            # Idle past the buffer hand-back (Worker::kKeepBuffer, 250 ms) but
            # within idle_timeout: the session waits without its buffer, and
            # the next request is still read and answered.
            slow = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            self.request(slow)
            time.sleep(0.45)  # the client's think time (the scenario, not a wait for a result)
            self.request(slow)
            slow.close()
            idle.close()
            busy.close()
        print(f"[measured] idle keep-alive closed after {closed_at:.2f}s (idle_timeout 600ms)")


class ParkedConnectionTest(unittest.TestCase):
    """A keep-alive connection idle past Worker::kKeepBuffer is parked (held
    without a session: server/parked.hpp). It must still serve its next
    request, stay counted, close when its client closes, and be closed by a
    drain at once (not after shutdown_grace)."""

    def test_parked_connections_resume_stay_counted_and_drain_at_once(self):
        with Mock("parked-mock") as mock:
            cfg = no_fallback_config(mock.base_url, server={"idle_timeout": "30s", "drain_delay": "0s",
                                                            "shutdown_grace": "20s"})
            cd = Canaryd(cfg).start()
            try:
                req = IdleKeepAliveTest.request
                a = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
                b = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
                req(self, a)
                req(self, b)

                def health():
                    return http_json("GET", cd.url + "/health", timeout=5)[2]

                # Both park within kKeepBuffer plus a sweep (250-500 ms); /health's own
                # connection is the third one counted.
                h = wait_until(lambda: (lambda j: j if j["idle_connections"] == 2 else None)(health()),
                               timeout=5, message="both idle connections parked")
                self.assertEqual(h["connections"], 3, h)
                for _ in range(3):  # resumed, answered, parked again: each time on the same socket
                    req(self, a)
                    wait_until(lambda: health()["idle_connections"] == 2, timeout=5,
                               message="the resumed connection parked again")
                b.close()  # a parked connection's client goes: its wait ends, it is no longer counted
                h = wait_until(lambda: (lambda j: j if j["connections"] == 2 else None)(health()),
                               timeout=5, message="b no longer counted")
                self.assertEqual(h["idle_connections"], 1, h)
                t0 = time.monotonic()
                cd.signal(signal.SIGTERM)
                # The drain closes the parked connection at once: the client sees EOF...
                a.settimeout(5)
                self.assertEqual(a.recv(1), b"", "a parked connection got bytes, not a close, on drain")
                rc = cd.wait_exit(timeout=15)
                elapsed = time.monotonic() - t0
                self.assertEqual(rc, 0, cd.tail())
                # ...and the process ends without waiting for shutdown_grace (20 s).
                self.assertLess(elapsed, 5, f"drain waited {elapsed:.1f}s on a parked connection")
                a.close()
                print(f"[measured] drain with a parked connection took {elapsed:.2f}s")
            finally:
                cd.kill()
                cd.cleanup()


class ReloadTest(unittest.TestCase):
    def test_reload_applies_keeps_inflight_and_rejects_bad_file(self):
        with Mock("reload-mock") as mock:
            cfg = no_fallback_config(mock.base_url)
            with Canaryd(cfg) as cd:
                # in flight across the reload: a slow stream
                out = {}

                def run():
                    out["r"] = stream(cd.url + CHAT, chat_body(stream=True),
                                      {"X-Mock-Stream-Chunks": "10", "X-Mock-Stream-Delay-Ms": "150"}, timeout=20)
                t = threading.Thread(target=run)
                t.start()
                wait_until(lambda: mock.stats()["active_connections"] >= 1, timeout=5, message="stream in flight")

                new = no_fallback_config(mock.base_url)
                new["upstreams"]["ctl"]["models"] = {"gpt-4.1": "gpt-4.1-renamed"}
                new["split"]["override_header"] = "X-Arm-Override"
                cd.write_config(new)
                cd.signal(signal.SIGHUP)
                cd.wait_log(lambda l: l.get("msg") == "config reloaded", timeout=5, message="reload log line")

                status, _, body = http("POST", cd.url + CHAT, chat_body())
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(mock.stats()["last_body"])["model"], "gpt-4.1-renamed")

                t.join(20)
                self.assertEqual(out["r"].status, 200)
                self.assertTrue(out["r"].done and out["r"].complete, "in-flight stream must finish across a reload")

                # a bad file: rejected, named, and the running config keeps serving
                bad = dict(new)
                bad["server"] = dict(new["server"], max_conections=5)
                cd.write_config(bad)
                cd.signal(signal.SIGHUP)
                line = cd.wait_log(lambda l: "reject" in str(l.get("msg", "")), timeout=5, message="rejection log")
                self.assertIn("max_conections", json.dumps(line), line)
                status, _, body = http("POST", cd.url + CHAT, chat_body())
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(mock.stats()["last_body"])["model"], "gpt-4.1-renamed",
                                 "the old (reloaded) config must keep serving")
                s, _, _ = http("GET", cd.url + "/ready")
                self.assertEqual(s, 200)


if __name__ == "__main__":
    unittest.main()
