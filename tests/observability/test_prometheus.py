"""A real Prometheus (Debian's `prometheus`) scrapes the real canaryd every
second while traffic flows through both arms; then the seed's Argo
AnalysisTemplate queries, verbatim, must return what the test sent, every
PromQL expression of deploy/grafana/canaryd.json must run, and the rules of
deploy/prometheus/alerts.yml must load and evaluate.

Runs in about 20 s.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
import unittest

import harness
from obs_helpers import (CANARY, CONTROL, REPO_ROOT, Prometheus, obs_config, obs_env, parse_exposition, scrape,
                         total)

# The seed's AnalysisTemplate (holysheep-analysis), verbatim.
ERROR_RATE = ('sum(rate(ai_proxy_requests_total{provider="holysheep",status="error"}[5m])) / '
              'sum(rate(ai_proxy_requests_total{provider="holysheep"}[5m]))')
LATENCY_P99 = ('histogram_quantile(0.99, sum(rate(ai_proxy_request_duration_seconds_bucket{provider="holysheep"}[5m])) '
               'by (le))')
SUCCESS_RATE = ('sum(rate(ai_proxy_requests_total{provider="holysheep",status="success"}[5m])) / '
                'sum(rate(ai_proxy_requests_total{provider="holysheep"}[5m]))')

CANARY_ERROR_RATE = 0.2   # the canary mock's --error-rate
CANARY_LATENCY_MS = 60    # every canary answer, errors included: p99 in the (0.05, 0.1] bucket
PER_ARM = 240
CLIENT_THREADS = 4

DASHBOARD = os.path.join(REPO_ROOT, "deploy", "grafana", "canaryd.json")
ALERTS = os.path.join(REPO_ROOT, "deploy", "prometheus", "alerts.yml")
# Grafana's built-in variables, as Grafana would expand them for a 1 s scrape.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1s", "${__interval}": "1s",
                "$__range": "1h", "${__range}": "1h"}


BUCKETS = [.005, .01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120]


def bucket_upper(seconds: float) -> float:
    return next((b for b in BUCKETS if b >= seconds), float("inf"))


def quantile(q: float, samples, provider: str) -> float:
    """Prometheus's histogram_quantile over canaryd's own bucket counts of
    ai_proxy_request_duration_seconds for `provider`, summed over models."""
    counts: dict[float, float] = {}
    for name, labels, value in samples:
        if name == "ai_proxy_request_duration_seconds_bucket" and labels.get("provider") == provider:
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            counts[le] = counts.get(le, 0) + value
    bounds = sorted(counts)
    total_count = counts[float("inf")]
    rank = q * total_count
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        if counts[b] >= rank:
            if b == float("inf"):
                return prev_bound
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (counts[b] - prev_count)
        prev_bound, prev_count = b, counts[b]
    return float("nan")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel (rows included) and annotation."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(("annotation " + a.get("name", "?"), a["expr"]))
    return out


def expand(expr: str) -> str:
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, f"unexpanded Grafana variable in {expr!r}"
    return expr


class PrometheusAnalysisTest(unittest.TestCase):
    def test_analysis_template_dashboard_and_alerts_against_real_prometheus(self):
        with harness.Mock(CONTROL, latency=2) as ctl, \
                harness.Mock(CANARY, latency=CANARY_LATENCY_MS, error_rate=CANARY_ERROR_RATE, error_seed=20261127,
                             threads=2) as cny:
            cfg = obs_config(ctl.base_url, cny.base_url, fallback={"enabled": False})
            with harness.Canaryd(cfg, env=obs_env()) as c, \
                    Prometheus([f"{harness.LOOPBACK}:{c.port}"], rule_files=[ALERTS]) as prom:
                # A first scrape before any traffic: every counter starts at 0 in
                # Prometheus, so rate() ratios are exact.
                prom.wait_scrape_after(0, timeout=15)
                sent = self._traffic(c)
                canary_total = sent[CANARY]["total"]
                canary_errors = sent[CANARY]["errors"]
                self.assertEqual(canary_total, PER_ARM)
                self.assertEqual(sent[CONTROL]["total"], PER_ARM)
                self.assertEqual(sent[CONTROL]["errors"], 0)
                exact_error_rate = canary_errors / canary_total

                # canaryd accounts a call just after the client has its answer:
                # wait until /metrics has all of them, then for a scrape after that.
                def accounted():
                    samples = parse_exposition(scrape(c))[1]
                    return (total(samples, "ai_proxy_requests_total") == 2 * PER_ARM and
                            total(samples, "ai_proxy_request_duration_seconds_count") == 2 * PER_ARM)

                harness.wait_until(accounted, 10, message="canaryd to account every request")
                final = parse_exposition(scrape(c))[1]
                prom.wait_scrape_after(time.time(), timeout=15)

                error_rate = prom.scalar(ERROR_RATE)
                success_rate = prom.scalar(SUCCESS_RATE)
                p99 = prom.scalar(LATENCY_P99)
                print(f"sent: canary {canary_total} calls, {canary_errors} errors ({exact_error_rate:.4f}); "
                      f"prometheus: error rate {error_rate:.4f}, success rate {success_rate:.4f}, p99 {p99:.4f}s")
                self.assertAlmostEqual(error_rate, exact_error_rate, delta=0.005)
                self.assertAlmostEqual(error_rate, CANARY_ERROR_RATE, delta=0.08, msg="near the mock's error rate")
                self.assertAlmostEqual(success_rate, 1 - exact_error_rate, delta=0.005)
                # Every canary call waits 60 ms in the mock: p99 is above the 0.05
                # bucket bound, and within the bucket of the slowest 1% the client saw.
                self.assertGreater(p99, 0.05)
                client_p99 = sorted(sent[CANARY]["latencies"])[math.ceil(0.99 * canary_total)]
                self.assertLessEqual(p99, bucket_upper(client_p99))
                # Counters started at 0 in Prometheus, so rate() scales every bucket
                # alike: the quantile equals the one of canaryd's own final counts.
                self.assertAlmostEqual(p99, quantile(0.99, final, CANARY), delta=1e-6)
                # The control arm through the same queries: no errors.
                self.assertEqual(prom.scalar(ERROR_RATE.replace(CANARY, CONTROL)), 0.0)
                self.assertAlmostEqual(prom.scalar(LATENCY_P99.replace(CANARY, CONTROL)), quantile(0.99, final, CONTROL),
                                       delta=1e-6)

                self._check_dashboard(prom)
                self._check_rules(prom)

    def _traffic(self, c: harness.Canaryd) -> dict:
        """CLIENT_THREADS keep-alive clients alternate the arms (X-Canary) until
        PER_ARM calls went to each; returns what each arm answered."""
        lock = threading.Lock()
        sent = {p: {"total": 0, "errors": 0, "latencies": []} for p in (CONTROL, CANARY)}
        todo = {"control": PER_ARM, "canary": PER_ARM}
        failures = []

        def take() -> str:
            with lock:
                for arm in ("canary", "control"):
                    if todo[arm] > 0 and (todo[arm] >= todo["control" if arm == "canary" else "canary"]):
                        todo[arm] -= 1
                        return arm
                return ""

        def client():
            conn = http.client.HTTPConnection(harness.LOOPBACK, c.port, timeout=10)
            try:
                while True:
                    arm = take()
                    if not arm:
                        return
                    t0 = time.monotonic()
                    status, hdrs, _ = harness.request_on(conn, "POST", "/v1/chat/completions",
                                                         harness.chat_body("gpt-4.1", "hi"), {"X-Canary": arm})
                    elapsed = time.monotonic() - t0
                    provider = hdrs.get("X-Canaryd-Provider")
                    with lock:
                        if provider not in sent:
                            failures.append(f"{status} from {provider!r}")
                            continue
                        sent[provider]["total"] += 1
                        sent[provider]["latencies"].append(elapsed)
                        if status >= 500:
                            sent[provider]["errors"] += 1
                        elif status != 200:
                            failures.append(f"{status} from {provider}")
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(failures, [])
        return sent

    def _check_dashboard(self, prom: Prometheus) -> None:
        exprs = dashboard_exprs()
        self.assertGreaterEqual(len(exprs), 20)
        empty = []
        for title, expr in exprs:
            try:
                result = prom.query(expand(expr))
            except AssertionError as e:
                self.fail(f"dashboard panel {title!r}: {expr}\n{e}")
            if not result and not title.startswith("annotation"):
                empty.append(f"{title}: {expr}")
        # Every family is pre-resolved, so every panel has series here (an
        # annotation is an event filter: empty without a rollback).
        self.assertEqual(empty, [], "dashboard expressions without data")

    def _check_rules(self, prom: Prometheus) -> None:
        def evaluated():
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if len(rules) != 6 or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return None
            return rules

        rules = harness.wait_until(evaluated, 10, interval=0.2, message="alert rules evaluated")
        for r in rules:
            self.assertEqual(r["health"], "ok", f"rule {r['name']}: {r.get('lastError')}")
        self.assertEqual(sorted(r["name"] for r in rules),
                         ["CanaryErrorRateHigh", "CanaryLatencyP99High", "CanaryRolledBack", "CanarydDown",
                          "CanarydNoTraffic", "CanarydRedisErrors"])
        # 20% canary errors: the error-rate alert is pending (its "for: 2m" runs).
        def pending():
            alerts = prom.api("alerts")["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "CanaryErrorRateHigh"]

        alerts = harness.wait_until(pending, 10, interval=0.2, message="CanaryErrorRateHigh pending")
        self.assertIn(alerts[0]["state"], ("pending", "firing"))
        other = [a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]
                 if a["labels"]["alertname"] in ("CanaryRolledBack", "CanarydRedisErrors", "CanarydNoTraffic",
                                                 "CanarydDown")]
        self.assertEqual(other, [], "no rollback, no Redis errors, traffic flows, and canaryd is up")


if __name__ == "__main__":
    unittest.main()
