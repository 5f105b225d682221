"""Fallback to control (SPEC §5, issue #4 requirement 1) with the real canaryd
and real mock upstreams: each reason (connect error, timeout, 429, 5xx) in the
X-Canaryd-Fallback header and in ai_proxy_fallbacks_total{from,to,reason},
the fallback.models rename, the budget (over it, the client gets the canary's
own error), and a request forced with the override header never falls back.

The canary serves 100% of users (one step at weight 100, min_requests too high
for any verdict), so every unforced request goes to the canary first."""

from __future__ import annotations

import http.client as httpclient
import json
import sys
import time
import unittest
from typing import Optional

from harness import LOOPBACK, Canaryd, Mock, chat_body, deep_merge, http, metric_samples, request_on
from rollout_helpers import ADMIN_ENV, admin, rollout_config

CONTROL = "ctl"  # provider names from harness.base_config
CANARY = "cny"


def report(msg: str) -> None:
    sys.stderr.write(f"[measured] {msg}\n")


def all_on_canary(control_url: str, canary_url: Optional[str], fallback: dict, **sections) -> dict:
    cfg = rollout_config(control_url, canary_url, steps=[{"weight": 100, "pause": "10m"}],
                         analysis={"min_requests": 1000000}, fallback=fallback)
    return deep_merge(cfg, sections)


def fallbacks(c: Canaryd) -> dict[tuple[str, str, str], float]:
    """The non-zero ai_proxy_fallbacks_total series from /metrics."""
    status, _, body = http("GET", c.url + "/metrics", timeout=5)
    assert status == 200, status
    return {(l["from"], l["to"], l["reason"]): v
            for l, v in metric_samples(body.decode(), "ai_proxy_fallbacks_total") if v != 0}


def chat(conn: httpclient.HTTPConnection, model: str = "gpt-4.1", headers: Optional[dict] = None):
    return request_on(conn, "POST", "/v1/chat/completions", chat_body(model=model),
                      dict({"X-User-ID": "u-1"}, **(headers or {})))


def connect(c: Canaryd) -> httpclient.HTTPConnection:
    return httpclient.HTTPConnection(LOOPBACK, c.port, timeout=10)


class ReasonTest(unittest.TestCase):
    """One canaryd per reason; three requests each: all served by control with
    the reason in the header and counted under that reason only."""

    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control"))

    def _check_reason(self, reason: str, canary: Optional[Mock], **sections):
        self.control.reset()
        cfg = all_on_canary(self.control.base_url, canary.base_url if canary else None, {"enabled": True},
                            **sections)
        with Canaryd(cfg, env=ADMIN_ENV) as c:
            self.assertEqual(admin(c)["weight"], 100)
            conn = connect(c)
            try:
                for _ in range(3):
                    status, headers, body = chat(conn)
                    self.assertEqual(status, 200, body[:300])
                    self.assertEqual(headers.get("X-Canaryd-Fallback"), reason)
                    self.assertEqual(headers.get("X-Canaryd-Arm"), "control")
                    self.assertEqual(headers.get("X-Canaryd-Provider"), CONTROL)
                    self.assertEqual(json.loads(body)["mock_name"], "control")
            finally:
                conn.close()
            self.assertEqual(self.control.stats()["requests"], 3)
            if canary is not None:
                self.assertEqual(canary.stats()["requests"], 3)
            got = fallbacks(c)
            self.assertEqual(got.get((CANARY, CONTROL, reason)), 3.0, got)
            self.assertEqual(sum(got.values()), 3.0, got)

    def test_connect_error(self):
        # No canary mock: its base_url is a free port nobody listens on.
        self._check_reason("connect_error", None)

    def test_timeout(self):
        with Mock("canary", hang=True) as canary:
            t0 = time.monotonic()
            self._check_reason("timeout", canary, upstreams={CANARY: {"timeout": "300ms"}})
            report(f"timeout fallback: 3 requests with a 300ms canary timeout took {time.monotonic() - t0:.2f}s "
                   "including start/stop")

    def test_429(self):
        with Mock("canary", status=429) as canary:
            self._check_reason("429", canary)

    def test_5xx(self):
        with Mock("canary", status=502) as canary:
            self._check_reason("5xx", canary)

    def test_reason_not_listed_is_not_fallen_back(self):
        # fallback.on without 429: the client gets the canary's 429 as is.
        with Mock("canary", status=429) as canary:
            cfg = all_on_canary(self.control.base_url, canary.base_url, {"enabled": True, "on": ["5xx"]})
            with Canaryd(cfg, env=ADMIN_ENV) as c:
                self.control.reset()
                status, headers, body = http("POST", c.url + "/v1/chat/completions", chat_body(), {"X-User-ID": "u"})
                self.assertEqual(status, 429)
                self.assertIsNone(headers.get("X-Canaryd-Fallback"))
                self.assertEqual(headers.get("X-Canaryd-Arm"), "canary")
                self.assertEqual(json.loads(body)["error"]["code"], "rate_limit_exceeded")
                self.assertEqual(self.control.stats()["requests"], 0)
                self.assertEqual(fallbacks(c), {})


class RenameTest(unittest.TestCase):
    def test_fallback_models_rename_reaches_control(self):
        with Mock("control") as control, Mock("canary", status=500) as canary:
            cfg = all_on_canary(control.base_url, canary.base_url,
                                {"enabled": True, "models": {"gpt-4.1": "gemini-2.5-flash"}})
            with Canaryd(cfg, env=ADMIN_ENV) as c:
                conn = connect(c)
                try:
                    status, headers, body = chat(conn, model="gpt-4.1")
                    self.assertEqual(status, 200, body[:300])
                    self.assertEqual(headers.get("X-Canaryd-Fallback"), "5xx")
                    self.assertEqual(headers.get("X-Canaryd-Arm"), "control")
                    # The canary was asked for the model the client named; control for the rename.
                    self.assertEqual(json.loads(canary.stats()["last_body"])["model"], "gpt-4.1")
                    self.assertEqual(json.loads(control.stats()["last_body"])["model"], "gemini-2.5-flash")
                    self.assertEqual(json.loads(body)["model"], "gemini-2.5-flash")

                    # A model not in fallback.models reaches control unchanged.
                    status, headers, _ = chat(conn, model="gpt-4o-mini")
                    self.assertEqual(status, 200)
                    self.assertEqual(headers.get("X-Canaryd-Fallback"), "5xx")
                    self.assertEqual(json.loads(control.stats()["last_body"])["model"], "gpt-4o-mini")
                finally:
                    conn.close()
                self.assertEqual(fallbacks(c), {(CANARY, CONTROL, "5xx"): 2.0})


class BudgetTest(unittest.TestCase):
    def test_over_budget_the_client_gets_the_canarys_error(self):
        # budget 0.2 of every request in the analysis window (both arms), then a
        # floor of 10 (+5/s). 100 forced-control requests first: the ratio allows
        # fallbacks while f < 0.2 x (100 + 2f) (each fallback adds a canary and a
        # control attempt), i.e. 34 of them; then the floor's 10 (+ 5/s refill).
        with Mock("control") as control, Mock("canary", status=503) as canary:
            cfg = all_on_canary(control.base_url, canary.base_url, {"enabled": True, "budget": 0.2})
            with Canaryd(cfg, env=ADMIN_ENV) as c:
                conn = connect(c)
                try:
                    for _ in range(100):
                        status, headers, _ = chat(conn, headers={"X-Canary": "control"})
                        self.assertEqual(status, 200)
                    self.assertEqual(admin(c)["arms"]["control"]["requests"], 100)
                    fell_back = 0
                    last = None
                    t0 = time.monotonic()
                    for _ in range(200):
                        status, headers, body = chat(conn)
                        if not headers.get("X-Canaryd-Fallback"):
                            last = (status, headers, body)
                            break
                        self.assertEqual(status, 200)
                        self.assertEqual(headers.get("X-Canaryd-Fallback"), "5xx")
                        fell_back += 1
                    elapsed = time.monotonic() - t0
                finally:
                    conn.close()
                self.assertIsNotNone(last, "the budget never ran out")
                status, headers, body = last
                # The canary's own error, passed through: its status and body, no fallback header.
                self.assertEqual(status, 503)
                self.assertEqual(headers.get("X-Canaryd-Arm"), "canary")
                self.assertEqual(headers.get("X-Canaryd-Provider"), CANARY)
                self.assertIsNone(headers.get("X-Canaryd-Fallback"))
                err = json.loads(body)
                self.assertEqual(err["mock_name"], "canary")
                self.assertEqual(err["error"]["code"], "service_unavailable")
                report(f"budget 0.2 after 100 control requests: {fell_back} fallbacks in {elapsed:.3f}s "
                       f"(34 by the ratio + the floor's 10 + 5/s)")
                self.assertGreaterEqual(fell_back, 34 + 10)
                self.assertLessEqual(fell_back, 34 + 10 + int(5 * elapsed) + 1)
                self.assertEqual(fallbacks(c), {(CANARY, CONTROL, "5xx"): float(fell_back)})
                self.assertEqual(control.stats()["requests"], 100 + fell_back)
                self.assertEqual(canary.stats()["requests"], fell_back + 1)


class ForcedTest(unittest.TestCase):
    def test_forced_canary_is_never_fallen_back(self):
        with Mock("control") as control, Mock("canary", status=500) as canary:
            cfg = all_on_canary(control.base_url, canary.base_url, {"enabled": True})
            with Canaryd(cfg, env=ADMIN_ENV) as c:
                conn = connect(c)
                try:
                    for _ in range(5):
                        status, headers, body = chat(conn, headers={"X-Canary": "canary"})
                        self.assertEqual(status, 500)
                        self.assertEqual(headers.get("X-Canaryd-Arm"), "canary")
                        self.assertIsNone(headers.get("X-Canaryd-Fallback"))
                        self.assertEqual(json.loads(body)["mock_name"], "canary")
                    # The same request unforced does fall back: the budget was not the reason.
                    status, headers, _ = chat(conn)
                    self.assertEqual(status, 200)
                    self.assertEqual(headers.get("X-Canaryd-Fallback"), "5xx")
                finally:
                    conn.close()
                self.assertEqual(canary.stats()["requests"], 6)
                self.assertEqual(control.stats()["requests"], 1)
                self.assertEqual(fallbacks(c), {(CANARY, CONTROL, "5xx"): 1.0})


if __name__ == "__main__":
    unittest.main()
