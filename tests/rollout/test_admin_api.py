"""The admin API (SPEC §6) on the real canaryd: off (403) without an admin
token, 401 without the right one, 400 for a bad weight, and every verb
(pause, resume, promote, abort, retry, weight) changes GET /admin/rollout as
docs/rollout.md says, with exactly one JSON "rollout transition" log line
each (and none for a verb that changes nothing or is refused)."""

from __future__ import annotations

import signal
import unittest

from harness import Canaryd, Mock, deep_merge, http_json, wait_until
from rollout_helpers import ADMIN_ENV, ADMIN_TOKEN, admin, rollout_config, transitions

STEPS = [{"weight": 10, "pause": "10m"}, {"weight": 100, "pause": "0"}]


def config(control_url: str, canary_url: str) -> dict:
    # min_requests out of reach: every tick is "insufficient", so only the
    # verbs below ever move the state.
    return rollout_config(control_url, canary_url, steps=STEPS, analysis={"min_requests": 1000000})


def call(c: Canaryd, method: str, path: str, body=None, token=ADMIN_TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http_json(method, c.url + path, body, headers, timeout=5)


class AdminOffTest(unittest.TestCase):
    def test_off_without_admin_token_env(self):
        with Mock("control") as control, Mock("canary") as canary:
            cfg = deep_merge(config(control.base_url, canary.base_url), {"server": {"admin_token_env": None}})
            with Canaryd(cfg, env=ADMIN_ENV) as c:
                for method, path in (("GET", "/admin/rollout"), ("POST", "/admin/rollout/abort"),
                                     ("GET", "/admin/verdict")):
                    status, _, doc = call(c, method, path, {} if method == "POST" else None)
                    self.assertEqual(status, 403, doc)
                    self.assertEqual(doc["error"]["code"], "forbidden")
                    self.assertIn("admin_token_env", doc["error"]["message"])

    def test_off_when_the_variable_is_unset(self):
        with Mock("control") as control, Mock("canary") as canary:
            with Canaryd(config(control.base_url, canary.base_url)) as c:  # CANARYD_IT_ADMIN_TOKEN not set
                status, _, doc = call(c, "GET", "/admin/rollout")
                self.assertEqual(status, 403, doc)


class AdminApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control"))
        cls.canary = cls.enterClassContext(Mock("canary"))

    def test_auth_and_bad_weights_change_nothing(self):
        with Canaryd(config(self.control.base_url, self.canary.base_url), env=ADMIN_ENV) as c:
            before = admin(c)
            self.assertEqual((before["state"], before["weight"], before["version"]), ("progressing", 10, 0))
            for token in (None, "wrong-token", ADMIN_TOKEN + "x", ""):
                for method, path in (("GET", "/admin/rollout"), ("POST", "/admin/rollout/abort"),
                                     ("GET", "/admin/verdict")):
                    status, _, doc = call(c, method, path, {} if method == "POST" else None, token=token)
                    self.assertEqual(status, 401, (token, path, doc))
                    self.assertEqual(doc["error"]["type"], "authentication_error", doc)
            # Raw text too: a duplicate key (parsers disagree on which copy wins), a weight that
            # underflows to 0 or a subnormal (a rollback nobody typed), one that overflows.
            for body in ({"weight": 150}, {"weight": -1}, {"weight": "abc"}, {"weight": None}, {"w": 5},
                         "not json", [25], {"weight": 12.345}, '{"weight":10,"weight":90}', '{"weight":1e-400}',
                         '{"weight":4e-320}', '{"weight":1e400}', '{"weight":NaN}', '{"weight":10} x'):
                status, _, doc = call(c, "POST", "/admin/rollout/weight", body)
                self.assertEqual(status, 400, (body, doc))
                self.assertEqual(doc["error"]["type"], "invalid_request_error", doc)
            status, _, doc = call(c, "POST", "/admin/rollout/weight", {"weight": 150})
            self.assertIn("100", doc["error"]["message"])
            after = admin(c)
            self.assertEqual((after["state"], after["weight"], after["version"], after["epoch"]),
                             ("progressing", 10, 0, 0))
            # No transition was logged: a reload's line marks that everything before it is out.
            c.signal(signal.SIGHUP)
            c.wait_log(lambda l: l.get("msg") == "config reloaded", 10, "config reloaded")
            self.assertEqual(transitions(c), [])

    def test_verdict_endpoint_is_the_last_verdict(self):
        # GET /admin/verdict (issue 14, Argo Rollouts' Web provider): the same
        # object as GET /admin/rollout's "verdict", every check listed.
        with Canaryd(config(self.control.base_url, self.canary.base_url), env=ADMIN_ENV) as c:
            def judged():
                status, _, doc = call(c, "GET", "/admin/verdict")
                self.assertEqual(status, 200, doc)
                self.assertIn(doc["kind"], ("pass", "fail", "inconclusive"), doc)
                return doc if doc.get("checks") else None
            v = wait_until(judged, 10, 0.1, "a verdict with its checks")
            # min_requests is out of reach: inconclusive, never failing for lack of data.
            self.assertEqual(v["kind"], "inconclusive", v)
            self.assertTrue(v["reason"].startswith("insufficient data: "), v)
            names = [ch["name"] for ch in v["checks"]]
            self.assertEqual(names[:4], ["error_rate", "critical_error_rate", "duration", "ttfb"], names)
            self.assertNotIn("fail", [ch["outcome"] for ch in v["checks"]], v)
            self.assertEqual(admin(c)["verdict"]["kind"], "inconclusive")
            status, _, doc = call(c, "POST", "/admin/verdict", {})
            self.assertEqual(status, 405, doc)

    def test_each_verb_changes_the_status_and_logs_one_transition(self):
        with Canaryd(config(self.control.base_url, self.canary.base_url), env=ADMIN_ENV) as c:
            st = admin(c)
            self.assertEqual((st["state"], st["step"], st["weight"], st["version"], st["epoch"]),
                             ("progressing", 0, 10, 0, 0))
            # verb, body, expected (state, step, weight, epoch), reason, transition cause
            plan = [
                ("pause", None, ("paused", 0, 10, 0), "paused by operator", "operator"),
                ("resume", None, ("progressing", 0, 10, 0), "resumed by operator", "operator"),
                ("promote", None, ("progressing", 1, 100, 0), "promoted by operator", "operator"),
                ("promote", None, ("promoted", 1, 100, 0), "promoted by operator", "operator"),
                ("abort", None, ("aborted", 1, 0, 1), "aborted by operator", "manual"),
                ("retry", None, ("progressing", 0, 10, 2), "retried by operator", "operator"),
                ("weight", {"weight": 33}, ("paused", 0, 33, 2), "weight set to 33 by operator", "operator"),
            ]
            prev_state = "progressing"
            for n, (verb, body, (state, step, weight, epoch), reason, cause) in enumerate(plan, start=1):
                answer = admin(c, verb, body)
                shown = admin(c)
                for doc in (answer, shown):
                    self.assertEqual((doc["state"], doc["step"], doc["weight"], doc["epoch"]),
                                     (state, step, weight, epoch), (verb, doc))
                    self.assertEqual(doc["reason"], reason)
                    self.assertEqual(doc["version"], n)
                    self.assertIn("arms", doc)
                lines = wait_until(lambda: (lambda ts: ts if len(ts) >= n else None)(transitions(c)), 5, 0.05,
                                   f"transition line for {verb}")
                self.assertEqual(len(lines), n, lines)
                t = lines[-1]
                self.assertEqual((t["from"], t["to"], t["step"], t["weight"], t["reason"], t["cause"],
                                  t["version"], t["epoch"]),
                                 (prev_state, state, step, weight, reason, cause, n, epoch), t)
                self.assertEqual(t["level"], "info")
                prev_state = state

            # A verb with nothing to do answers the status and logs nothing.
            for verb in ("pause", "retry"):
                doc = admin(c, verb)
                self.assertEqual((doc["state"], doc["version"]), ("paused", len(plan)), (verb, doc))
            status, _, doc = call(c, "POST", "/admin/rollout/resume_now", {})
            self.assertEqual(status, 404, doc)
            status, _, doc = call(c, "GET", "/admin/rollout/pause")
            self.assertEqual(status, 405, doc)
            c.signal(signal.SIGHUP)
            c.wait_log(lambda l: l.get("msg") == "config reloaded", 10, "config reloaded")
            self.assertEqual(len(transitions(c)), len(plan), transitions(c))


if __name__ == "__main__":
    unittest.main()
