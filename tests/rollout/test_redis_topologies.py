"""canaryd on Redis as teams run it (issue 16): two replicas of the real
binary against real topologies started here on loopback ports.

- Sentinel (a primary, a replica, 3 sentinels, down-after 1 s): the primary
  killed under load is followed within the sentinels' failover time + 2 s, no
  client request fails, users pinned before the failover (replicated: WAIT)
  keep their arm after it; a rollback issued while the primary is down
  reaches every replica once the new one is up.
- Cluster (3 primaries): the rollout state lives under one hash tag, pins
  spread over the nodes; 1000 slots resharded under load with MOVED/ASK
  followed and no pin decided by hash; pins made before stay honoured; an
  abort on one replica reaches the other.
- ACL: a user with only canaryd's commands works end to end (pins, the
  rollout scripts, the event stream); a wrong password is one clear log line
  and /health degraded, while requests are still served.

Times and counts are printed as "[measured] ..." (docs/redis.md quotes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import unittest
import uuid

import harness
from harness import Canaryd, Mock, http, http_json, metric_samples, wait_until
from redis_topologies import ClusterSet, SentinelSet
from rollout_helpers import ADMIN_ENV, RedisServer, Traffic, admin, end_replicas, rollout_config

SALT = "it"  # harness.base_config's split.salt


def report(msg: str) -> None:
    sys.stderr.write(f"[measured] {msg}\n")


def hash_arm(user: str, weight: float) -> str:
    digest = hashlib.sha256(f"{SALT}:{user}".encode()).digest()
    return "canary" if int.from_bytes(digest[:8], "big") % 10000 < round(weight * 100) else "control"


def pin_key(ns: str, epoch: int, user: str) -> str:
    return f"{ns}:pin:{epoch}:{hashlib.sha256(user.encode()).hexdigest()[:32]}"


def arm_of(c: Canaryd, user: str) -> str:
    status, headers, _ = http("POST", c.url + "/v1/chat/completions", harness.chat_body(), {"X-User-ID": user},
                              timeout=10)
    assert status == 200, f"{user}: {status}"
    return headers.get("X-Canaryd-Arm")


def metric(c: Canaryd, name: str, **labels: str) -> float:
    _, _, text = http("GET", c.url + "/metrics")
    return sum(v for l, v in metric_samples(text.decode(), name) if all(l.get(k) == x for k, x in labels.items()))


def health(c: Canaryd) -> str:
    _, _, doc = http_json("GET", c.url + "/health")
    return doc["status"]


class Topologies(unittest.TestCase):
    def setUp(self):
        self.stack = contextlib.ExitStack()
        self.control = self.stack.enter_context(Mock("ctl"))
        self.canary = self.stack.enter_context(Mock("cny"))
        self.ns = "topo-" + uuid.uuid4().hex[:6]
        self.replicas: list[Canaryd] = []

    def tearDown(self):
        end_replicas(self, self.replicas)
        self.stack.close()

    def config(self, redis: dict, weight: float = 50) -> dict:
        cfg = rollout_config(self.control.base_url, self.canary.base_url, [{"weight": weight, "pause": "10m"}],
                             redis=dict({"namespace": self.ns, "timeout": "100ms"}, **redis), auto_promote=False)
        cfg["split"]["pin_ttl"] = "1h"
        return cfg

    def replica(self, cfg: dict, env: dict | None = None) -> Canaryd:
        c = Canaryd(cfg, env=dict(ADMIN_ENV, **(env or {})))
        self.replicas.append(c)
        return c.start()

    def set_weight(self, weight: float, via: Canaryd, *others: Canaryd) -> None:
        admin(via, "weight", {"weight": weight})
        for c in (via,) + others:
            wait_until(lambda: admin(c)["weight"] == weight, 5, 0.02, f"weight {weight} everywhere")

    def pin_users(self, via: Canaryd, others: tuple, n: int, prefix: str) -> list[str]:
        """n users pinned to the canary (at weight 100), then the weight back to 1:
        from then on only their pins keep them on the canary."""
        self.set_weight(100, via, *others)
        users = [f"{prefix}-{i}" for i in range(n)]
        self.assertEqual({arm_of(via, u) for u in users}, {"canary"})
        self.set_weight(1, via, *others)
        return [u for u in users if hash_arm(u, 1) == "control"]

    def check_traffic(self, *traffic: Traffic) -> int:
        results = [r for t in traffic for r in t.snapshot()]
        errors = [e for t in traffic for e in t.errors]
        self.assertEqual(errors, [], "client requests failed")
        self.assertEqual(sorted({r.status for r in results}), [200], "a client request was not answered 200")
        return len(results)

    # ------------------------------------------------------------ Sentinel

    def test_sentinel_failover_under_load(self):
        s = self.stack.enter_context(SentinelSet())
        cfg = self.config({"url": s.url})
        a, b = self.replica(cfg), self.replica(cfg)
        wait_until(lambda: health(a) == "ok" and health(b) == "ok", 10, 0.05, "both replicas healthy")
        # One watcher per process, shared by the I/O threads and the rollout sync:
        # one +switch-master subscription per sentinel per canaryd.
        def subscriptions():
            return [s.sentinel("CLIENT", "LIST", i=i).count(" sub=1 ") for i in range(s.count)]
        wait_until(lambda: subscriptions() == [2] * s.count, 5, 0.05, "the watchers' subscriptions")
        pinned = self.pin_users(a, (b,), 60, "sp")
        self.assertGreater(len(pinned), 40)
        # Replication is asynchronous: a pin survives the primary once a replica has it.
        self.assertEqual(s.primary().command("WAIT", "1", "2000"), 1)

        # 1. The primary killed (kill -9) under load.
        hashed = {c: metric(c, "ai_proxy_redis_errors_total", op="pin") for c in (a, b)}
        with Traffic(a.url, threads=2) as ta, Traffic(b.url, threads=2) as tb:
            wait_until(lambda: ta.count() > 50 and tb.count() > 50, 10, 0.01, "traffic")
            old = s.primary()
            t0 = time.monotonic()
            old.kill()
            wait_until(lambda: s.all_name(s.nodes[1].port if old is s.nodes[0] else s.nodes[0].port), 30, 0.05,
                       "the sentinels to promote the replica")
            t_sentinels = time.monotonic() - t0
            wait_until(lambda: all(metric(c, "ai_proxy_redis_failovers_total") == 1 and health(c) == "ok"
                                   for c in (a, b)), 10, 0.02, "both replicas on the new primary")
            t_follow = time.monotonic() - t0
            n_window = ta.count(since=t0) + tb.count(since=t0)
            t_back = time.monotonic()
            wait_until(lambda: ta.count(since=t_back) > 50 and tb.count(since=t_back) > 50, 10, 0.01, "traffic after")
        total = self.check_traffic(ta, tb)
        by_hash = sum(metric(c, "ai_proxy_redis_errors_total", op="pin") - hashed[c] for c in (a, b))
        report(f"Sentinel failover (kill -9, down-after 1 s): sentinels promoted the replica after {t_sentinels:.2f}s; "
               f"both canaryd replicas healthy on it after {t_follow:.2f}s; {n_window} requests in that window, "
               f"{by_hash:.0f} decided by hash; {total} requests, none failed")
        self.assertLess(t_follow, t_sentinels + 2.0)
        # Pins made before the failover hold after it (the hash now says control for these users).
        kept = [u for u in pinned if arm_of(b, u) == "canary"]
        self.assertEqual(len(kept), len(pinned), "pins written before the failover were lost")
        # Still one each, long after start-up (the rollout sync made none of its own).
        self.assertEqual(subscriptions(), [2] * s.count, "one subscription per sentinel per canaryd process")

        # 2. A rollback issued while the (new) primary is down reaches every replica.
        old.start()  # comes back; the sentinels make it a replica of the new primary
        s.wait_ready()
        with Traffic(a.url, threads=1) as ta, Traffic(b.url, threads=1) as tb:
            wait_until(lambda: ta.count() > 50 and tb.count() > 50, 10, 0.01, "traffic")
            t0 = time.monotonic()
            s.primary().kill()
            self.assertEqual(admin(a, "abort")["state"], "aborted")  # A rolls back locally at once
            t_abort = time.monotonic() - t0
            wait_until(lambda: admin(b)["state"] == "aborted", 30, 0.02, "B to see A's rollback")
            t_reached = time.monotonic() - t0
            t_seen = time.monotonic()
            # Answers of requests sent before B applied the rollback may still arrive just after.
            wait_until(lambda: tb.count(since=t_seen + 0.2) > 50, 10, 0.01, "traffic after")
        self.check_traffic(ta, tb)
        after = [r for r in tb.snapshot() if r.t > t_seen + 0.2]
        self.assertTrue(after and all(r.arm == "control" for r in after), "canary traffic on B after the rollback")
        report(f"rollback during a failover: issued on A {t_abort:.2f}s after the primary died, on B after "
               f"{t_reached:.2f}s (when A could write it to the new primary)")
        self.assertEqual(metric(a, "ai_proxy_redis_failovers_total"), 2)

    # ------------------------------------------------------------ Cluster

    def test_cluster_reshard_under_load(self):
        cl = self.stack.enter_context(ClusterSet())
        cfg = self.config({"url": cl.url})
        a, b = self.replica(cfg), self.replica(cfg)
        wait_until(lambda: health(a) == "ok" and health(b) == "ok", 10, 0.05, "both replicas healthy")
        # The rollout state under one hash tag: one slot, one node.
        tag = "{" + self.ns + "}"
        self.assertIsNotNone(cl.get(f"{tag}:rollout"))
        owner = cl.owner(f"{tag}:rollout")
        self.assertEqual(cl.owner(f"{tag}:rollout:lease"), owner)
        pinned = self.pin_users(a, (b,), 80, "cp")
        epoch = admin(a)["epoch"]
        homes = {cl.owner(pin_key(self.ns, epoch, u)) for u in pinned}
        self.assertEqual(homes, {0, 1, 2}, "pins do not spread over the nodes")

        before = {c: (metric(c, "ai_proxy_redis_errors_total", op="pin"),
                      metric(c, "ai_proxy_redis_redirects_total")) for c in (a, b)}
        with Traffic(a.url, threads=2) as ta, Traffic(b.url, threads=2) as tb:
            wait_until(lambda: ta.count() > 50 and tb.count() > 50, 10, 0.01, "traffic")
            took = cl.reshard(0, 1, 1000)  # slots 0..999 and their keys, node 0 -> node 1
            t_after = time.monotonic()
            wait_until(lambda: ta.count(since=t_after) > 50 and tb.count(since=t_after) > 50, 10, 0.01, "traffic")
        total = self.check_traffic(ta, tb)
        by_hash = sum(metric(c, "ai_proxy_redis_errors_total", op="pin") - before[c][0] for c in (a, b))
        redirects = {kind: sum(metric(c, "ai_proxy_redis_redirects_total", kind=kind) for c in (a, b))
                     for kind in ("moved", "ask")}
        report(f"Cluster: 1000 slots resharded under load in {took:.1f}s; {total} requests, none failed; "
               f"{redirects['moved']:.0f} MOVED and {redirects['ask']:.0f} ASK followed; {by_hash:.0f} pins decided "
               f"by hash")
        self.assertEqual(by_hash, 0, "a pin failed during the reshard")
        self.assertGreater(redirects["moved"], 0)
        kept = [u for u in pinned if arm_of(b, u) == "canary"]
        self.assertEqual(len(kept), len(pinned), "pins were lost in the reshard")
        # The compare-and-set still works on the cluster: an abort on A reaches B.
        t0 = time.monotonic()
        admin(a, "abort")
        wait_until(lambda: admin(b)["state"] == "aborted", 2, 0.01, "B to see the abort")
        report(f"Cluster: an abort on A reached B in {time.monotonic() - t0:.3f}s")
        self.assertEqual(metric(a, "ai_proxy_redis_discovery_errors_total"), 0)

    # ------------------------------------------------------------ ACL

    def test_acl_user_with_canaryds_commands_and_a_wrong_password(self):
        redis = self.stack.enter_context(RedisServer())
        ns = self.ns
        self.assertEqual(redis.command("ACL", "SETUSER", "canaryd", "on", ">acl-pw-1", "resetkeys", f"~{ns}:*",
                                       "~{" + ns + "}:*", "resetchannels", "-@all", "+get", "+set", "+eval", "+xadd",
                                       "+xread"), "OK")
        cfg = self.config({"url": f"redis://canaryd@{harness.LOOPBACK}:{redis.port}", "password_env": "IT_REDIS_PW"})
        a = self.replica(cfg, {"IT_REDIS_PW": "acl-pw-1"})
        wait_until(lambda: health(a) == "ok", 10, 0.05, "healthy as the ACL user")
        users = [f"acl-{i}" for i in range(40)]
        served = {u: arm_of(a, u) for u in users}
        canary = [u for u, arm in served.items() if arm == "canary"]
        self.assertGreater(len(canary), 5)
        self.assertEqual(len(redis.command("KEYS", f"{ns}:pin:*")), len(canary), "pins not stored")
        self.assertEqual(admin(a, "abort")["state"], "aborted")
        wait_until(lambda: '"aborted"' in (redis.command("GET", "{" + ns + "}:rollout") or ""), 2, 0.01,
                   "the rollback written by the ACL user")
        self.assertEqual(metric(a, "ai_proxy_redis_errors_total"), 0)

        b = self.replica(cfg, {"IT_REDIS_PW": "not-the-password"})
        line = b.wait_log(lambda l: l.get("msg") == "redis: cannot connect", 5, "the connect error line")
        self.assertIn("WRONGPASS", line["error"])
        self.assertIn("as canaryd", line["error"])
        self.assertNotIn("not-the-password", b.logs())
        wait_until(lambda: health(b) == "degraded", 5, 0.05, "/health degraded")
        self.assertEqual(http("GET", b.url + "/ready")[0], 200)
        self.assertEqual(arm_of(b, "still-served") in ("control", "canary"), True)
        lines = [l for l in b.log_lines() if l.get("msg") == "redis: cannot connect"]
        report(f"wrong password: {len(lines)} log line(s) in {len(b.log_lines())}: {lines[0]['error']}")


if __name__ == "__main__":
    unittest.main()
