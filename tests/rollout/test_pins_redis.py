"""Sticky pins shared through a real Redis by two canaryd processes, and Redis
failing under them (the splitter issue's integration tests):

- pins are upgrade-only and only canary pins are stored: users first seen on
  control at weight 10 who are moved to the canary by a raise to 50 stay on the
  canary when the weight is lowered back to 10, on the other replica too;
- a user pinned to the canary through replica A is served the canary by replica B
  (whose own config has another weight) after the weight was lowered, while new
  users follow the new weight;
- a rollback (abort, or weight 0 by hand) sends pinned users to control, and
  their old pins do not come back when the weight is raised again;
- `pin_ttl: 0` sends no pin command to Redis; a request with no sticky key is
  counted as a random key;
- Redis paused (CLIENT PAUSE) -> no request waits much longer than redis.timeout;
- Redis stopped -> /health says degraded while /ready stays 200; Redis killed
  while requests flow -> every request is still answered 200, and after a
  restart canaryd reconnects, /health is ok and pins are stored again.

Expected arms are recomputed with hashlib, exactly as SPEC §4 states the formula.
"""
import contextlib
import hashlib
import socket
import threading
import time
import unittest

import harness
from harness import LOOPBACK, chat_body, http, http_json, metric_samples
from rollout_helpers import ADMIN_TOKEN, RedisServer, admin, rollout_config

TIMEOUT_MS = 50
SALT = "it"  # harness.base_config's split.salt
NS = "pins-it"


def hash_arm(user, weight):
    digest = hashlib.sha256(f"{SALT}:{user}".encode()).digest()
    return "canary" if int.from_bytes(digest[:8], "big") % 10000 < round(weight * 100) else "control"


def call(c, user=None):
    t0 = time.monotonic()
    headers = {"X-User-ID": user} if user is not None else {}
    status, headers, _ = http("POST", c.url + "/v1/chat/completions", chat_body(), headers, timeout=10)
    return status, headers.get("X-Canaryd-Arm"), time.monotonic() - t0


def arms(c, users):
    out = {}
    for u in users:
        status, arm, _ = call(c, u)
        assert status == 200, f"{u}: {status}"
        out[u] = arm
    return out


def canary_set(served):
    return {u for u, arm in served.items() if arm == "canary"}


def pin_keys(redis):
    return redis.command("KEYS", f"{NS}:pin:*")


class Monitor:
    """Redis MONITOR on its own connection: every command Redis executes, as
    text, so a test can assert that no command touched a key."""

    def __init__(self, redis):
        self.sock = socket.create_connection((LOOPBACK, redis.port), timeout=10)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.f = self.sock.makefile("rb")
        assert self.f.readline().startswith(b"+OK")
        self.lines = []
        self.redis = redis

    def drain(self):
        """Everything up to now: a marker command is sent on another connection
        and lines are read until it shows up (Redis feeds MONITOR in order)."""
        marker = f"monitor-marker-{time.monotonic_ns()}"
        self.redis.command("ECHO", marker)
        while True:
            line = self.f.readline()
            if not line:
                raise AssertionError("MONITOR connection closed")
            text = line.decode("utf-8", "replace")
            if marker in text:
                return list(self.lines)
            self.lines.append(text)

    def close(self):
        self.f.close()
        self.sock.close()


class PinsAcrossReplicas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(harness.Mock("ctl"))
        cls.canary = cls.enterClassContext(harness.Mock("cny"))

    def config(self, redis, weight, pin_ttl="1h"):
        cfg = rollout_config(self.control.base_url, self.canary.base_url, [{"weight": weight}],
                             redis={"url": redis.url, "timeout": f"{TIMEOUT_MS}ms", "namespace": NS},
                             auto_promote=False)
        cfg["split"]["pin_ttl"] = pin_ttl
        return cfg

    def start_pair(self, stack, redis, weight_a, weight_b, env):
        """Replica A, then (once A has written the shared rollout state) replica B
        with its own, different configured weight: the shared state decides."""
        a = stack.enter_context(harness.Canaryd(self.config(redis, weight_a), env=env))
        harness.wait_until(lambda: redis.command("EXISTS", "{" + NS + "}:rollout") == 1, 5, 0.02, "A wrote the state")
        b = stack.enter_context(harness.Canaryd(self.config(redis, weight_b), env=env))
        harness.wait_until(lambda: admin(b)["weight"] == weight_a, 5, 0.05, f"B serves weight {weight_a}")
        return a, b

    def set_weight(self, via, weight, *others):
        admin(via, "weight", {"weight": weight})
        for c in (via,) + others:
            harness.wait_until(lambda: admin(c)["weight"] == weight, 5, 0.02, f"weight {weight} everywhere")

    def test_pins_are_upgrade_only_across_a_raise_and_a_lowering(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        users = [f"up-{i}" for i in range(300)]
        with RedisServer() as redis, contextlib.ExitStack() as stack:
            a, b = self.start_pair(stack, redis, 10, 90, env)  # B's own config says 90
            at10 = arms(a, users)
            self.assertEqual(at10, {u: hash_arm(u, 10) for u in users}, "weight 10 follows the hash")
            self.assertEqual(len(pin_keys(redis)), len(canary_set(at10)), "only canary pins are stored")

            self.set_weight(a, 50, b)
            at50 = arms(a, users)
            # Users first seen (and not pinned) on control move to the canary.
            self.assertEqual(at50, {u: hash_arm(u, 50) for u in users}, "a raise moves users to the canary")
            self.assertLessEqual(canary_set(at10), canary_set(at50))
            self.assertEqual(len(pin_keys(redis)), len(canary_set(at50)))

            self.set_weight(a, 10, b)
            back = arms(b, users)
            moved = sorted(canary_set(at50) - canary_set(back))
            self.assertEqual(moved, [], f"{len(moved)} users pinned at 50 were moved back to control on B")
            self.assertEqual(canary_set(back), canary_set(at50))
            fresh = arms(b, [f"up-fresh-{i}" for i in range(100)])
            self.assertEqual(fresh, {u: hash_arm(u, 10) for u in fresh}, "new users follow weight 10")

    def test_pin_made_on_a_is_honoured_by_b_after_the_weight_drops(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis, contextlib.ExitStack() as stack:
            a, b = self.start_pair(stack, redis, 100, 5, env)  # B's own config says 5
            users = [f"pinned-{i}" for i in range(40)]
            for u in users:
                status, arm, _ = call(a, u)
                self.assertEqual((status, arm), (200, "canary"), u)
            self.assertEqual(len(pin_keys(redis)), len(users))
            # Lower the weight by hand to 1%: shared through Redis, so B serves 1% too.
            self.set_weight(a, 1, b)
            for u in users:
                status, arm, _ = call(b, u)
                self.assertEqual((status, arm), (200, "canary"), f"{u} lost its pin on B")
            fresh = arms(b, [f"fresh-{i}" for i in range(60)])
            self.assertEqual(fresh, {u: hash_arm(u, 1) for u in fresh}, "new users must follow the new weight")

    def test_rollback_sends_pinned_users_to_control_and_their_pins_do_not_return(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        users = [f"rb-{i}" for i in range(80)]
        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            for how in ("abort", "weight 0"):
                self.set_weight(c, 50)
                pinned = canary_set(arms(c, users))
                self.assertGreater(len(pinned), 20)
                self.set_weight(c, 1)
                self.assertLessEqual(pinned, canary_set(arms(c, users)), "pins hold at weight 1")
                epoch = admin(c)["epoch"]
                if how == "abort":
                    self.assertEqual(admin(c, "abort")["state"], "aborted")
                else:
                    self.assertEqual(admin(c, "weight", {"weight": 0})["weight"], 0)
                self.assertEqual(admin(c)["epoch"], epoch + 1, f"{how} starts a new epoch")
                after = arms(c, users)
                self.assertEqual(canary_set(after), set(), f"after {how} every user is on control")
                # Back to weight 1: the old epoch's pins are gone, the hash decides.
                self.set_weight(c, 1)
                self.assertEqual(arms(c, users), {u: hash_arm(u, 1) for u in users}, f"old pins came back after {how}")

    def test_pin_ttl_zero_sends_no_pin_command(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis:
            for ttl, expect_pins in (("0", False), ("1h", True)):
                with harness.Canaryd(self.config(redis, 50, pin_ttl=ttl), env=env) as c:
                    mon = Monitor(redis)
                    try:
                        served = arms(c, [f"ttl{ttl}-{i}" for i in range(60)])
                        lines = mon.drain()
                    finally:
                        mon.close()
                    pin_cmds = [l for l in lines if f'"{NS}:pin:' in l]
                    if expect_pins:
                        # The check can fail: with pins on, every request made one pin command.
                        self.assertEqual(len(pin_cmds), len(served), "pin_ttl 1h: one command per request")
                        sets = [l for l in pin_cmds if l.split('] "', 1)[1].startswith('SET"')]
                        self.assertEqual(len(sets), len(canary_set(served)), "a SET per canary user, a GET otherwise")
                    else:
                        self.assertEqual(pin_cmds, [], "pin_ttl 0 must not touch pins in Redis")
                        self.assertEqual(pin_keys(redis), [])

    def test_requests_without_a_sticky_key_are_counted_as_random(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}

        def random_keys(c):
            _, _, text = http("GET", c.url + "/metrics")
            return sum(v for _, v in metric_samples(text.decode(), "ai_proxy_sticky_random_keys_total"))

        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            before = random_keys(c)
            for i in range(5):
                self.assertEqual(call(c, f"keyed-{i}")[0], 200)
            self.assertEqual(random_keys(c), before)
            for _ in range(15):
                self.assertEqual(call(c)[0], 200)  # no X-User-ID: the only source
            self.assertEqual(random_keys(c), before + 15)
            # A random key is never pinned: only the keyed canary users left pins.
            keyed_canary = sum(1 for i in range(5) if hash_arm(f"keyed-{i}", 50) == "canary")
            self.assertEqual(len(pin_keys(redis)), keyed_canary)

    def test_paused_redis_never_delays_a_request_much(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            self.assertEqual(call(c, "warm")[0], 200)
            paused_at = time.monotonic()
            redis.command("CLIENT", "PAUSE", "2000", "ALL")
            worst = 0.0
            for i in range(20):
                status, arm, took = call(c, f"paused-{i}")
                self.assertEqual(status, 200)
                worst = max(worst, took)
            self.assertLess(time.monotonic() - paused_at, 1.9, "machine too slow for this test's premise")
            # redis.timeout (50 ms) plus 250 ms for the request itself on a loaded machine.
            self.assertLess(worst, TIMEOUT_MS / 1000 + 0.25, f"a request took {worst:.3f}s with Redis paused")
            self.assertIn('op="pin"', self.redis_errors(c))

    def test_health_is_degraded_while_redis_is_down_and_ready_stays_200(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}

        def health(c):
            status, _, doc = http_json("GET", c.url + "/health")
            self.assertEqual(status, 200)
            return doc["status"], doc["store"]["status"]

        def ready(c):
            return http("GET", c.url + "/ready")[0]

        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            # threads: 2 -> two connections; /health reports both, whichever thread answers.
            harness.wait_until(lambda: health(c) == ("ok", "ok"), 5, 0.05, "healthy with Redis up")
            self.assertEqual(health(c)[1], "ok")
            redis.stop()
            harness.wait_until(lambda: health(c) == ("degraded", "degraded"), 5, 0.05, "degraded with Redis down")
            self.assertEqual(ready(c), 200)
            self.assertEqual(call(c, "while-down")[0], 200)
            for _ in range(10):  # on every connection (new connection each), whichever thread serves it
                self.assertEqual(health(c), ("degraded", "degraded"))
                self.assertEqual(ready(c), 200)
            redis.start()
            harness.wait_until(lambda: health(c) == ("ok", "ok"), 10, 0.05, "ok again after the restart")
            for _ in range(10):
                self.assertEqual(health(c), ("ok", "ok"))

    def test_killed_and_restarted_redis(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            for i in range(10):
                self.assertEqual(call(c, f"before-{i}")[0], 200)
            redis.stop()
            statuses = [call(c, f"down-{i}")[0] for i in range(50)]
            self.assertEqual(statuses, [200] * 50)
            redis.start()

            def pins_again():
                call(c, f"after-{time.monotonic_ns()}")
                return len(redis.command("KEYS", "pins-it:pin:*")) > 0

            harness.wait_until(pins_again, 15, 0.1, "pins stored again after the Redis restart")

    @staticmethod
    def redis_errors(c):
        _, _, body = http("GET", c.url + "/metrics")
        return "\n".join(l for l in body.decode().splitlines()
                         if l.startswith("ai_proxy_redis_errors_total") and not l.endswith(" 0"))


if __name__ == "__main__":
    unittest.main()
