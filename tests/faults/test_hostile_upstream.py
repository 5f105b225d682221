"""A hostile upstream must never make one user's answer reach another.

The upstream (hostile_upstream.py) echoes a per-request tag in every honest
answer. For each misbehaviour, 100 requests go through canaryd over few pooled
upstream connections (1 I/O thread, max_connections 2), hostile and honest
requests alternating: every client must get its own tag (or, for what cannot be
relayed, canaryd's own error), never another request's answer, and canaryd must
keep serving. Pingora's rule is what is checked: a pooled connection is reused
only after a complete, clean response with nothing left over.

Also here: upstream.max_response_bytes applied to every framing (Content-Length,
chunked, close-delimited) just under and just over a small limit, and a 20 MB
Content-Length answer under the default limit."""

import http.client as httpclient
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Canaryd, LOOPBACK, chat_body, http  # noqa: E402
from fault_helpers import CHAT, no_fallback_config  # noqa: E402
from hostile_upstream import HostileUpstream  # noqa: E402

ROUNDS = 100


def hostile_config(base_url: str, **upstream):
    cfg = no_fallback_config(base_url, server={"threads": 1})
    cfg["upstreams"]["ctl"].update({"max_connections": 2, "timeout": "1s"})
    cfg["upstreams"]["ctl"].update(upstream)
    return cfg


class Client:
    """One keep-alive client connection to canaryd; reconnects when canaryd closes it."""

    def __init__(self, port: int):
        self.port = port
        self.conn = None

    def send_forced(self, method: str, path: str, tag: str):
        """An honest request forced to the canary (X-Canary)."""
        return self.send(method, path, tag, "honest", extra={"X-Canary": "canary"})

    def send(self, method: str, path: str, tag: str, mode: str, body=None, extra=None):
        headers = {"X-Tag": tag, "X-Hostile": mode, "X-User-ID": "u-" + tag}
        headers.update(extra or {})
        data = None
        if method == "POST":
            data = json.dumps(body or chat_body()).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = httpclient.HTTPConnection(LOOPBACK, self.port, timeout=15)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, resp.headers, payload
            except (ConnectionError, httpclient.RemoteDisconnected, httpclient.BadStatusLine):
                # canaryd closed an idle keep-alive connection as we reused it: a fresh one, once.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def tag_of(payload: bytes):
    try:
        return json.loads(payload).get("tag")
    except ValueError:
        return None


def sse_tags(payload: bytes) -> set:
    tags = set()
    for line in payload.split(b"\n"):
        if line.startswith(b"data: {"):
            tags.add(json.loads(line[6:]).get("tag"))
    return tags


class HostileUpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = cls.enterClassContext(HostileUpstream(stall_seconds=5))
        cls.cd = cls.enterClassContext(Canaryd(hostile_config(cls.up.base_url)))

    def run_mode(self, mode: str, expect: str, rounds: int = ROUNDS, method: str = "POST", path: str = CHAT):
        """Alternates `mode` with honest requests; checks every answer. `expect` for the hostile ones:
        'own' (200 with its own tag), 'bodiless' (2xx without a body), 'stream' (events with only its own
        tag), or an error status as text ('502', '504')."""
        client = Client(self.cd.port)
        wrong = []
        try:
            for i in range(rounds):
                hostile = i % 2 == 0
                tag = f"{mode}-{i}"
                status, headers, payload = client.send(method if hostile else "POST", path if hostile else CHAT,
                                                       tag, mode if hostile else "honest")
                if not hostile or expect == "own":
                    if status != 200 or tag_of(payload) != tag:
                        wrong.append((i, status, payload[:120]))
                elif expect == "bodiless":
                    if status // 100 != 2 or payload != b"":
                        wrong.append((i, status, payload[:120]))
                elif expect == "stream":
                    if status != 200 or sse_tags(payload) != {tag} or b"[DONE]" not in payload:
                        wrong.append((i, status, payload[:120]))
                else:
                    if str(status) != expect:
                        wrong.append((i, status, payload[:120]))
                    else:
                        harness.assert_openai_error(payload, f"{mode} -> {status}")
                    # canaryd's own error never carries an upstream's answer
                    self.assertNotIn(b"EVIL", payload)
                self.assertNotIn(b"EVIL", payload, f"{mode}: request {i} got an answer meant for nobody")
        finally:
            client.close()
        self.assertEqual(wrong, [], f"{mode}: answers that were not the client's own")
        # canaryd keeps serving: a fresh connection, an honest answer
        status, _, body = http("POST", self.cd.url + CHAT, chat_body(), {"X-Tag": "after-" + mode})
        self.assertEqual((status, tag_of(body)), (200, "after-" + mode), body[:200])

    def test_interim_responses_are_dropped(self):
        for mode in ("interim_100", "interim_102", "interim_103"):
            with self.subTest(mode=mode):
                self.run_mode(mode, "own")

    def test_too_many_interim_responses_are_refused(self):
        self.run_mode("interim_many", "502", rounds=20)

    def test_switching_protocols_is_refused(self):
        self.run_mode("switch_101", "502", rounds=20)

    def test_bytes_after_the_response_close_the_connection(self):
        for mode in ("extra_after_length", "two_responses", "chunked_then_extra"):
            with self.subTest(mode=mode):
                self.run_mode(mode, "own")

    def test_stream_followed_by_a_response(self):
        self.run_mode("stream_then_extra", "stream")

    def test_bytes_that_arrive_while_pooled(self):
        # The extra response arrives after the answer, while the connection sits idle in the
        # pool; the next request must not read it. The upstream sends it 50 ms after the answer;
        # wait until it has been sent before the next request (no timing guess).
        client = Client(self.cd.port)
        try:
            for i in range(0, 40, 2):
                sent_before = self.up.late_sent
                status, _, payload = client.send("POST", CHAT, f"late-{i}", "late_response")
                self.assertEqual((status, tag_of(payload)), (200, f"late-{i}"))
                harness.wait_until(lambda: self.up.late_sent > sent_before, timeout=5,
                                   message="the late response to be sent")
                status, _, payload = client.send("POST", CHAT, f"late-{i + 1}", "honest")
                self.assertEqual((status, tag_of(payload)), (200, f"late-{i + 1}"), payload[:120])
        finally:
            client.close()

    def test_short_body_times_out_and_is_not_reused(self):
        self.run_mode("short_body", "504", rounds=10)

    def test_short_body_then_close(self):
        self.run_mode("short_body_close", "502", rounds=20)

    def test_chunk_size_overflow(self):
        self.run_mode("chunk_overflow", "502", rounds=20)

    def test_stall_mid_body(self):
        self.run_mode("stall", "504", rounds=10)

    def test_head_answer_with_a_body(self):
        self.run_mode("body_on_head", "bodiless", method="HEAD", path="/v1/models")

    def test_204_with_a_body(self):
        self.run_mode("body_on_204", "bodiless", method="GET", path="/v1/models")


class ShadowPoolTest(unittest.TestCase):
    """The shadow reads the canary through the same per-thread pool as canary traffic: an answer it
    leaves half-read, or bytes past it, must not become a canary user's answer."""

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(harness.Mock("control"))  # ignores X-Hostile
        cls.canary = cls.enterClassContext(HostileUpstream())
        cfg = harness.base_config(cls.control.base_url, cls.canary.base_url, fallback={"enabled": False},
                                  server={"threads": 1},
                                  shadow={"enabled": True, "percent": 100, "max_per_second": 1000,
                                          "max_in_flight": 4})
        cfg["upstreams"]["cny"].update({"max_connections": 1, "timeout": "1s"})
        cls.cd = cls.enterClassContext(Canaryd(cfg))

    def shadows(self) -> float:
        _, _, body = http("GET", self.cd.url + "/metrics")
        return sum(v for _, v in harness.metric_samples(body.decode(), "ai_proxy_shadow_requests_total"))

    def test_shadowed_desync_never_reaches_a_canary_user(self):
        client = Client(self.cd.port)
        try:
            for i, mode in enumerate(["two_responses", "extra_after_length", "interim_103", "chunked_then_extra",
                                      "stream_then_extra"] * 4):
                before = self.shadows()
                status, headers, payload = client.send("POST", CHAT, f"shadowed-{i}", mode)
                self.assertEqual((status, headers["X-Canaryd-Arm"]), (200, "control"), payload[:200])
                harness.wait_until(lambda: self.shadows() > before, timeout=5, message="the shadow to finish")
                tag = f"canary-user-{i}"
                status, headers, payload = client.send_forced("POST", CHAT, tag)
                self.assertEqual((status, headers["X-Canaryd-Arm"], tag_of(payload)), (200, "canary", tag),
                                 payload[:200])
        finally:
            client.close()


class MaxResponseBytesTest(unittest.TestCase):
    """upstream.max_response_bytes is the body limit for every framing, set before the head is read."""

    LIMIT = 100_000

    @classmethod
    def setUpClass(cls):
        cls.up = cls.enterClassContext(HostileUpstream())
        cls.cd = cls.enterClassContext(Canaryd(hostile_config(cls.up.base_url, max_response_bytes=cls.LIMIT,
                                                              timeout="10s")))

    def one(self, framing: str, size: int):
        client = Client(self.cd.port)
        try:
            return client.send("POST", CHAT, f"{framing}-{size}", f"size_{framing}_{size}")
        finally:
            client.close()

    def test_each_framing_under_and_over_the_limit(self):
        for framing in ("length", "chunked", "close"):
            with self.subTest(framing=framing, size="at the limit"):
                status, _, payload = self.one(framing, self.LIMIT)
                self.assertEqual(status, 200, payload[:200])
                self.assertEqual(len(payload), self.LIMIT)
                self.assertEqual(tag_of(payload), f"{framing}-{self.LIMIT}")
            with self.subTest(framing=framing, size="one byte over"):
                status, _, payload = self.one(framing, self.LIMIT + 1)
                self.assertEqual(status, 502, payload[:200])
                err = harness.assert_openai_error(payload)
                self.assertIn("max_response_bytes", err["message"])


class LargeAnswerTest(unittest.TestCase):
    """A 20 MB Content-Length answer (an embeddings call with thousands of inputs) passes under the
    default max_response_bytes (64 MiB): Beast's own 8 MiB default no longer applies."""

    def test_20_mb_answer(self):
        size = 20 * 1000 * 1000
        with HostileUpstream() as up, Canaryd(hostile_config(up.base_url, timeout="30s")) as cd:
            client = Client(cd.port)
            try:
                status, _, payload = client.send("POST", CHAT, "big", f"size_length_{size}")
            finally:
                client.close()
            self.assertEqual(status, 200, payload[:200])
            self.assertEqual(len(payload), size)
            self.assertEqual(tag_of(payload), "big")


if __name__ == "__main__":
    unittest.main()
