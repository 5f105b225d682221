"""The binary's life: --check-config, SIGTERM (drain, in-flight requests
finish, exit 0) and SIGHUP reload."""

import json
import os
import signal
import threading
import time
import unittest

import harness
from harness import Canaryd, Mock, base_config, chat_body, check_config, free_port, http, to_yaml, wait_until

GOOD_YAML = """\
server:
  listen: "127.0.0.1:0"
  client_keys_env: CANARYD_IT_CLIENT_KEYS
upstreams:
  ctl:
    base_url: "http://127.0.0.1:9/v1"
    api_key_env: CANARYD_IT_CONTROL_KEY
  cny:
    base_url: "https://canary.example/v1"
    api_key_env: CANARYD_IT_CANARY_KEY
split:
  control: ctl
  canary: cny
"""


class CheckConfigTest(unittest.TestCase):
    def assert_points_at(self, yaml_text, line, key_fragment):
        rc, out, err, path = check_config(yaml_text)
        self.assertEqual(rc, 1, f"stdout: {out}\nstderr: {err}")
        text = out + err
        self.assertIn(f"{path}:{line}:", text, text)
        self.assertIn(key_fragment, text)

    def test_unknown_key_names_file_and_line(self):
        bad = GOOD_YAML.replace('  client_keys_env:', '  client_keys_envv:')
        self.assert_points_at(bad, 3, "client_keys_envv")

    def test_bad_duration_names_file_and_line(self):
        bad = GOOD_YAML.replace('    api_key_env: CANARYD_IT_CANARY_KEY\n',
                                '    api_key_env: CANARYD_IT_CANARY_KEY\n    timeout: 10 parsecs\n')
        self.assert_points_at(bad, 11, "timeout")

    def test_unknown_upstream_in_split(self):
        bad = GOOD_YAML.replace("  canary: cny", "  canary: nosuch")
        self.assert_points_at(bad, 13, "canary")

    def test_good_config_prints_redacted_yaml(self):
        secrets = {"CANARYD_IT_CONTROL_KEY": "sk-ctl-SECRET-81f2", "CANARYD_IT_CANARY_KEY": "sk-cny-SECRET-6a0c",
                   "CANARYD_IT_CLIENT_KEYS": "ck-SECRET-one,ck-SECRET-two"}
        rc, out, err, _ = check_config(GOOD_YAML, env=secrets)
        self.assertEqual(rc, 0, err)
        for value in ("sk-ctl-SECRET-81f2", "sk-cny-SECRET-6a0c", "ck-SECRET-one", "ck-SECRET-two", "SECRET"):
            self.assertNotIn(value, out + err)
        self.assertIn("https://canary.example/v1", out)
        self.assertIn("CANARYD_IT_CONTROL_KEY", out)
        self.assertIn("ctl", out)

    def test_harness_yaml_is_accepted(self):
        rc, out, err, _ = check_config(to_yaml(base_config("http://127.0.0.1:9/v1")))
        self.assertEqual(rc, 0, err)


class SignalsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.control = cls.enterClassContext(Mock("control-mock"))

    def test_sigterm_exits_zero(self):
        with Canaryd(base_config(self.control.base_url)) as cd:
            status, _, body = http("POST", cd.url + "/v1/chat/completions", chat_body())
            self.assertEqual(status, 200, body)
            t0 = time.monotonic()
            self.assertEqual(cd.stop(), 0)
            self.assertLess(time.monotonic() - t0, 3.0, "drain_delay 0s: shutdown should be quick")
            # the log file is complete once the process exited
            self.assertTrue([l for l in cd.log_lines() if l.get("msg") == "canaryd stopped"], cd.tail())

    def test_sigterm_drains_and_finishes_inflight(self):
        cfg = base_config(self.control.base_url, server={"drain_delay": "1s", "shutdown_grace": "5s"})
        with Canaryd(cfg) as cd:
            result = {}

            def slow_call():
                result["r"] = http("POST", cd.url + "/v1/chat/completions", chat_body(),
                                   {"X-Mock-Latency-Ms": "1500"}, timeout=10)

            t = threading.Thread(target=slow_call)
            t.start()
            wait_until(lambda: self.control.stats()["active_connections"] >= 1 and
                       self.control.stats()["requests"] >= 1, timeout=5, message="the slow call to be in flight")
            t0 = time.monotonic()
            cd.signal(signal.SIGTERM)
            # during drain_delay /ready says 503 while the listener still accepts
            wait_until(lambda: http("GET", cd.url + "/ready", timeout=2)[0] == 503, timeout=1.0,
                       message="/ready to answer 503 while draining")
            rc = cd.wait_exit(timeout=10)
            elapsed = time.monotonic() - t0
            t.join(timeout=10)
            self.assertEqual(rc, 0, cd.tail())
            self.assertGreaterEqual(elapsed, 0.9, "exited before drain_delay")
            self.assertIn("r", result, "the in-flight call got no answer")
            self.assertEqual(result["r"][0], 200, result["r"][2])

    def test_sighup_reloads_and_rejects_bad_file(self):
        with Mock("other-mock") as other:
            cfg = base_config(self.control.base_url)
            with Canaryd(cfg) as cd:
                cd.write_config(base_config(other.base_url))
                cd.signal(signal.SIGHUP)

                def served_by_other():
                    s, _, _ = http("POST", cd.url + "/v1/chat/completions", chat_body())
                    return s == 200 and other.stats()["requests"] >= 1

                wait_until(served_by_other, timeout=5, interval=0.1, message="the reloaded upstream to serve")
                with open(cd.config_path, "a") as f:
                    f.write("bogus_top_level_key: 1\n")
                cd.signal(signal.SIGHUP)
                cd.wait_log(lambda l: "reject" in str(l.get("msg", "")), timeout=5, message="reload rejected log")
                before = other.stats()["requests"]
                status, _, body = http("POST", cd.url + "/v1/chat/completions", chat_body())
                self.assertEqual(status, 200, body)
                self.assertEqual(other.stats()["requests"], before + 1, "the running config must stay")

    def test_reload_names_the_keys_that_need_a_restart(self):
        cfg = base_config(self.control.base_url)
        with Canaryd(cfg) as cd:
            # server.threads: the rest of the file is applied, with a warning naming the key.
            cd.write_config(base_config(self.control.base_url, server={"threads": 3}))
            cd.signal(signal.SIGHUP)
            line = cd.wait_log(lambda l: "restart" in str(l.get("msg", "")), timeout=5,
                               message="a warning naming the restart-only keys")
            self.assertEqual(line.get("keys"), "server.threads", line)
            cd.wait_log(lambda l: l.get("msg") == "config reloaded", timeout=5, message="the rest applied")
            # A redis section appearing: refused whole (pins and connections cannot move
            # half-way), naming the key; Redis on a port nobody listens on is never tried.
            cd.write_config(base_config(self.control.base_url, server={"threads": 3},
                                        redis={"url": f"redis://127.0.0.1:{free_port()}/0"}))
            cd.signal(signal.SIGHUP)
            line = cd.wait_log(lambda l: "reject" in str(l.get("msg", "")), timeout=5,
                               message="the redis change refused")
            self.assertIn("redis: restart canaryd", str(line.get("error")), line)
            status, _, body = http("POST", cd.url + "/v1/chat/completions", chat_body())
            self.assertEqual(status, 200, body)
            _, _, health = http("GET", cd.url + "/health")
            self.assertEqual(json.loads(health)["store"]["kind"], "memory", health)


if __name__ == "__main__":
    unittest.main()
