"""Shadow mode against real mock upstreams: control answers every client, a
copy goes to the canary in the background, each pair is compared into
metrics, a log line and the report; the caps (rate, in flight, aborted
rollout) hold, and prompts reach only the opt-in bodies file."""

import json
import os
import tempfile
import time
import unittest

import harness
from harness import Canaryd, Mock, base_config, chat_body, http, http_json, metric_samples, stream, wait_until

CONTROL_KEY = harness.DEFAULT_ENV["CANARYD_IT_CONTROL_KEY"]
CANARY_KEY = harness.DEFAULT_ENV["CANARYD_IT_CANARY_KEY"]
ADMIN = "shadow-admin-token"
PROMPT = "the secret prompt text 7f3a"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def shadow_config(control, canary_url, **shadow):
    sh = {"enabled": True, "percent": 100, "max_per_second": 1000, "max_in_flight": 64}
    sh.update(shadow)
    return base_config(
        control.base_url, canary_url,
        server={"admin_token_env": "CANARYD_IT_ADMIN"},
        upstreams={"cny": {"models": {"gpt-4.1": "gpt-4.1-mini"}}},
        pricing={"gpt-4.1": {"input": 8.0, "output": 32.0}, "gpt-4.1-mini": {"input": 0.4, "output": 1.6}},
        shadow=sh)


def report(cd):
    status, _, body = http_json("GET", cd.url + "/admin/report", headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 200, body
    return body["shadow"]


def metric(cd, name, **labels):
    _, _, text = http("GET", cd.url + "/metrics")
    return sum(v for l, v in metric_samples(text.decode(), name) if all(l.get(k) == w for k, w in labels.items()))


def shadow_lines(cd, expect=None):
    """The {"type":"shadow"} log lines; with `expect`, waits until that many are out (the log is
    written by spdlog's async thread, a moment after the pair is counted)."""
    if expect is not None:
        wait_until(lambda: len([l for l in cd.log_lines() if l.get("type") == "shadow"]) >= expect, 10,
                   message=f"{expect} shadow log lines")
    return [l for l in cd.log_lines() if l.get("type") == "shadow"]


def post_chat(cd, body, headers=None):
    status, h, raw = http("POST", cd.url + "/v1/chat/completions", body, headers)
    return status, h, raw


class ShadowComparisonTest(unittest.TestCase):
    def test_control_answers_canary_is_mirrored_and_compared(self):
        with Mock("control", require_key=CONTROL_KEY) as control, \
                Mock("canary", require_key=CANARY_KEY) as canary, \
                Canaryd(shadow_config(control, canary.base_url), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            for i in range(4):
                status, h, raw = post_chat(cd, chat_body("gpt-4.1", PROMPT, user=f"u{i}"))
                self.assertEqual(status, 200, raw)
                self.assertEqual(h.get("X-Canaryd-Arm"), "control")
                self.assertEqual(json.loads(raw)["mock_name"], "control", "the client gets control's answer only")
            status, _, raw = post_chat(cd, chat_body("gpt-4.1", PROMPT, tools=TOOLS))
            self.assertEqual(status, 200, raw)
            res = stream(cd.url + "/v1/chat/completions",
                         chat_body("gpt-4.1", PROMPT, stream=True, stream_options={"include_usage": True}))
            self.assertTrue(res.done, "the client's stream ends normally")
            sent = 6

            wait_until(lambda: report(cd)["pairs"] == sent, 10, message="every pair compared")
            r = report(cd)
            self.assertEqual(r["results"]["both_succeeded"], sent, r)
            self.assertEqual(r["in_flight"], 0)
            self.assertEqual(r["match_rates"]["status"], 1.0)
            self.assertEqual(r["match_rates"]["finish_reason"], 1.0)
            self.assertEqual(r["match_rates"]["tool_names"], 1.0)
            self.assertEqual(r["match_rates"]["shadow_json_valid"], 1.0)
            self.assertEqual(r["match_rates"]["tool_arguments_valid"], 1.0)
            self.assertAlmostEqual(r["length_ratio_mean"], 1.0)
            # The canary model is 20x cheaper for the same tokens: a negative delta.
            self.assertEqual(r["tokens"]["control"], r["tokens"]["canary"])
            self.assertLess(r["cost_usd"]["canary"], r["cost_usd"]["control"])
            self.assertAlmostEqual(r["cost_usd"]["delta"], r["cost_usd"]["canary"] - r["cost_usd"]["control"])
            self.assertAlmostEqual(r["cost_delta_percent"], -95.0, places=6)

            # The canary really got each request, with its own key and its model rename.
            st = canary.stats()
            self.assertEqual(st["requests"], sent)
            self.assertEqual(st["last_headers"]["authorization"], f"Bearer {CANARY_KEY}")
            last = json.loads(st["last_body"])
            self.assertEqual(last["model"], "gpt-4.1-mini")
            self.assertTrue(last["stream"], "a streamed request is shadowed as a stream")
            self.assertEqual(control.stats()["requests"], sent)

            # Metrics.
            self.assertEqual(metric(cd, "ai_proxy_shadow_requests_total", result="both_succeeded"), sent)
            self.assertEqual(metric(cd, "ai_proxy_shadow_latency_delta_seconds_count"), sent)
            less = metric(cd, "ai_proxy_shadow_cost_delta_usd_total", direction="canary_less")
            self.assertAlmostEqual(less, -r["cost_usd"]["delta"], places=9)
            self.assertEqual(metric(cd, "ai_proxy_shadow_cost_delta_usd_total", direction="canary_more"), 0)
            # The shadow calls are not client requests: ai_proxy_requests_total counts control only.
            self.assertEqual(metric(cd, "ai_proxy_requests_total", provider="cny"), 0)

            # One log line per comparison, without the prompt or the answers.
            lines = shadow_lines(cd, sent)
            self.assertEqual(len(lines), sent)
            for l in lines:
                self.assertEqual(l["result"], "both_succeeded")
                self.assertEqual(l["control_model"], "gpt-4.1")
                self.assertEqual(l["shadow_model"], "gpt-4.1-mini")
                self.assertTrue(l["finish_reason_equal"])
                self.assertTrue(l["tool_names_equal"])
                self.assertLess(l["cost_delta_usd"], 0)
            self.assertEqual(sum(1 for l in lines if l["stream"]), 1)
            self.assertEqual({l["control_finish_reason"] for l in lines}, {"stop", "tool_calls"})
            self.assertNotIn(PROMPT, cd.logs())
            self.assertNotIn("mock response", cd.logs())

    def test_client_never_waits_for_the_shadow(self):
        with Mock("control") as control, Mock("canary", latency=3000) as canary, \
                Canaryd(shadow_config(control, canary.base_url), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            status, _, raw = post_chat(cd, chat_body("gpt-4.1", "hi"))
            self.assertEqual(status, 200, raw)
            # The answer is here while the shadow still waits on the slow canary.
            r = report(cd)
            self.assertEqual(r["pairs"], 0, r)
            self.assertEqual(r["in_flight"], 1, r)
            wait_until(lambda: report(cd)["pairs"] == 1, 15, message="the slow shadow compared")
            r = report(cd)
            self.assertGreater(r["latency_delta_seconds"]["mean"], 2.5, "the canary was 3 s slower")

    def test_status_differs_and_malformed_answers(self):
        with Mock("control") as control, Mock("canary", status=400) as canary, \
                Canaryd(shadow_config(control, canary.base_url), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            post_chat(cd, chat_body("gpt-4.1", "hi"))
            wait_until(lambda: report(cd)["pairs"] == 1, 10)
            self.assertEqual(report(cd)["results"]["status_differs"], 1)
            self.assertEqual(shadow_lines(cd, 1)[0]["shadow_status"], 400)
        with Mock("control") as control, Mock("canary", malformed=True) as canary, \
                Canaryd(shadow_config(control, canary.base_url), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            post_chat(cd, chat_body("gpt-4.1", "hi"))
            wait_until(lambda: report(cd)["pairs"] == 1, 10)
            r = report(cd)
            self.assertEqual(r["results"]["both_succeeded"], 1)
            self.assertEqual(r["match_rates"]["shadow_json_valid"], 0.0)
            self.assertFalse(shadow_lines(cd, 1)[0]["shadow_json_valid"])

    def test_unreachable_canary_is_shadow_failed_and_the_client_is_unaffected(self):
        with Mock("control") as control, \
                Canaryd(shadow_config(control, None), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            for _ in range(3):
                status, _, raw = post_chat(cd, chat_body("gpt-4.1", "hi"))
                self.assertEqual(status, 200, raw)
            wait_until(lambda: report(cd)["pairs"] == 3, 10)
            self.assertEqual(report(cd)["results"]["shadow_failed"], 3)
            self.assertEqual(metric(cd, "ai_proxy_shadow_requests_total", result="shadow_failed"), 3)
            self.assertEqual({l["shadow_error"] for l in shadow_lines(cd, 3)}, {"connect_error"})


class ShadowBoundsTest(unittest.TestCase):
    def test_in_flight_cap(self):
        # A canary that never answers holds its shadows in flight: beyond the cap, none is sent.
        with Mock("control") as control, Mock("canary", hang=True) as canary, \
                Canaryd(shadow_config(control, canary.base_url, max_in_flight=2), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            for _ in range(6):
                status, _, _ = post_chat(cd, chat_body("gpt-4.1", "hi"))
                self.assertEqual(status, 200)
            r = report(cd)
            self.assertEqual(r["in_flight"], 2, r)
            self.assertEqual(r["skipped"]["in_flight"], 4, r)
            self.assertEqual(metric(cd, "ai_proxy_shadow_dropped_total", reason="in_flight"), 4)
            wait_until(lambda: canary.stats()["requests"] == 2, 5, message="two shadows reached the canary")
            # canaryd still stops cleanly (exit 0 in __exit__) with shadows in flight.

    def test_rate_cap(self):
        with Mock("control") as control, Mock("canary") as canary, \
                Canaryd(shadow_config(control, canary.base_url, max_per_second=1), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            t0 = time.monotonic()
            for _ in range(10):
                post_chat(cd, chat_body("gpt-4.1", "hi"))
            elapsed = time.monotonic() - t0
            r = report(cd)
            admitted = 10 - r["skipped"]["rate"]
            # A bucket of one token, refilled at 1/s.
            self.assertGreaterEqual(admitted, 1)
            self.assertLessEqual(admitted, 1 + int(elapsed) + 1, (admitted, elapsed))
            wait_until(lambda: report(cd)["pairs"] == admitted, 10)
            self.assertEqual(canary.stats()["requests"], admitted)

    def test_percent_samples_and_off_sends_nothing(self):
        with Mock("control") as control, Mock("canary") as canary, \
                Canaryd(shadow_config(control, canary.base_url, percent=20), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            n = 300
            for _ in range(n):
                post_chat(cd, chat_body("gpt-4.1", "hi"))
            wait_until(lambda: report(cd)["in_flight"] == 0, 10)
            pairs = report(cd)["pairs"]
            # Binomial(300, 0.2): mean 60, sd 6.9; 30..90 is beyond 4 sd.
            self.assertGreater(pairs, 30)
            self.assertLess(pairs, 90)
            self.assertEqual(canary.stats()["requests"], pairs)
        with Mock("control") as control, Mock("canary") as canary, \
                Canaryd(base_config(control.base_url, canary.base_url)) as cd:
            for _ in range(5):
                post_chat(cd, chat_body("gpt-4.1", "hi"))
            self.assertEqual(canary.stats()["requests"], 0, "shadow mode is off by default")

    def test_aborted_rollout_sends_no_shadow(self):
        with Mock("control") as control, Mock("canary") as canary, \
                Canaryd(shadow_config(control, canary.base_url), env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
            status, _, body = http_json("POST", cd.url + "/admin/rollout/abort", {},
                                     headers={"Authorization": f"Bearer {ADMIN}"})
            self.assertEqual(status, 200, body)
            for _ in range(3):
                post_chat(cd, chat_body("gpt-4.1", "hi"))
            r = report(cd)
            self.assertEqual(r["skipped"]["rolled_back"], 3, r)
            self.assertEqual(r["pairs"], 0)
            self.assertEqual(canary.stats()["requests"], 0)

    def test_log_bodies_go_only_to_their_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "shadow-bodies.jsonl")
            with Mock("control") as control, Mock("canary") as canary, \
                    Canaryd(shadow_config(control, canary.base_url, log_bodies=True, bodies_file=path),
                            env={"CANARYD_IT_ADMIN": ADMIN}) as cd:
                post_chat(cd, chat_body("gpt-4.1", PROMPT))
                stream(cd.url + "/v1/chat/completions", chat_body("gpt-4.1", PROMPT, stream=True))

                def lines():
                    with open(path) as f:
                        return [json.loads(x) for x in f if x.strip()]
                wait_until(lambda: len(lines()) == 2, 10, message="two lines in the bodies file")
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
                whole, streamed = sorted(lines(), key=lambda b: b["comparison"]["stream"])
                self.assertEqual(whole["request"]["messages"][0]["content"], PROMPT)
                self.assertEqual(whole["control"]["answer"]["mock_name"], "control")
                self.assertEqual(whole["shadow"]["answer"]["mock_name"], "canary")
                self.assertEqual(whole["shadow"]["answer"]["model"], "gpt-4.1-mini")
                self.assertIn("chat.completion.chunk", streamed["shadow"]["answer"])
                self.assertIn("chat.completion.chunk", streamed["control"]["answer"])
                self.assertNotIn(PROMPT, cd.logs())


if __name__ == "__main__":
    unittest.main()
