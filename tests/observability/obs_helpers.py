"""Helpers for the observability suite: a canaryd config with the seed's
upstream names (openai = control, holysheep = canary), a real Prometheus server
started on a free loopback port and stopped by PID, and parsing of the
Prometheus text format.

Builds on tests/integration/harness.py (on PYTHONPATH, set by ctest).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any, Optional

import harness

REPO_ROOT = harness.REPO_ROOT
CONTROL = "openai"
CANARY = "holysheep"
ADMIN_TOKEN = "adm-tok-7c1e0b55d2"
UPSTREAM_KEYS = {"OBS_OPENAI_KEY": "sk-obs-openai-5b1c9d7e2f", "OBS_HOLYSHEEP_KEY": "sk-obs-holysheep-a83f02c4d6"}
PROMETHEUS_BIN = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool") or "/usr/bin/promtool"

# SPEC §7: name -> (type, labels other than le). The rollout and fallback
# families carry the experiment label since issue 17 (one series set per
# experiment, "default" for the top-level split); the seed's request families
# do not change.
SPEC_METRICS = {
    "ai_proxy_requests_total": ("counter", {"provider", "model", "status"}),
    "ai_proxy_request_duration_seconds": ("histogram", {"provider", "model"}),
    "ai_proxy_time_to_first_byte_seconds": ("histogram", {"provider", "model"}),
    "ai_proxy_tokens_total": ("counter", {"provider", "model", "type"}),
    "ai_proxy_cost_usd_total": ("counter", {"provider", "model"}),
    "ai_proxy_fallbacks_total": ("counter", {"experiment", "from", "to", "reason"}),
    "ai_proxy_canary_weight": ("gauge", {"experiment"}),
    "ai_proxy_rollout_state": ("gauge", {"experiment", "state"}),
    "ai_proxy_rollbacks_total": ("counter", {"experiment", "reason"}),
    "ai_proxy_redis_errors_total": ("counter", {"op"}),
    "ai_proxy_inflight_requests": ("gauge", set()),
    "ai_proxy_overhead_seconds": ("histogram", set()),
}

PRICING = {
    "gpt-4.1": {"input": 8.0, "output": 32.0},
    "deepseek-v3.2": {"input": 0.42, "output": 1.20},
}


def obs_config(control_url: str, canary_url: str, **sections: Any) -> dict:
    """harness.base_config with the upstreams renamed to the seed's names and the
    admin API on (token in ADMIN_TOKEN)."""
    up = {"connect_timeout": "1s", "timeout": "10s"}
    cfg = harness.base_config(
        control_url, canary_url,
        server={"admin_token_env": "OBS_ADMIN_TOKEN"},
        upstreams={"ctl": None, "cny": None,
                   CONTROL: dict(up, base_url=control_url, api_key_env="OBS_OPENAI_KEY"),
                   CANARY: dict(up, base_url=canary_url, api_key_env="OBS_HOLYSHEEP_KEY")},
        split={"control": CONTROL, "canary": CANARY},
        pricing=PRICING,
    )
    return harness.deep_merge(cfg, sections)


def obs_env(**extra: str) -> dict:
    env = dict(UPSTREAM_KEYS)
    env["OBS_ADMIN_TOKEN"] = ADMIN_TOKEN
    env.update(extra)
    return env


def admin_headers() -> dict:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# ---------------------------------------------------------------------------
# Prometheus text format

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """-> ({family: type}, [(sample name, labels, value)])."""
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError(f"unparsable exposition line: {line!r}")
        labels = {k: v for k, v in _LABEL.findall(m.group(3) or "")}
        samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def series(samples, name: str, **match: str) -> list[tuple[dict, float]]:
    return [(l, v) for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in match.items())]


def total(samples, name: str, **match: str) -> float:
    return sum(v for _, v in series(samples, name, **match))


def scrape(c: harness.Canaryd):
    status, hdrs, body = harness.http("GET", c.url + "/metrics")
    assert status == 200, status
    return body.decode()


# ---------------------------------------------------------------------------
# Prometheus server


class Prometheus:
    """A real Prometheus scraping the given targets every `interval`.

        with Prometheus(["127.0.0.1:PORT"], rule_files=[...]) as p:
            p.query("up")  # -> the API's data.result list
    """

    def __init__(self, targets: list[str], interval: str = "1s", rule_files: Optional[list[str]] = None,
                 start_timeout: float = 30.0):
        self.tmp = tempfile.TemporaryDirectory(prefix="obs-prometheus-")
        self.targets = targets
        self.interval = interval
        self.rule_files = rule_files or []
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://{harness.LOOPBACK}:{self.port}"

    def _write_config(self) -> str:
        path = os.path.join(self.tmp.name, "prometheus.yml")
        cfg = {
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": "canaryd", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}]}],
        }
        with open(path, "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        return path

    def start(self) -> "Prometheus":
        config = self._write_config()
        self.log_path = os.path.join(self.tmp.name, "prometheus.log")
        last_error = ""
        for _ in range(3):  # a free port can be taken between free_port() and bind
            self.port = harness.free_port()
            argv = [PROMETHEUS_BIN, f"--config.file={config}",
                    f"--storage.tsdb.path={os.path.join(self.tmp.name, 'data')}",
                    f"--web.listen-address={harness.LOOPBACK}:{self.port}",
                    "--storage.tsdb.retention.time=1h", "--log.level=warn"]
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            harness._register(self.proc)
            try:
                harness.wait_until(self._ready, self.start_timeout, interval=0.1, message="prometheus /-/ready")
                return self
            except (AssertionError, RuntimeError) as e:
                last_error = f"{e}\n{self.log()}"
                harness.stop_process(self.proc, timeout=5)
        raise AssertionError(f"prometheus did not start: {last_error}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
        status, _, _ = harness.http("GET", self.url + "/-/ready", timeout=2)
        return status == 200

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        qs = urllib.parse.urlencode(params)
        status, _, body = harness.http("GET", f"{self.url}/api/v1/{path}?{qs}", timeout=10)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params} -> {status}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: Optional[float] = None) -> list:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        return data["result"]

    def scalar(self, expr: str, at: Optional[float] = None) -> float:
        """The single value of an instant-vector query."""
        result = self.query(expr, at)
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def last_scrape(self) -> float:
        """Timestamp of the newest sample of up{job="canaryd"} (0 before any)."""
        result = self.query('timestamp(up{job="canaryd"})')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_scrape_after(self, t: float, timeout: float = 10.0) -> None:
        harness.wait_until(lambda: self.last_scrape() > t, timeout, interval=0.2,
                           message=f"a prometheus scrape after {t}")

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop_process(self.proc, timeout=10)
            self.proc = None
        self.tmp.cleanup()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
