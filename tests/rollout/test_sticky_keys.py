"""The client_ip sticky key behind a trusted proxy, end to end (docs/split.md):

- several X-Forwarded-For lines are one list, joined in order, and the rightmost
  untrusted address is the user: a client's own first line cannot pick its arm;
- an entry that is not an address ends the walk: no usable client address, so
  the request falls to the next source (here none: a random key, counted).

The expected arm is recomputed here with hashlib, exactly as SPEC §4 states it.
"""
import hashlib
import http.client as httpclient
import json
import unittest

import harness
from harness import LOOPBACK, chat_body, http, metric_samples
from rollout_helpers import ADMIN_ENV, admin, rollout_config

SALT = "it"  # harness.base_config's split.salt
WEIGHT = 50


def expected_arm(key: str, weight: float = WEIGHT) -> str:
    digest = hashlib.sha256(f"{SALT}:{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10000
    return "canary" if bucket < round(weight * 100) else "control"


def post_with_xff(c: harness.Canaryd, lines: list[str]) -> tuple[int, str]:
    """One chat request carrying each of `lines` as its own X-Forwarded-For field line."""
    conn = httpclient.HTTPConnection(LOOPBACK, c.port, timeout=10)
    try:
        body = json.dumps(chat_body()).encode()
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for line in lines:
            conn.putheader("X-Forwarded-For", line)
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.headers.get("X-Canaryd-Arm", "")
    finally:
        conn.close()


def random_keys(c: harness.Canaryd) -> float:
    _, _, text = http("GET", c.url + "/metrics")
    return sum(v for _, v in metric_samples(text.decode(), "ai_proxy_sticky_random_keys_total"))


class StickyClientIp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(harness.Mock("ctl"))
        cls.canary = cls.enterClassContext(harness.Mock("cny"))

    def config(self):
        cfg = rollout_config(self.control.base_url, self.canary.base_url, [{"weight": WEIGHT}], auto_promote=False)
        cfg["split"]["sticky_key"] = ["client_ip"]
        cfg["server"]["trusted_proxies"] = ["127.0.0.0/8"]
        return cfg

    def test_rightmost_untrusted_address_across_several_xff_lines(self):
        # Pairs where the forged and the real address hash to different arms,
        # so reading only the first line would give the wrong arm.
        real = [f"198.51.100.{i}" for i in range(1, 255)]
        forged = [f"203.0.113.{i}" for i in range(1, 255)]
        pairs = [(f, r) for f, r in zip(forged, real) if expected_arm(f) != expected_arm(r)][:30]
        self.assertGreaterEqual(len(pairs), 20)
        with harness.Canaryd(self.config(), env=ADMIN_ENV) as c:
            self.assertEqual(admin(c)["weight"], WEIGHT)
            for f, r in pairs:
                # The client's own line claims f, then a trusted-looking hop; our
                # proxy (127.0.0.1, trusted) appended the address it saw.
                status, arm = post_with_xff(c, [f"{f}, 127.0.0.9", r])
                self.assertEqual((status, arm), (200, expected_arm(r)), f"forged {f}, real {r}")
                # Trusted hops after the real address, in a third line, change nothing.
                status, arm = post_with_xff(c, [f, r, "127.0.0.7, 127.0.0.8"])
                self.assertEqual((status, arm), (200, expected_arm(r)), f"forged {f}, real {r}, 3 lines")
            self.assertEqual(random_keys(c), 0)

    def test_unparsable_entry_gives_no_client_address(self):
        with harness.Canaryd(self.config(), env=ADMIN_ENV) as c:
            before = random_keys(c)
            n = 12
            for i in range(n):
                # A client-written address left of "unknown" must not be used:
                # client_ip is the only source, so each request gets a random key.
                status, _ = post_with_xff(c, [f"198.51.100.{i + 1}, unknown"])
                self.assertEqual(status, 200)
            harness.wait_until(lambda: random_keys(c) == before + n, 5, 0.05, "random keys counted")
            # The same address with a usable chain is sticky again (no random key).
            status, arm = post_with_xff(c, ["unknown, 198.51.100.1"])
            self.assertEqual((status, arm), (200, expected_arm("198.51.100.1")))
            self.assertEqual(random_keys(c), before + n)


if __name__ == "__main__":
    unittest.main()
