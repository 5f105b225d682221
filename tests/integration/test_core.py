"""canaryd's request path against two real mock upstreams: bodies relayed
unchanged, header rewriting, routing, streaming relay, pooling, keep-alive,
upstream errors passed through, own endpoints, client disconnects."""

import http.client as httpclient
import json
import re
import socket
import time
import unittest

import harness
from harness import Canaryd, Mock, base_config, chat_body, http, request_on, stream, wait_until

CONTROL_KEY = harness.DEFAULT_ENV["CANARYD_IT_CONTROL_KEY"]
CANARY_KEY = harness.DEFAULT_ENV["CANARYD_IT_CANARY_KEY"]
THREADS = 2


class CoreProxyTest(unittest.TestCase):
    """One canaryd (2 threads, weight 0) in front of a control and a canary mock.
    Each mock demands its own upstream key, so every 200 also proves canaryd
    sent the right key."""

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control-mock", require_key=CONTROL_KEY))
        cls.canary = cls.enterClassContext(Mock("canary-mock", require_key=CANARY_KEY))
        cls.cd = cls.enterClassContext(Canaryd(base_config(
            cls.control.base_url, cls.canary.base_url, server={"threads": THREADS})))
        cls.chat_url = cls.cd.url + "/v1/chat/completions"

    # -- helpers ---------------------------------------------------------

    def direct(self, mock, path, body=None, headers=None, method="POST"):
        key = CONTROL_KEY if mock is self.control else CANARY_KEY
        h = {"Authorization": f"Bearer {key}"}
        h.update(headers or {})
        return mock.request(method, path, body, h)

    def assert_proxied(self, headers, arm="control"):
        self.assertEqual(headers.get("X-Canaryd-Arm"), arm)
        self.assertEqual(headers.get("X-Canaryd-Provider"), "ctl" if arm == "control" else "cny")
        self.assertTrue(headers.get("X-Request-ID"), "X-Request-ID missing")
        self.assertIsNone(headers.get("X-Canaryd-Fallback"))

    # -- 1. bodies -------------------------------------------------------

    def test_chat_body_is_the_mocks_byte_for_byte(self):
        sent = json.dumps(chat_body("gpt-4.1", "byte for byte", temperature=0.25)).encode()
        st1, direct_headers, direct_before = self.direct(self.control, "/v1/chat/completions", sent,
                                            {"Content-Type": "application/json"})
        self.assertEqual(st1, 200, direct_before)
        status, headers, body = http("POST", self.chat_url, sent, {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assert_proxied(headers)
        self.assertEqual(self.control.stats()["last_body"], sent.decode(),
                         "the request body must reach the upstream unchanged")
        self.assertEqual(headers.get("Content-Type"), direct_headers.get("Content-Type"))
        self.assertEqual(int(headers.get("Content-Length", -1)), len(body))

        # The mock numbers its ids and stamps "created": splice canaryd's id and
        # created into the direct answer; every other byte must be identical.
        got = json.loads(body)
        before = json.loads(direct_before)
        expected = direct_before.replace(f'"id":"{before["id"]}"'.encode(), f'"id":"{got["id"]}"'.encode(), 1)
        expected = expected.replace(f'"created":{before["created"]}'.encode(), f'"created":{got["created"]}'.encode(), 1)
        self.assertEqual(body, expected)

    def test_embeddings_body_is_the_mocks_byte_for_byte(self):
        req = {"model": "text-embedding-3-small", "input": ["a", "b"]}
        st, _, direct_body = self.direct(self.control, "/v1/embeddings", req)
        self.assertEqual(st, 200, direct_body)
        status, headers, body = http("POST", self.cd.url + "/v1/embeddings", req)
        self.assertEqual(status, 200, body)
        self.assert_proxied(headers)
        self.assertEqual(body, direct_body)

    def test_request_id_generated_and_sent_both_ways(self):
        status, headers, body = http("POST", self.chat_url, chat_body())
        self.assertEqual(status, 200, body)
        rid = headers.get("X-Request-ID")
        self.assertTrue(rid and len(rid) >= 8, rid)
        self.assertEqual(self.control.stats()["last_headers"].get("x-request-id"), rid)
        _, headers2, _ = http("POST", self.chat_url, chat_body())
        self.assertNotEqual(headers2.get("X-Request-ID"), rid, "request ids must be unique")

    def test_client_request_id_kept_and_forwarded(self):
        status, headers, body = http("POST", self.chat_url, chat_body(), {"X-Request-ID": "it-req-7f3a"})
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("X-Request-ID"), "it-req-7f3a")
        self.assertEqual(self.control.stats()["last_headers"].get("x-request-id"), "it-req-7f3a")

    # -- 2. header rewriting --------------------------------------------

    def test_header_rewriting_seen_by_upstream(self):
        client_secret = "client-secret-4d9f"
        status, headers, body = http("POST", self.chat_url, chat_body(), {
            "Authorization": f"Bearer {client_secret}",
            "Connection": "keep-alive, X-Custom",
            "X-Custom": "hop-by-hop-by-connection",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Forwarded-For": "1.2.3.4",
            "X-End-To-End": "kept",
            "X-User-ID": "user-42",
        })
        self.assertEqual(status, 200, body)
        seen = self.control.stats()["last_headers"]
        self.assertEqual(seen.get("authorization"), f"Bearer {CONTROL_KEY}")
        for name in ("x-custom", "keep-alive", "te", "proxy-authorization"):
            self.assertNotIn(name, seen, f"hop-by-hop header {name} was forwarded: {seen}")
        self.assertNotIn("x-custom", seen.get("connection", "").lower())
        self.assertEqual(seen.get("x-forwarded-for"), "1.2.3.4, 127.0.0.1")
        self.assertEqual(seen.get("host"), f"127.0.0.1:{self.control.port}")
        self.assertEqual(seen.get("x-end-to-end"), "kept")
        self.assertEqual(seen.get("x-user-id"), "user-42")
        self.assertFalse([k for k, v in seen.items() if client_secret in v],
                         f"the client's key reached the upstream: {seen}")

    def test_upgrade_header_not_forwarded(self):
        status, _, body = http("POST", self.chat_url, chat_body(), {"Upgrade": "h2c"})
        self.assertEqual(status, 200, body)
        self.assertNotIn("upgrade", self.control.stats()["last_headers"])

    def test_no_x_forwarded_for_from_client(self):
        status, _, body = http("POST", self.chat_url, chat_body())
        self.assertEqual(status, 200, body)
        self.assertEqual(self.control.stats()["last_headers"].get("x-forwarded-for"), "127.0.0.1")

    # -- routing ---------------------------------------------------------

    def test_weight_zero_sends_everyone_to_control(self):
        for i in range(10):
            status, headers, body = http("POST", self.chat_url, chat_body(), {"X-User-ID": f"user-{i}"})
            self.assertEqual(status, 200, body)
            self.assert_proxied(headers, "control")

    def test_override_header_forces_canary(self):
        before = self.canary.stats()["requests"]
        status, headers, body = http("POST", self.chat_url, chat_body(), {"X-Canary": "canary"})
        self.assertEqual(status, 200, body)
        self.assert_proxied(headers, "canary")
        st = self.canary.stats()
        self.assertEqual(st["requests"], before + 1)
        self.assertEqual(st["last_headers"].get("authorization"), f"Bearer {CANARY_KEY}")
        self.assertEqual(st["last_headers"].get("host"), f"127.0.0.1:{self.canary.port}")

    def test_other_v1_routes_go_to_control(self):
        status, headers, body = http("GET", self.cd.url + "/v1/models")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("X-Canaryd-Arm"), "control")
        self.assertIn("data", json.loads(body))
        self.assertEqual(self.control.stats()["last_headers"].get("authorization"), f"Bearer {CONTROL_KEY}")

    def test_split_routes_all_reach_the_upstream(self):
        cases = [
            ("/v1/completions", {"model": "gpt-4.1", "prompt": "hi"}),
            ("/v1/embeddings", {"model": "gpt-4.1", "input": "hi"}),
            ("/v1/responses", {"model": "gpt-4.1", "input": "hi"}),
        ]
        for path, req in cases:
            with self.subTest(path=path):
                status, headers, body = http("POST", self.cd.url + path, req)
                self.assertEqual(status, 200, body)
                self.assert_proxied(headers)
                self.assertEqual(self.control.stats()["requests_by_path"].get(path, 0) >= 1, True)

    # -- 3. streaming ----------------------------------------------------

    def test_streaming_relays_each_event_as_it_arrives(self):
        chunks, delay_ms = 5, 300
        res = stream(self.chat_url, chat_body(stream=True),
                     {"X-Mock-Stream-Chunks": str(chunks), "X-Mock-Stream-Delay-Ms": str(delay_ms)})
        self.assertEqual(res.status, 200, res.body[:300])
        self.assert_proxied(res.headers)
        self.assertTrue(res.headers.get("Content-Type", "").startswith("text/event-stream"), res.headers)
        self.assertEqual(len(res.events), chunks + 1, [e.raw for e in res.events])
        self.assertTrue(res.done, "no [DONE]")
        self.assertEqual(res.events[-1].data.strip(), "[DONE]")
        deltas = res.json_events()
        self.assertEqual(len(deltas), chunks)
        first, last = res.events[0].t, res.events[-1].t
        total = res.t_end
        self.assertLess(first, total / 2, f"first event at {first:.3f}s of {total:.3f}s: buffered?")
        self.assertGreaterEqual(last - first, 1.0, f"events not spread out: {[round(e.t, 3) for e in res.events]}")
        # Every event reaches the client soon after the mock wrote it.
        lags = [e.wall - d["mock_ts_us"] / 1e6 for e, d in zip(res.events, deltas) if "mock_ts_us" in d]
        self.assertEqual(len(lags), chunks, "mock events carry mock_ts_us")
        self.assertLess(max(lags), 0.25, f"relay lag per event (s): {lags}")

    def test_streaming_request_body_and_usage(self):
        body = chat_body(stream=True, stream_options={"include_usage": True})
        res = stream(self.chat_url, body, {"X-Mock-Stream-Chunks": "3"})
        self.assertEqual(res.status, 200, res.body[:300])
        self.assertTrue(res.done)
        usage = [d for d in res.json_events() if d.get("usage")]
        self.assertTrue(usage, "the usage chunk must be relayed")

    # -- 4. pooling ------------------------------------------------------

    def test_upstream_connections_are_pooled(self):
        self.control.reset()
        # 10 requests on fresh client connections, then 10 on one keep-alive connection.
        for _ in range(10):
            status, _, body = http("POST", self.chat_url, chat_body())
            self.assertEqual(status, 200, body)
        conn = httpclient.HTTPConnection("127.0.0.1", self.cd.port, timeout=10)
        try:
            for _ in range(10):
                status, _, body = request_on(conn, "POST", "/v1/chat/completions", chat_body())
                self.assertEqual(status, 200, body)
        finally:
            conn.close()
        st = self.control.stats()
        self.assertEqual(st["requests"], 20)
        self.assertLessEqual(st["connections_accepted"], THREADS,
                             f"20 sequential requests used {st['connections_accepted']} upstream connections")

    # -- 9. keep-alive ---------------------------------------------------

    def test_keep_alive_two_requests_on_one_connection(self):
        conn = httpclient.HTTPConnection("127.0.0.1", self.cd.port, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(chat_body()),
                         {"Content-Type": "application/json"})
            r1 = conn.getresponse()
            b1 = r1.read()
            self.assertEqual(r1.status, 200, b1)
            self.assertFalse(r1.will_close, "canaryd closed a keep-alive connection")
            sock = conn.sock
            self.assertIsNotNone(sock)
            conn.request("POST", "/v1/chat/completions", json.dumps(chat_body()),
                         {"Content-Type": "application/json"})
            r2 = conn.getresponse()
            b2 = r2.read()
            self.assertEqual(r2.status, 200, b2)
            self.assertIs(conn.sock, sock, "the second request needed a new connection")
            # canaryd's own endpoints keep the connection too
            conn.request("GET", "/ready")
            r3 = conn.getresponse()
            r3.read()
            self.assertEqual(r3.status, 200)
            self.assertIs(conn.sock, sock)
        finally:
            conn.close()

    def test_http10_client_gets_connection_closed(self):
        req = json.dumps(chat_body()).encode()
        raw = (b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(req)).encode() + b"\r\n\r\n" + req)
        with socket.create_connection(("127.0.0.1", self.cd.port), timeout=10) as s:
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(re.match(rb"HTTP/1\.[01] 200 ", data), data[:200])
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"chat.completion", body)

    # -- 10. upstream errors and own endpoints ---------------------------

    def test_upstream_errors_pass_through_unchanged(self):
        for code in (400, 401, 429, 500, 503):
            with self.subTest(status=code):
                st, direct_headers, direct_body = self.direct(self.control, "/v1/chat/completions", chat_body(),
                                                              {"X-Mock-Status": str(code)})
                self.assertEqual(st, code)
                status, headers, body = http("POST", self.chat_url, chat_body(), {"X-Mock-Status": str(code)})
                self.assertEqual(status, code, body)
                self.assertEqual(body, direct_body)
                self.assertEqual(headers.get("X-Canaryd-Arm"), "control")
                if code == 429:
                    self.assertEqual(headers.get("Retry-After"), direct_headers.get("Retry-After"))

    def test_upstream_rejects_key_passes_through(self):
        # A mock that wants another key answers 401 with its own body.
        with Mock("strict", require_key="sk-something-else") as strict, \
                Canaryd(base_config(strict.base_url)) as cd:
            st, _, direct_body = strict.request("POST", "/v1/chat/completions", chat_body(),
                                                {"Authorization": f"Bearer {CONTROL_KEY}"})
            self.assertEqual(st, 401)
            status, _, body = http("POST", cd.url + "/v1/chat/completions", chat_body())
            self.assertEqual(status, 401, body)
            self.assertEqual(body, direct_body)

    def test_health_ready(self):
        status, headers, body = http("GET", self.cd.url + "/health")
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc.get("status"), "ok", doc)
        self.assertEqual(doc.get("split", {}).get("control"), "ctl", doc)
        self.assertEqual(doc.get("split", {}).get("canary"), "cny", doc)
        status, _, body = http("GET", self.cd.url + "/ready")
        self.assertEqual(status, 200, body)

    def test_metrics_requests_total_labels(self):
        http("POST", self.chat_url, chat_body("gpt-4.1"))
        http("POST", self.chat_url, chat_body("unlisted-model-zz9"))
        http("POST", self.chat_url, chat_body("gpt-4.1"), {"X-Mock-Status": "500"})
        status, headers, body = http("GET", self.cd.url + "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers.get("Content-Type", ""))
        text = body.decode()
        samples = harness.metric_samples(text, "ai_proxy_requests_total")
        self.assertTrue(samples, "ai_proxy_requests_total missing:\n" + text[:2000])
        for labels, _ in samples:
            self.assertTrue({"provider", "model", "status"} <= set(labels), labels)
        ok = sum(v for l, v in samples if l == {"provider": "ctl", "model": "gpt-4.1", "status": "success"})
        self.assertGreaterEqual(ok, 1, samples)
        err = sum(v for l, v in samples if l == {"provider": "ctl", "model": "gpt-4.1", "status": "error"})
        self.assertGreaterEqual(err, 1, samples)
        self.assertNotIn("unlisted-model-zz9", text, "an unknown model became a label value")
        self.assertTrue([l for l, _ in samples if l.get("model") == "other"], samples)

    # -- 11. client disconnect -------------------------------------------

    def test_client_disconnect_cancels_upstream_stream(self):
        # The canary mock is otherwise idle; route there by override.
        hdrs = {"X-Canary": "canary", "X-Mock-Stream-Chunks": "20", "X-Mock-Stream-Delay-Ms": "500"}
        seen_active = []

        def on_event(_):
            if not seen_active:
                seen_active.append(self.canary.stats()["active_connections"])

        res = stream(self.chat_url, chat_body(stream=True), hdrs, stop_after=1, on_event=on_event)
        t_closed = time.monotonic()
        self.assertEqual(res.status, 200, res.body[:300])
        self.assertEqual(len(res.events), 1)
        active_during = seen_active[0]
        self.assertGreaterEqual(active_during, 1)
        # The mock notices a closed connection when it writes the next event (500 ms apart).
        wait_until(lambda: self.canary.stats()["active_connections"] < active_during, timeout=4,
                   message="canaryd to close its upstream connection after the client left")
        self.assertLess(time.monotonic() - t_closed, 4)
        # and canaryd still serves
        status, _, body = http("POST", self.chat_url, chat_body(), {"X-Canary": "canary"})
        self.assertEqual(status, 200, body)


if __name__ == "__main__":
    unittest.main()
