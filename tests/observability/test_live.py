"""Observability of the running binary (no Prometheus server): the SPEC §7
families on the live /metrics, `promtool check metrics` on it, bounded labels
under 1000 random model names, exact counters under many client threads,
overhead without the upstream's time (fallbacks too), the rollout families on a
failing canary, /health, /admin/report and `canaryd ctl report`, the access log
(fields, never a key or a prompt at info and debug, never blocking a request
when stdout is stuck), --log-level, and what a SIGHUP reload does to the metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import string
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from obs_helpers import (ADMIN_TOKEN, CANARY, CONTROL, PRICING, PROMTOOL_BIN, SPEC_METRICS, UPSTREAM_KEYS,
                         admin_headers, obs_config, obs_env, parse_exposition, scrape, series, total)

MONTH = 30 * 24 * 3600


def cost(model: str, prompt: int, completion: int) -> float:
    p = PRICING[model]
    return prompt / 1e6 * p["input"] + completion / 1e6 * p["output"]


def chat(url: str, arm: str | None = None, model: str = "gpt-4.1", content: str = "hi", headers=None, **extra):
    h = dict(headers or {})
    if arm:
        h["X-Canary"] = arm
    return harness.http("POST", url + "/v1/chat/completions", harness.chat_body(model, content, **extra), h)


class LiveMetricsTest(unittest.TestCase):
    def test_spec_families_types_labels_and_promtool(self):
        # 100 ms of upstream latency: an overhead that counted it would show.
        with harness.Mock(CONTROL, latency=100) as ctl, harness.Mock(CANARY, latency=100) as cny:
            with harness.Canaryd(obs_config(ctl.base_url, cny.base_url), env=obs_env()) as c:
                for arm in ("control", "canary"):
                    status, _, _ = chat(c.url, arm)
                    self.assertEqual(status, 200)
                r = harness.stream(c.url + "/v1/chat/completions",
                                   harness.chat_body(stream=True, stream_options={"include_usage": True}))
                self.assertEqual(r.status, 200)
                self.assertTrue(r.done)
                text = harness.wait_until(
                    lambda: (t := scrape(c)) and total(parse_exposition(t)[1], "ai_proxy_requests_total") == 3 and t,
                    5, message="3 requests accounted")
                types, samples = parse_exposition(text)
                for name, (typ, labels) in SPEC_METRICS.items():
                    self.assertEqual(types.get(name), typ, name)
                    if typ == "histogram":
                        buckets = series(samples, name + "_bucket")
                        self.assertTrue(buckets, name)
                        for l, _ in buckets:
                            self.assertEqual(set(l), labels | {"le"}, name)
                        for suffix in ("_sum", "_count"):
                            for l, _ in series(samples, name + suffix):
                                self.assertEqual(set(l), labels, name + suffix)
                    else:
                        found = series(samples, name)
                        self.assertTrue(found, name)
                        for l, _ in found:
                            self.assertEqual(set(l), labels, name)
                for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds",
                             "process_open_fds"):
                    self.assertIn(name, types, name)
                    self.assertGreater(total(samples, name), 0, name)
                # provider only takes the upstream names
                providers = {l["provider"] for n, l, _ in samples if "provider" in l}
                self.assertEqual(providers, {CONTROL, CANARY})
                self.assertEqual(total(samples, "ai_proxy_requests_total", provider=CANARY, status="success"), 1)
                self.assertEqual(total(samples, "ai_proxy_requests_total", provider=CONTROL, status="success"), 2)
                self.assertEqual(total(samples, "ai_proxy_tokens_total", type="prompt"), 30)
                self.assertEqual(total(samples, "ai_proxy_tokens_total", type="completion"), 60)
                self.assertAlmostEqual(total(samples, "ai_proxy_cost_usd_total"), 3 * cost("gpt-4.1", 10, 20), places=9)
                self.assertEqual(total(samples, "ai_proxy_time_to_first_byte_seconds_count"), 3)
                # overhead: one observation per relayed request, time in canaryd only
                n = total(samples, "ai_proxy_overhead_seconds_count")
                self.assertEqual(n, 3)
                self.assertGreater(total(samples, "ai_proxy_overhead_seconds_sum"), 0)
                self.assertLess(total(samples, "ai_proxy_overhead_seconds_sum") / n, 0.05)
                self.assertGreaterEqual(total(samples, "ai_proxy_request_duration_seconds_sum") / 3, 0.1)
                self.assertEqual(total(samples, "ai_proxy_inflight_requests"), 0)
                self.assertEqual(types.get("ai_proxy_log_dropped_total"), "counter")
                self.assertEqual(total(samples, "ai_proxy_log_dropped_total"), 0)

                with tempfile.NamedTemporaryFile("w", suffix=".prom") as f:
                    f.write(text)
                    f.flush()
                    with open(f.name) as stdin:
                        p = subprocess.run([PROMTOOL_BIN, "check", "metrics"], stdin=stdin, capture_output=True,
                                           text=True, timeout=60)
                print("promtool check metrics:", p.returncode, p.stdout, p.stderr)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertEqual((p.stdout + p.stderr).strip(), "", "no lint findings")

    def test_overhead_leaves_out_a_failed_canary_call(self):
        # Every user on the canary, which answers 500 after 200 ms; each call
        # falls back to control. Overhead must not include those 200 ms.
        n = 5
        with harness.Mock(CONTROL) as ctl, harness.Mock(CANARY, latency=200, status=500) as cny:
            cfg = obs_config(ctl.base_url, cny.base_url,
                             rollout={"steps": [{"weight": 100}], "analysis": {"min_requests": 100000}},
                             fallback={"enabled": True, "on": ["5xx"], "budget": 1.0})
            with harness.Canaryd(cfg, env=obs_env()) as c:
                for i in range(n):
                    status, hdrs, _ = chat(c.url, headers={"X-User-ID": f"u{i}"})
                    self.assertEqual(status, 200)
                    self.assertEqual(hdrs.get("X-Canaryd-Fallback"), "5xx")
                text = harness.wait_until(
                    lambda: (t := scrape(c)) and total(parse_exposition(t)[1], "ai_proxy_overhead_seconds_count") == n
                    and t, 5, message=f"{n} overhead observations")
                _, s = parse_exposition(text)
                self.assertEqual(total(s, "ai_proxy_requests_total", provider=CANARY, status="error"), n)
                self.assertEqual(total(s, "ai_proxy_requests_total", provider=CONTROL, status="success"), n)
                self.assertGreaterEqual(total(s, "ai_proxy_request_duration_seconds_sum", provider=CANARY), n * 0.2)
                overhead = total(s, "ai_proxy_overhead_seconds_sum") / n
                print(f"[measured] overhead per fallen-back request: {overhead * 1000:.3f} ms")
                self.assertLess(overhead, 0.05)
                self.assertGreater(overhead, 0)
                c.stop()
                lines = [l for l in c.log_lines() if l.get("type") == "access"]
                self.assertEqual(len(lines), n)
                for line in lines:
                    self.assertEqual(line["fallback"], "5xx")
                    self.assertGreaterEqual(line["latency_ms"], 200)
                    self.assertLess(line["overhead_ms"], 50, line)

    def test_rollout_families_on_a_failing_canary_and_a_timeout(self):
        with harness.Mock(CONTROL) as ctl, harness.Mock(CANARY, status=500) as cny:
            cfg = obs_config(ctl.base_url, cny.base_url,
                             upstreams={CONTROL: {"timeout": "300ms"}},
                             rollout={"steps": [{"weight": 100, "pause": "10m"}],
                                      "analysis": {"min_requests": 5, "interval": "200ms", "window": "1m"},
                                      "on_failure": "rollback"},
                             fallback={"enabled": True, "on": ["5xx"], "budget": 1.0})
            with harness.Canaryd(cfg, env=obs_env()) as c:
                _, before = parse_exposition(scrape(c))
                self.assertEqual(total(before, "ai_proxy_canary_weight"), 100)
                self.assertEqual(total(before, "ai_proxy_rollout_state", state="progressing"), 1)
                for i in range(8):
                    status, hdrs, _ = chat(c.url, headers={"X-User-ID": f"u{i}"})
                    self.assertEqual(status, 200)

                def rolled_back():
                    _, s = parse_exposition(scrape(c))
                    return total(s, "ai_proxy_rollbacks_total", reason="error_rate") == 1 and s

                s = harness.wait_until(rolled_back, 10, interval=0.1, message="rollbacks_total{reason=error_rate} 1")
                self.assertGreater(total(s, "ai_proxy_fallbacks_total", reason="5xx"), 0)
                self.assertEqual(total(s, "ai_proxy_fallbacks_total", reason="5xx"),
                                 total(s, "ai_proxy_fallbacks_total", **{"from": CANARY, "to": CONTROL}))
                self.assertEqual(total(s, "ai_proxy_rollbacks_total"), 1)
                self.assertEqual(total(s, "ai_proxy_rollout_state", state="aborted"), 1)
                self.assertEqual(total(s, "ai_proxy_rollout_state"), 1, "exactly one state is 1")
                self.assertEqual(total(s, "ai_proxy_canary_weight"), 0)
                self.assertEqual(total(s, "ai_proxy_requests_total", status="timeout"), 0)

                # After the rollback everyone is on control; a control call that hangs past its timeout.
                status, _, _ = chat(c.url, headers={"X-Mock-Hang": "1"})
                self.assertEqual(status, 504)
                text = harness.wait_until(
                    lambda: (t := scrape(c)) and total(parse_exposition(t)[1], "ai_proxy_requests_total",
                                                       status="timeout") == 1 and t,
                    5, message="one timeout counted")
                _, s = parse_exposition(text)
                self.assertEqual(total(s, "ai_proxy_requests_total", provider=CONTROL, status="timeout"), 1)

    def test_1000_random_model_names_keep_series_bounded(self):
        with harness.Mock(CONTROL) as ctl, harness.Mock(CANARY) as cny:
            with harness.Canaryd(obs_config(ctl.base_url, cny.base_url), env=obs_env()) as c:
                before_types, before = parse_exposition(scrape(c))
                rng = random.Random(1000)
                names = {"m-" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=12)) for _ in range(1000)}
                self.assertEqual(len(names), 1000)
                conn = http.client.HTTPConnection(harness.LOOPBACK, c.port, timeout=10)
                try:
                    for i, name in enumerate(sorted(names)):
                        status, _, _ = harness.request_on(conn, "POST", "/v1/chat/completions",
                                                          harness.chat_body(name),
                                                          {"X-Canary": "canary" if i % 2 else "control"})
                        self.assertEqual(status, 200)
                finally:
                    conn.close()
                text = harness.wait_until(
                    lambda: (t := scrape(c)) and total(parse_exposition(t)[1], "ai_proxy_requests_total") == 1000 and t,
                    5, message="1000 requests accounted")
                _, after = parse_exposition(text)
                for name in names:
                    self.assertNotIn(name, text)

                def count(samples, family):
                    return len({(n, tuple(sorted(l.items()))) for n, l, _ in samples if n.startswith(family)})

                known_models = {l["model"] for n, l, _ in after if "model" in l}
                self.assertEqual(known_models, {"gpt-4.1", "deepseek-v3.2", "other"})
                for family in ("ai_proxy_requests_total", "ai_proxy_request_duration_seconds",
                               "ai_proxy_time_to_first_byte_seconds", "ai_proxy_tokens_total", "ai_proxy_cost_usd_total"):
                    self.assertEqual(count(after, family), count(before, family), family)
                self.assertEqual(count(after, "ai_proxy_requests_total"), 2 * 3 * 3)  # providers x models x status
                self.assertEqual(len(after), len(before), "no new series at all")
                self.assertEqual(total(after, "ai_proxy_requests_total", model="other"), 1000)
                self.assertEqual(total(after, "ai_proxy_requests_total", model="other", provider=CANARY), 500)

    def test_counters_exact_under_many_threads(self):
        clients, per_client = 8, 100
        with harness.Mock(CONTROL, threads=2) as ctl, harness.Mock(CANARY, threads=2) as cny:
            cfg = obs_config(ctl.base_url, cny.base_url, server={"threads": 4})
            with harness.Canaryd(cfg, env=obs_env()) as c:
                errors = []

                def client(k):
                    conn = http.client.HTTPConnection(harness.LOOPBACK, c.port, timeout=10)
                    try:
                        for i in range(per_client):
                            body = harness.chat_body("gpt-4.1")
                            if i % 3 == 0:  # a stream reports usage in its last chunk when asked
                                body.update(stream=True, stream_options={"include_usage": True})
                            status, _, _ = harness.request_on(conn, "POST", "/v1/chat/completions", body,
                                                              {"X-Canary": "canary" if (i + k) % 2 else "control"})
                            if status != 200:
                                errors.append(status)
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                    finally:
                        conn.close()

                threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                self.assertEqual(errors, [])
                n = clients * per_client
                text = harness.wait_until(
                    lambda: (t := scrape(c)) and total(parse_exposition(t)[1], "ai_proxy_requests_total") == n and t,
                    5, message=f"{n} requests accounted")
                _, s = parse_exposition(text)
                self.assertEqual(total(s, "ai_proxy_requests_total", status="success"), n)
                self.assertEqual(total(s, "ai_proxy_requests_total", provider=CANARY), n / 2)
                self.assertEqual(total(s, "ai_proxy_request_duration_seconds_count"), n)
                self.assertEqual(total(s, "ai_proxy_request_duration_seconds_bucket", le="+Inf"), n)
                self.assertEqual(total(s, "ai_proxy_time_to_first_byte_seconds_count"), n)
                self.assertEqual(total(s, "ai_proxy_overhead_seconds_count"), n)
                self.assertEqual(total(s, "ai_proxy_tokens_total", type="prompt"), n * 10)
                self.assertEqual(total(s, "ai_proxy_tokens_total", type="completion"), n * 20)
                self.assertAlmostEqual(total(s, "ai_proxy_cost_usd_total"), n * cost("gpt-4.1", 10, 20), places=6)
                self.assertEqual(total(s, "ai_proxy_inflight_requests"), 0)
                status, _, rep = harness.http_json("GET", c.url + "/admin/report", headers=admin_headers())
                self.assertEqual(status, 200)
                a = rep["arms"]
                self.assertEqual(a["control"]["requests_total"] + a["canary"]["requests_total"], n)
                self.assertEqual(a["control"]["prompt_tokens"] + a["canary"]["prompt_tokens"], n * 10)
                self.assertAlmostEqual(a["control"]["cost_usd"] + a["canary"]["cost_usd"], n * cost("gpt-4.1", 10, 20),
                                       places=6)


class HealthAndReportTest(unittest.TestCase):
    def test_health_report_and_ctl_report(self):
        with harness.Mock(CONTROL, prompt_tokens=100, completion_tokens=50) as ctl, \
                harness.Mock(CANARY, prompt_tokens=100, completion_tokens=50) as cny:
            # The canary provider serves gpt-4.1 requests with deepseek-v3.2: cheaper.
            cfg = obs_config(ctl.base_url, cny.base_url,
                             upstreams={CANARY: {"models": {"gpt-4.1": "deepseek-v3.2"}}},
                             rollout={"analysis": {"window": "5m"}})
            with harness.Canaryd(cfg, env=obs_env()) as c:
                for _ in range(30):
                    self.assertEqual(chat(c.url, "control")[0], 200)
                for _ in range(20):
                    self.assertEqual(chat(c.url, "canary")[0], 200)
                for _ in range(5):
                    self.assertEqual(chat(c.url, "canary", headers={"X-Mock-Status": "500"})[0], 500)

                def health():
                    status, _, h = harness.http_json("GET", c.url + "/health")
                    return status == 200 and h.get("arms", {}).get("canary", {}).get("requests") == 25 and h

                h = harness.wait_until(health, 5, message="/health counting 25 canary requests")
                self.assertEqual(h["status"], "ok")
                self.assertEqual(h["split"]["control"], CONTROL)
                self.assertEqual(h["split"]["canary"], CANARY)
                self.assertEqual(h["arms"]["control"], {"requests": 30, "error_rate": 0.0})
                self.assertAlmostEqual(h["arms"]["canary"]["error_rate"], 0.2)
                self.assertIn("state", h["rollout"])
                self.assertIn("weight", h["rollout"])
                self.assertEqual(h["store"]["status"], "ok")

                # /admin/report: admin token only, GET only
                status, _, _ = harness.http("GET", c.url + "/admin/report")
                self.assertEqual(status, 401)
                status, _, _ = harness.http("GET", c.url + "/admin/report", headers={"Authorization": "Bearer nope"})
                self.assertEqual(status, 401)
                status, _, _ = harness.http("POST", c.url + "/admin/report", b"", headers=admin_headers())
                self.assertEqual(status, 405)
                status, _, rep = harness.http_json("GET", c.url + "/admin/report", headers=admin_headers())
                self.assertEqual(status, 200, rep)
                print(json.dumps(rep, indent=1))
                ctl_arm, cny_arm = rep["arms"]["control"], rep["arms"]["canary"]
                self.assertEqual(ctl_arm["requests"], 30)
                self.assertEqual(ctl_arm["error_rate"], 0.0)
                self.assertEqual(cny_arm["requests"], 25)
                self.assertAlmostEqual(cny_arm["error_rate"], 0.2)
                for a in (ctl_arm, cny_arm):
                    for k in ("p50_seconds", "p99_seconds", "ttfb_p50_seconds", "ttfb_p99_seconds"):
                        self.assertIsInstance(a[k], float, k)
                        self.assertGreater(a[k], 0, k)
                        self.assertLess(a[k], 5, k)
                    self.assertLessEqual(a["p50_seconds"], a["p99_seconds"])
                self.assertEqual(ctl_arm["requests_total"], 30)
                self.assertEqual(cny_arm["requests_total"], 25)
                self.assertEqual((ctl_arm["prompt_tokens"], ctl_arm["completion_tokens"]), (3000, 1500))
                self.assertEqual((cny_arm["prompt_tokens"], cny_arm["completion_tokens"]), (2000, 1000))
                self.assertAlmostEqual(ctl_arm["cost_usd"], 30 * cost("gpt-4.1", 100, 50), places=9)
                self.assertAlmostEqual(cny_arm["cost_usd"], 20 * cost("deepseek-v3.2", 100, 50), places=9)
                self.assertAlmostEqual(ctl_arm["cost_per_1k_requests_usd"], 1000 * cost("gpt-4.1", 100, 50), places=9)
                self.assertAlmostEqual(cny_arm["cost_per_1k_requests_usd"],
                                       1000 * 20 * cost("deepseek-v3.2", 100, 50) / 25, places=9)
                # the projection, from the report's own figures (docs/observability.md)
                covered = rep["covered_seconds"]
                self.assertGreater(covered, 0)
                self.assertLessEqual(covered, 300)
                for a, n in ((ctl_arm, 30), (cny_arm, 25)):
                    self.assertAlmostEqual(a["requests_per_second"], n / covered, places=6)
                    self.assertAlmostEqual(a["projected_monthly_cost_usd"],
                                           a["cost_per_request_usd"] * a["requests_per_second"] * MONTH, places=4)
                rate = ctl_arm["requests_per_second"] + cny_arm["requests_per_second"]
                saving = (ctl_arm["cost_per_request_usd"] - cny_arm["cost_per_request_usd"]) * rate * MONTH
                self.assertAlmostEqual(rep["projected_monthly_saving_usd"], saving, places=4)
                self.assertGreater(rep["projected_monthly_saving_usd"], 0)
                self.assertGreater(rep["saving_percent"], 90)  # 0.0024 -> 0.0000816 USD per request
                self.assertAlmostEqual(rep["projected_monthly_cost_usd"],
                                       ctl_arm["projected_monthly_cost_usd"] + cny_arm["projected_monthly_cost_usd"],
                                       places=4)

                # canaryd ctl report: the same, as a table
                p = subprocess.run([harness.canaryd_bin(), "ctl", "--url", c.url, "--token", ADMIN_TOKEN, "report"],
                                   capture_output=True, text=True, timeout=30)
                print(p.stdout, p.stderr)
                self.assertEqual(p.returncode, 0, p.stderr)
                lines = p.stdout.splitlines()
                # Which columns cover the analysis window and which the time since start.
                self.assertRegex(lines[0], r"^\s+\[analysis window, last 5m\]\s+\[since start\]\s+\[at the window's rate\]$")
                self.assertEqual(lines[0].index("[since start]"), lines[1].index("TOKENS"))
                self.assertEqual(lines[0].index("[analysis window"), lines[1].index("REQUESTS"))
                self.assertEqual(lines[0].index("[at the window"), lines[1].index("$/1k req"))
                control_line = next(l for l in lines if l.strip().startswith("control"))
                canary_line = next(l for l in lines if l.strip().startswith("canary"))
                self.assertIn("3000/1500", control_line)
                self.assertIn("%.4f" % (30 * cost("gpt-4.1", 100, 50)), control_line)
                self.assertIn("2000/1000", canary_line)
                self.assertRegex(canary_line, r"\b20\.0*%")
                self.assertIn("Projected monthly saving", p.stdout)
                p = subprocess.run([harness.canaryd_bin(), "ctl", "--url", c.url, "--token", "wrong", "report"],
                                   capture_output=True, text=True, timeout=30)
                self.assertNotEqual(p.returncode, 0)


class AccessLogTest(unittest.TestCase):
    CLIENT_KEY = "ck-obs-client-4e8a1f93b7"
    WRONG_KEY = "ck-obs-wrong-0d6c2e77a5"

    def test_one_line_per_request_and_no_secret_or_prompt(self):
        self._leak_check(None)

    def test_no_secret_or_prompt_at_debug_level(self):
        # Whatever a debug line may carry now or later, it never holds a secret or a prompt.
        self._leak_check("debug")

    def _leak_check(self, log_level):
        prompts = [f"PROMPT-{i}-{random.Random(i).getrandbits(64):x}" for i in range(6)]
        with harness.Mock(CONTROL, require_key=UPSTREAM_KEYS["OBS_OPENAI_KEY"]) as ctl, \
                harness.Mock(CANARY, require_key=UPSTREAM_KEYS["OBS_HOLYSHEEP_KEY"], error_rate=0.5,
                             error_seed=99) as cny:
            # Every user on the canary; half its calls fail and fall back to control.
            cfg = obs_config(ctl.base_url, cny.base_url,
                             server={"client_keys_env": "OBS_CLIENT_KEYS"},
                             rollout={"steps": [{"weight": 100}],
                                      "analysis": {"min_requests": 100000}},
                             fallback={"enabled": True, "on": ["5xx"], "budget": 1.0})
            env = obs_env(OBS_CLIENT_KEYS=f"{self.CLIENT_KEY},ck-other-key-2")
            auth = {"Authorization": f"Bearer {self.CLIENT_KEY}"}
            with harness.Canaryd(cfg, env=env, log_level=log_level) as c:
                ids = {}
                for i, prompt in enumerate(prompts[:4]):
                    status, hdrs, _ = chat(c.url, content=prompt, headers=dict(auth, **{"X-User-ID": f"user-{i}"}),
                                           user=f"user-{i}")
                    self.assertEqual(status, 200)
                    ids[hdrs["X-Request-ID"]] = hdrs
                r = harness.stream(c.url + "/v1/chat/completions",
                                   harness.chat_body(content=prompts[4], stream=True,
                                                     stream_options={"include_usage": True}), dict(auth))
                self.assertEqual(r.status, 200)
                ids[r.headers["X-Request-ID"]] = r.headers
                status, hdrs, _ = harness.http("POST", c.url + "/v1/embeddings",
                                               {"model": "gpt-4.1", "input": prompts[5]}, dict(auth))
                self.assertEqual(status, 200)
                ids[hdrs["X-Request-ID"]] = hdrs
                # a wrong client key, an admin call with the token
                status, _, _ = chat(c.url, content=prompts[0], headers={"Authorization": f"Bearer {self.WRONG_KEY}"})
                self.assertEqual(status, 401)
                self.assertEqual(harness.http("GET", c.url + "/admin/report", headers=admin_headers())[0], 200)
                self.assertEqual(harness.http("GET", c.url + "/admin/rollout", headers=admin_headers())[0], 200)
                self.assertTrue(any(h.get("X-Canaryd-Fallback") for h in ids.values()), "some call fell back")
                c.stop()
                out = c.logs() + c.stderr()

            secrets = list(UPSTREAM_KEYS.values()) + [self.CLIENT_KEY, "ck-other-key-2", self.WRONG_KEY, ADMIN_TOKEN]
            for s in secrets + prompts:
                self.assertNotIn(s, out)
            for s in ("PROMPT-", "Bearer", "sk-obs"):
                self.assertNotIn(s, out)

            access = [json.loads(l) for l in out.splitlines() if l.startswith("{") and '"type":"access"' in l]
            by_id = {}
            for line in access:
                by_id.setdefault(line.get("request_id"), []).append(line)
            for rid, hdrs in ids.items():
                self.assertEqual(len(by_id.get(rid, [])), 1, f"one access line for {rid}")
                line = by_id[rid][0]
                self.assertEqual(line["arm"], hdrs["X-Canaryd-Arm"])
                self.assertEqual(line["provider"], hdrs["X-Canaryd-Provider"])
                self.assertEqual(line["status"], 200)
                for k in ("model", "latency_ms", "ttfb_ms", "prompt_tokens", "completion_tokens", "cost_usd"):
                    self.assertIn(k, line, f"{k} in {line}")
                self.assertEqual(line["prompt_tokens"], 10)
                expected_model = "gpt-4.1"
                self.assertEqual(line["model"], expected_model)
                self.assertAlmostEqual(line["cost_usd"],
                                       cost(expected_model, line["prompt_tokens"], line["completion_tokens"]), places=6)
                self.assertGreater(line["cost_usd"], 0)
                self.assertLessEqual(line["ttfb_ms"], line["latency_ms"])
                if hdrs.get("X-Canaryd-Fallback"):
                    self.assertEqual(line["fallback"], hdrs["X-Canaryd-Fallback"])
                    self.assertEqual(line["fallback"], "5xx")
                    self.assertEqual(line["arm"], "control")
                else:
                    self.assertNotIn("fallback", line)
        return out


class StuckStdoutTest(unittest.TestCase):
    """stdout into a pipe nobody reads: the pipe (64 KiB) and then the queues
    (the access log's 2 MiB, spdlog's 1,024 lines) fill up, and requests must
    still answer at once."""

    CLIENTS, PER_CLIENT = 8, 1250   # 10,000 access lines: well past the pipe and the queue
    BOUND = 2.0                     # seconds; a blocked I/O thread never answers

    def test_requests_never_wait_for_a_stuck_stdout(self):
        with harness.Mock(CONTROL, threads=2) as m:
            port = harness.free_port()
            cfg = obs_config(m.base_url, m.base_url, server={"listen": f"{harness.LOOPBACK}:{port}", "threads": 2})
            url = f"http://{harness.LOOPBACK}:{port}"
            with tempfile.TemporaryDirectory(prefix="obs-stuck-") as tmp:
                path = os.path.join(tmp, "canaryd.yaml")
                with open(path, "w") as f:
                    f.write(harness.to_yaml(cfg))
                env = dict(os.environ, **obs_env(), **harness.DEFAULT_ENV)
                read_end, write_end = os.pipe()
                try:
                    with open(os.path.join(tmp, "stderr.log"), "wb") as err:
                        proc = subprocess.Popen([harness.canaryd_bin(), "-c", path], stdout=write_end, stderr=err,
                                                stdin=subprocess.DEVNULL, env=env)
                    harness._register(proc)
                    os.close(write_end)
                    write_end = -1
                    drained = threading.Event()
                    try:
                        harness.wait_until(lambda: harness.http("GET", url + "/ready", timeout=2)[0] == 200, 15,
                                           message="canaryd ready")
                        slowest, failures = self._burst(port)
                        print(f"[measured] {self.CLIENTS * self.PER_CLIENT} requests with stdout stuck: "
                              f"slowest {slowest * 1000:.1f} ms")
                        self.assertEqual(failures, [])
                        self.assertLess(slowest, self.BOUND)
                        status, _, body = harness.http("GET", url + "/metrics")
                        self.assertEqual(status, 200)
                        _, s = parse_exposition(body.decode())
                        dropped = total(s, "ai_proxy_log_dropped_total")
                        print(f"[measured] log lines dropped: {dropped:.0f}")
                        self.assertGreater(dropped, 0, "the queue overflowed (else this test proved nothing)")
                        self.assertEqual(total(s, "ai_proxy_requests_total"), self.CLIENTS * self.PER_CLIENT)
                    finally:
                        # Read the pipe now so canaryd's log thread can finish and exit cleanly.
                        def drain():
                            while os.read(read_end, 65536):
                                pass
                            drained.set()
                        threading.Thread(target=drain, daemon=True).start()
                        rc = harness.stop_process(proc, timeout=20, sig=signal.SIGTERM)
                    self.assertEqual(rc, 0)
                    self.assertTrue(drained.wait(10))
                finally:
                    if write_end >= 0:
                        os.close(write_end)
                    os.close(read_end)

    def _burst(self, port: int):
        slowest = [0.0] * self.CLIENTS
        failures = []

        def client(k):
            conn = http.client.HTTPConnection(harness.LOOPBACK, port, timeout=self.BOUND + 3)
            try:
                for i in range(self.PER_CLIENT):
                    t0 = time.monotonic()
                    status, _, _ = harness.request_on(conn, "POST", "/v1/chat/completions", harness.chat_body())
                    slowest[k] = max(slowest[k], time.monotonic() - t0)
                    if status != 200:
                        failures.append(status)
            except Exception as e:  # noqa: BLE001
                failures.append(repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(self.CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return max(slowest), failures


class ReloadTest(unittest.TestCase):
    """SIGHUP: new prices reach the metrics; a reload that would need new label
    sets (upstream names, priced models) is refused whole, naming the key."""

    def test_reload_reprices_and_refuses_new_label_sets(self):
        with harness.Mock(CONTROL) as ctl, harness.Mock(CANARY) as cny:
            cfg = obs_config(ctl.base_url, cny.base_url)
            with harness.Canaryd(cfg, env=obs_env()) as c:
                def cost_total():
                    return total(parse_exposition(scrape(c))[1], "ai_proxy_cost_usd_total", model="gpt-4.1")

                def send_and_wait(expected):
                    self.assertEqual(chat(c.url, "control")[0], 200)
                    return harness.wait_until(lambda: abs(cost_total() - expected) < 1e-9 and True, 5,
                                              message=f"cost_usd_total at {expected}")

                first = cost("gpt-4.1", 10, 20)
                send_and_wait(first)

                def reloaded(cfg, n):
                    c.write_config(cfg)
                    c.signal(signal.SIGHUP)
                    return harness.wait_until(
                        lambda: (ls := [l for l in c.log_lines() if "reload" in str(l.get("msg", ""))])
                        and len(ls) >= n and ls[n - 1], 5, message=f"reload #{n} logged")

                # 1. a new price for a priced model: applied to the metrics, the access log and the report
                tenfold = harness.deep_merge(cfg, {"pricing": {"gpt-4.1": {"input": 80.0, "output": 320.0}}})
                self.assertEqual(reloaded(tenfold, 1)["msg"], "config reloaded")
                second = 10 * first
                send_and_wait(first + second)
                status, _, rep = harness.http_json("GET", c.url + "/admin/report", headers=admin_headers())
                self.assertAlmostEqual(rep["arms"]["control"]["cost_usd"], first + second, places=9)

                # 2. a newly priced model: refused, naming `pricing`; the running prices stay
                new_model = harness.deep_merge(tenfold, {"pricing": {"claude-sonnet-4.5": {"input": 3.0, "output": 15.0}}})
                line = reloaded(new_model, 2)
                self.assertIn("rejected", line["msg"])
                self.assertTrue(line["error"].startswith("pricing: "), line)
                self.assertIn("restart canaryd to change it", line["error"])

                # 3. an upstream renamed: refused, naming `upstreams`
                renamed = harness.deep_merge(tenfold, {"upstreams": {CANARY: None, "holysheep-v2": cfg["upstreams"][CANARY]},
                                                       "split": {"canary": "holysheep-v2"}})
                line = reloaded(renamed, 3)
                self.assertIn("rejected", line["msg"])
                self.assertTrue(line["error"].startswith("upstreams: "), line)
                self.assertIn("restart canaryd to change it", line["error"])

                send_and_wait(first + 2 * second)  # still the reloaded price, still counted
                status, hdrs, _ = chat(c.url, "canary")
                self.assertEqual((status, hdrs["X-Canaryd-Provider"]), (200, CANARY))
                _, s = parse_exposition(scrape(c))
                self.assertNotIn("holysheep-v2", {l.get("provider") for _, l, _ in s})
                self.assertNotIn("claude-sonnet-4.5", {l.get("model") for _, l, _ in s})
                c.stop()
                # Each I/O thread writes its lines in batches: across threads the
                # order of the lines is not the order of the requests, hence sorted.
                access = [l for l in c.log_lines() if l.get("type") == "access" and "cost_usd" in l]
                costs = sorted(round(l["cost_usd"], 6) for l in access if l.get("arm") == "control")
                self.assertEqual(costs, sorted(round(x, 6) for x in (first, second, second)), access)


class LogLevelTest(unittest.TestCase):
    def _run(self, level: str, mock: harness.Mock) -> str:
        port = harness.free_port()
        cfg = obs_config(mock.base_url, mock.base_url, server={"listen": f"{harness.LOOPBACK}:{port}"})
        with tempfile.TemporaryDirectory(prefix="obs-loglevel-") as tmp:
            path = os.path.join(tmp, "canaryd.yaml")
            with open(path, "w") as f:
                f.write(harness.to_yaml(cfg))
            out_path = os.path.join(tmp, "out.log")
            env = dict(os.environ, **obs_env(), **harness.DEFAULT_ENV)
            with open(out_path, "wb") as out:
                proc = subprocess.Popen([harness.canaryd_bin(), "-c", path, "--log-level", level], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            harness._register(proc)
            try:
                harness.wait_until(lambda: harness.http("GET", f"http://{harness.LOOPBACK}:{port}/ready",
                                                        timeout=2)[0] == 200, 15, message="canaryd ready")
                status, _, _ = chat(f"http://{harness.LOOPBACK}:{port}")
                self.assertEqual(status, 200)
            finally:
                rc = harness.stop_process(proc, timeout=20, sig=signal.SIGTERM)
            self.assertEqual(rc, 0)
            with open(out_path) as f:
                return f.read()

    def test_log_levels(self):
        with harness.Mock(CONTROL) as m:
            off = self._run("off", m)
            self.assertEqual(off.strip(), "", "--log-level off: not a line")
            warn = self._run("warn", m)
            lines = [json.loads(l) for l in warn.splitlines() if l.startswith("{")]
            self.assertFalse([l for l in lines if l.get("msg") == "canaryd listening"], "no info lines at warn")
            self.assertEqual(len([l for l in lines if l.get("type") == "access"]), 1, "the access log stays on")
            debug = self._run("debug", m)
            self.assertIn("canaryd listening", debug)
        p = subprocess.run([harness.canaryd_bin(), "--log-level", "loud", "-c", "/nonexistent.yaml"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--log-level", p.stderr)


if __name__ == "__main__":
    unittest.main()
