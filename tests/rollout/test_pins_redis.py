"""Sticky pins shared through a real Redis by two canaryd processes, and Redis
failing under them (the splitter issue's integration tests):

- a user pinned to the canary through replica A is served the canary by replica B
  after the weight was lowered (pins are upgrade-only), while new users follow the
  new weight;
- Redis paused (CLIENT PAUSE) -> no request waits much longer than redis.timeout;
- Redis killed while requests flow -> every request is still answered 200, and after
  a restart canaryd reconnects and stores pins again.
"""
import time
import unittest

import harness
from harness import LOOPBACK, chat_body, http
from rollout_helpers import ADMIN_TOKEN, RedisServer, admin, rollout_config

TIMEOUT_MS = 50


def call(c, user):
    t0 = time.monotonic()
    status, headers, _ = http("POST", c.url + "/v1/chat/completions", chat_body(), {"X-User-ID": user}, timeout=10)
    return status, headers.get("X-Canaryd-Arm"), time.monotonic() - t0


class PinsAcrossReplicas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = harness.Mock("ctl").start()
        cls.canary = harness.Mock("cny").start()

    @classmethod
    def tearDownClass(cls):
        cls.control.stop()
        cls.canary.stop()

    def config(self, redis, weight):
        cfg = rollout_config(self.control.base_url, self.canary.base_url, [{"weight": weight}],
                             redis={"url": redis.url, "timeout": f"{TIMEOUT_MS}ms", "namespace": "pins-it"})
        cfg["split"]["pin_ttl"] = "1h"
        return cfg

    def test_pin_made_on_a_is_honoured_by_b_after_the_weight_drops(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis, harness.Canaryd(self.config(redis, 100), env=env) as a, \
                harness.Canaryd(self.config(redis, 100), env=env) as b:
            users = [f"pinned-{i}" for i in range(40)]
            for u in users:
                status, arm, _ = call(a, u)
                self.assertEqual((status, arm), (200, "canary"), u)
            pins = [k for k in redis.command("KEYS", "pins-it:pin:*")]
            self.assertGreaterEqual(len(pins), len(users))
            # Lower the weight by hand to 1%: shared through Redis, so B serves 1% too.
            admin(a, "weight", {"weight": 1})
            harness.wait_until(lambda: admin(b)["weight"] == 1, 5, 0.05, "B sees weight 1")
            for u in users:
                status, arm, _ = call(b, u)
                self.assertEqual((status, arm), (200, "canary"), f"{u} lost its pin on B")
            fresh = [call(b, f"fresh-{i}")[1] for i in range(60)]
            self.assertLessEqual(fresh.count("canary"), 5, "new users must follow the new weight")

    def test_paused_redis_never_delays_a_request_much(self):
        env = {"CANARYD_IT_ADMIN_TOKEN": ADMIN_TOKEN}
        with RedisServer() as redis, harness.Canaryd(self.config(redis, 50), env=env) as c:
            self.assertEqual(call(c, "warm")[0], 200)
            redis.command("CLIENT", "PAUSE", "2000", "ALL")
            worst = 0.0
            for i in range(20):
                status, arm, took = call(c, f"paused-{i}")
                self.assertEqual(status, 200)
                worst = max(worst, took)
            # redis.timeout is 50 ms; allow generous slack for a loaded 2-core machine.
            self.assertLess(worst, TIMEOUT_MS / 1000 + 0.5, f"a request took {worst:.3f}s with Redis paused")
            self.assertIn('op="pin"', self.redis_errors(c))

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
