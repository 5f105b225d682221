"""Two canaryd replicas sharing the rollout state through one real
redis-server (issue requirements 6 and 7): an abort on one stops canary
traffic on the other within 2 s, a step advances exactly once, a restarted
replica comes back in the stored state, and a Redis outage leaves each replica
its last known state with local rollback. The key layout of issue 16
({ns}:rollout...): a state in the layout before it is found, and writes of
older replicas still reach this one."""

from __future__ import annotations

import json
import sys
import time
import unittest
import uuid

from harness import Canaryd, Mock, wait_until
from rollout_helpers import ADMIN_ENV, RedisServer, Traffic, admin, end_replicas, rollout_config, send, transitions


def report(msg: str) -> None:
    sys.stderr.write(f"[measured] {msg}\n")


def state_is(c: Canaryd, state: str):
    def check():
        st = admin(c)
        return st if st["state"] == state else None
    return check


class SharedStateTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.control = Mock("control").start()
        self.canary = Mock("canary").start()
        self.ns = "it-" + uuid.uuid4().hex[:8]
        self.replicas: list[Canaryd] = []

    def tearDown(self):
        end_replicas(self, self.replicas)
        self.canary.stop()
        self.control.stop()
        self.redis.stop()
        self.redis.tmp.cleanup()

    def config(self, steps: list[dict]) -> dict:
        return rollout_config(self.control.base_url, self.canary.base_url, steps=steps,
                              redis={"url": self.redis.url, "namespace": self.ns, "timeout": "50ms"})

    def replica(self, cfg: dict) -> Canaryd:
        c = Canaryd(cfg, env=ADMIN_ENV)
        self.replicas.append(c)
        return c.start()

    def key(self, suffix: str = "", legacy: bool = False) -> str:
        """The rollout keys: {ns}:rollout... (hash-tagged, issue 16), or the layout before it."""
        return (self.ns if legacy else "{" + self.ns + "}") + ":rollout" + suffix

    def stored(self, legacy: bool = False) -> dict:
        text = self.redis.command("GET", self.key(legacy=legacy))
        self.assertIsNotNone(text, "no shared rollout state in Redis")
        return json.loads(text)

    def test_abort_on_one_replica_stops_canary_traffic_on_the_other_within_2s(self):
        cfg = self.config([{"weight": 50, "pause": "10m"}])
        a, b = self.replica(cfg), self.replica(cfg)
        sa, sb = admin(a), admin(b)
        self.assertTrue(sa["sync"]["loaded"] and sb["sync"]["loaded"], (sa["sync"], sb["sync"]))
        self.assertEqual((sa["state"], sa["version"]), (sb["state"], sb["version"]))
        with Traffic(b.url, threads=2) as tb:
            wait_until(lambda: tb.count(arm="canary") >= 20, 15, 0.01, "canary traffic through B")
            t0 = time.monotonic()
            admin(a, "abort")
            wait_until(state_is(b, "aborted"), 2.0, 0.01, "B to see the abort")
            t_b = time.monotonic()
            # Keep B busy past the 2 s mark so "no canary after" means something.
            wait_until(lambda: tb.count(since=t0 + 2.0) >= 50, 15, 0.01, "traffic after the 2 s mark")
        results = tb.snapshot()
        last_canary = max(r.t for r in results if r.arm == "canary")
        report(f"abort on A visible on B after {t_b - t0:.3f}s; B's last canary answer {last_canary - t0:.3f}s "
               f"after the abort; {sum(1 for r in results if r.t > t0)} requests through B after it")
        self.assertLess(last_canary - t0, 2.0)
        self.assertEqual([r.status for r in results if r.status != 200], [])
        st = self.stored()
        self.assertEqual((st["state"], st["weight"], st["epoch"]), ("aborted", 0, 1))
        self.assertEqual(admin(b)["epoch"], 1)
        # The abort was made on A only; B adopted it.
        self.assertEqual([t["to"] for t in transitions(a)], ["aborted"])
        self.assertEqual(transitions(b), [])

    def test_a_step_advances_exactly_once(self):
        steps = [{"weight": 10, "pause": "1s"}, {"weight": 25, "pause": "1s"}, {"weight": 50, "pause": "10m"}]
        cfg = self.config(steps)
        a, b = self.replica(cfg), self.replica(cfg)
        t0 = time.monotonic()
        with Traffic(a.url, threads=2), Traffic(b.url, threads=2):
            wait_until(lambda: admin(a)["step"] == 2 and admin(b)["step"] == 2, 28, 0.1, "both replicas at step 2")
            elapsed = time.monotonic() - t0
            # A few more ticks at step 2: nothing moves any further.
            wait_until(lambda: (admin(a)["verdict"] or {}).get("kind") == "pass", 10, 0.1, "a passing verdict")
        sa, sb = admin(a), admin(b)
        self.assertEqual((sa["state"], sa["weight"], sa["version"]), ("progressing", 50, 2))
        self.assertEqual((sb["state"], sb["weight"], sb["version"]), ("progressing", 50, 2))
        st = self.stored()
        self.assertEqual((st["step"], st["weight"], st["version"]), (2, 50, 2))
        made = [(name, t["step"]) for name, c in (("A", a), ("B", b)) for t in transitions(c)]
        self.assertEqual(sorted(s for _, s in made), [1, 2], f"advances made: {made}")
        self.assertEqual(len({name for name, _ in made}), 1, f"advances by more than one replica: {made}")
        holder = made[0][0]
        self.assertTrue((sa if holder == "A" else sb)["sync"]["lease"])
        self.assertFalse((sb if holder == "A" else sa)["sync"]["lease"])
        # One event per written version: 0 (the first replica's initial write), 1, 2.
        events = self.redis.command("XRANGE", self.key(":events"), "-", "+")
        versions = [int(fields[fields.index("version") + 1]) for _, fields in events]
        self.assertEqual(versions, [0, 1, 2])
        report(f"two replicas: steps 0->1->2 advanced once each, all by replica {holder} (lease holder), "
               f"in {elapsed:.1f}s; stored version 2; events {versions}")

    def test_a_restarted_replica_comes_back_in_the_stored_state(self):
        cfg = self.config([{"weight": 10, "pause": "10m"}, {"weight": 50, "pause": "10m"}])
        a, b = self.replica(cfg), self.replica(cfg)
        admin(a, "weight", {"weight": 25})
        wait_until(lambda: admin(b)["weight"] == 25, 2.0, 0.01, "B at weight 25")
        b.stop()
        b2 = self.replica(cfg)
        st = admin(b2)
        self.assertEqual((st["state"], st["weight"], st["version"], st["epoch"]), ("paused", 25, 1, 0), st)
        self.assertTrue(any(line.get("msg") == "rollout state loaded from the shared store" for line in b2.log_lines())
                        or "loaded" in json.dumps(st["sync"]))
        share = sum(1 for r in send(b2.url, 400) if r.arm == "canary") / 400
        self.assertGreater(share, 0.15)
        self.assertLess(share, 0.35)

        # Restarting into an aborted rollout: no request reaches the canary, from the first one on.
        admin(a, "abort")
        wait_until(lambda: self.stored()["state"] == "aborted", 2.0, 0.01, "abort stored")
        b2.stop()
        canary_before = self.canary.stats()["requests"]
        b3 = self.replica(cfg)
        results = send(b3.url, 200)
        self.assertEqual(self.canary.stats()["requests"], canary_before)
        self.assertTrue(all(r.arm == "control" for r in results))
        st = admin(b3)
        self.assertEqual((st["state"], st["weight"], st["epoch"], st["version"]), ("aborted", 0, 1, 2), st)
        report(f"restarted replica resumed the stored state (paused at 25%: {share:.0%} canary; then aborted: "
               f"0 of 200 requests to the canary)")

    def test_a_change_without_an_event_is_picked_up_by_the_poll(self):
        # The safety net: a state written straight into Redis (no stream entry,
        # as if the event were lost) still reaches every replica within ~1 s.
        cfg = self.config([{"weight": 50, "pause": "10m"}])
        a, b = self.replica(cfg), self.replica(cfg)
        st = self.stored()
        st.update({"state": "aborted", "weight": 0, "epoch": st["epoch"] + 1, "version": st["version"] + 1,
                   "reason": "aborted by hand in Redis"})
        t0 = time.monotonic()
        self.redis.command("SET", self.key(), json.dumps(st))
        wait_until(lambda: admin(a)["state"] == "aborted" and admin(b)["state"] == "aborted", 1.5, 0.01,
                   "both replicas to poll the new state")
        report(f"a change without an event reached both replicas by polling in {time.monotonic() - t0:.3f}s")
        self.assertTrue(all(r.arm == "control" for r in send(a.url, 50) + send(b.url, 50)))

    def test_a_state_in_the_key_layout_before_issue_16_is_found_and_kept_in_step(self):
        # A canaryd from before issue 16 kept the state under <ns>:rollout (no
        # hash tag). A replica of this version finds it there, and writes both
        # layouts, so old replicas still running during the upgrade see its changes.
        cfg = self.config([{"weight": 10, "pause": "10m"}])
        a = self.replica(cfg)
        st = self.stored()
        a.stop()
        self.replicas.remove(a)
        a.cleanup()
        st.update({"state": "paused", "weight": 25, "version": 7})
        for suffix in ("", ":lease", ":events"):
            self.redis.command("DEL", self.key(suffix), self.key(suffix, legacy=True))
        self.redis.command("SET", self.key(legacy=True), json.dumps(st))
        b = self.replica(cfg)
        sb = admin(b)
        self.assertEqual((sb["state"], sb["weight"], sb["version"]), ("paused", 25, 7), sb)
        admin(b, "abort")
        wait_until(lambda: self.stored()["state"] == "aborted", 2.0, 0.01, "abort stored in the new layout")
        self.assertEqual(self.stored(), self.stored(legacy=True), "the two layouts differ")
        self.assertEqual(self.stored()["version"], 8)
        legacy_events = self.redis.command("XRANGE", self.key(":events", legacy=True), "-", "+")
        self.assertEqual([int(f[f.index("version") + 1]) for _, f in legacy_events], [8])
        # The lease is held in both layouts by the same replica: an old replica cannot take it.
        self.assertEqual(self.redis.command("GET", self.key(":lease")), self.redis.command("GET", self.key(":lease", legacy=True)))

    def test_a_write_by_a_replica_from_before_issue_16_reaches_this_one(self):
        # What the old CAS script does: SET <ns>:rollout and XADD <ns>:rollout:events.
        cfg = self.config([{"weight": 50, "pause": "10m"}])
        a = self.replica(cfg)
        st = self.stored()
        st.update({"state": "aborted", "weight": 0, "epoch": st["epoch"] + 1, "version": st["version"] + 1,
                   "reason": "aborted by an old replica"})
        t0 = time.monotonic()
        self.redis.command("SET", self.key(legacy=True), json.dumps(st))
        self.redis.command("XADD", self.key(":events", legacy=True), "MAXLEN", "~", "100", "*", "version",
                           str(st["version"]))
        wait_until(state_is(a, "aborted"), 1.0, 0.01, "the new replica to adopt the old one's abort")
        report(f"an old-layout write (rolling upgrade) reached a new replica in {time.monotonic() - t0:.3f}s")
        self.assertTrue(all(r.arm == "control" for r in send(a.url, 50)))

    def test_start_with_redis_down_sends_nothing_to_the_canary_until_it_answers(self):
        self.redis.stop()
        cfg = self.config([{"weight": 50, "pause": "10m"}])
        t0 = time.monotonic()
        a = self.replica(cfg)
        started = time.monotonic() - t0
        st = admin(a)
        self.assertFalse(st["sync"]["loaded"], st["sync"])
        self.assertTrue(all(r.arm == "control" for r in send(a.url, 50)))
        self.redis.start()
        wait_until(lambda: admin(a)["sync"]["loaded"], 10, 0.05, "the stored state to be read")
        share = sum(1 for r in send(a.url, 200) if r.arm == "canary") / 200
        report(f"Redis down at start: canaryd served after {started:.1f}s with no canary traffic; "
               f"{share:.0%} canary once Redis answered")
        self.assertGreater(share, 0.3)
        self.assertEqual(self.stored()["weight"], 50)

    def test_redis_down_keeps_last_state_and_rolls_back_locally(self):
        cfg = self.config([{"weight": 50, "pause": "10m"}])
        a, b = self.replica(cfg), self.replica(cfg)
        self.redis.stop()
        wait_until(lambda: not admin(a)["sync"]["healthy"], 5, 0.05, "A to notice Redis is down")
        # Last known state kept: both still split.
        self.assertGreater(sum(1 for r in send(b.url, 100) if r.arm == "canary"), 20)
        # A rolls back on its own.
        st = admin(a, "abort")
        self.assertEqual(st["state"], "aborted")
        self.assertTrue(all(r.arm == "control" for r in send(a.url, 100)))
        self.assertEqual(admin(a)["sync"]["pending"], 1)
        # Redis comes back empty: A's rollback is written and reaches B.
        t0 = time.monotonic()
        self.redis.start()
        wait_until(state_is(b, "aborted"), 10, 0.05, "B to adopt A's rollback after Redis returned")
        report(f"Redis back (empty): A's local rollback reached B after {time.monotonic() - t0:.2f}s")
        wait_until(lambda: admin(a)["sync"]["pending"] == 0, 5, 0.05, "A's rollback written")
        st = self.stored()
        self.assertEqual(st["state"], "aborted")
        self.assertTrue(all(r.arm == "control" for r in send(b.url, 100)))


if __name__ == "__main__":
    unittest.main()
