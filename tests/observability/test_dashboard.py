"""Static checks of deploy/grafana/canaryd.json (the live check of every
expression against a real Prometheus is in test_prometheus.py): valid JSON,
the panels the dashboard promises, and only metric names canaryd exports."""

from __future__ import annotations

import json
import os
import re
import unittest

from obs_helpers import REPO_ROOT, SPEC_METRICS

DASHBOARD = os.path.join(REPO_ROOT, "deploy", "grafana", "canaryd.json")
_METRIC = re.compile(r"\b((?:ai_proxy|process)_[a-z_]+)\b")


class DashboardTest(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.dash = json.load(f)
        self.panels = []

        def walk(ps):
            for p in ps:
                self.panels.append(p)
                walk(p.get("panels", []))

        walk(self.dash["panels"])
        self.exprs = [t["expr"] for p in self.panels for t in p.get("targets", [])]

    def test_identity_and_datasource(self):
        self.assertEqual(self.dash["uid"], "canaryd")
        self.assertEqual(self.dash["title"], "canaryd")
        names = [v["name"] for v in self.dash["templating"]["list"]]
        self.assertIn("datasource", names)
        ids = [p["id"] for p in self.panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        for p in self.panels:
            if p["type"] == "row":
                continue
            self.assertTrue(p.get("targets"), p["title"])
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])

    def test_every_promised_view_is_there(self):
        joined = "\n".join(self.exprs)
        for metric in ("ai_proxy_canary_weight", "ai_proxy_rollout_state", "ai_proxy_requests_total",
                       "ai_proxy_request_duration_seconds_bucket", "ai_proxy_time_to_first_byte_seconds_bucket",
                       "ai_proxy_tokens_total", "ai_proxy_cost_usd_total", "ai_proxy_fallbacks_total",
                       "ai_proxy_redis_errors_total", "ai_proxy_overhead_seconds_bucket", "ai_proxy_rollbacks_total",
                       "ai_proxy_inflight_requests"):
            self.assertIn(metric, joined, metric)
        # per arm = by provider; p50 and p99 of duration and TTFB
        for metric in ("ai_proxy_request_duration_seconds_bucket", "ai_proxy_time_to_first_byte_seconds_bucket"):
            for q in ("0.5", "0.99"):
                self.assertTrue(any(f"histogram_quantile({q}" in e and metric in e and "provider" in e
                                    for e in self.exprs), f"{metric} q{q} per provider")
        self.assertTrue(any('status!="success"' in e and "by (provider)" in e for e in self.exprs), "error rate per arm")

    def test_only_exported_metric_names(self):
        exported = set()
        for name, (typ, _) in SPEC_METRICS.items():
            exported |= {name} if typ != "histogram" else {name + "_bucket", name + "_sum", name + "_count"}
        exported |= {"process_resident_memory_bytes", "process_cpu_seconds_total"}
        for e in self.exprs:
            for m in _METRIC.findall(e):
                self.assertIn(m, exported, e)


if __name__ == "__main__":
    unittest.main()
