"""Upstreams over TLS: a private CA via ca_file, hostname verification, and
tls_verify: false. Certificates are made with the openssl CLI per run."""

import json
import unittest

from harness import Canaryd, CertAuthority, Mock, assert_openai_error, base_config, chat_body, http


def tls_mentioned(err: dict) -> bool:
    text = (str(err.get("message", "")) + " " + str(err.get("code", ""))).lower()
    return any(w in text for w in ("tls", "ssl", "certificate", "verif", "handshake"))


class TlsUpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ca = CertAuthority()
        cls.addClassCleanup(ca.cleanup)
        good_cert, good_key = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])
        other_cert, other_key = ca.issue("other.example", dns=["other.example"])
        cls.good = cls.enterClassContext(Mock("tls-good", tls_cert=good_cert, tls_key=good_key))
        cls.other = cls.enterClassContext(Mock("tls-other", tls_cert=other_cert, tls_key=other_key))
        # A: control verified through the test CA; canary presents a cert for another name.
        cls.a = cls.enterClassContext(Canaryd(base_config(
            f"https://localhost:{cls.good.port}/v1", f"https://localhost:{cls.other.port}/v1",
            upstreams={"ctl": {"ca_file": ca.cert}, "cny": {"ca_file": ca.cert}},
            fallback={"enabled": False})))
        # B: control with verification off; canary trusted by system CAs only.
        cls.b = cls.enterClassContext(Canaryd(base_config(
            f"https://localhost:{cls.other.port}/v1", f"https://localhost:{cls.good.port}/v1",
            upstreams={"ctl": {"tls_verify": False}},
            fallback={"enabled": False})))

    def test_verified_upstream_200(self):
        status, headers, body = http("POST", self.a.url + "/v1/chat/completions", chat_body())
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("X-Canaryd-Provider"), "ctl")
        self.assertEqual(json.loads(body)["object"], "chat.completion")
        seen = self.good.stats()["last_headers"]
        self.assertEqual(seen.get("host"), f"localhost:{self.good.port}")

    def test_verified_upstream_streams(self):
        status, _, body = http("POST", self.a.url + "/v1/chat/completions", chat_body(stream=True),
                               {"X-Mock-Stream-Chunks": "3"})
        self.assertEqual(status, 200, body)
        self.assertIn(b"[DONE]", body)

    def test_wrong_hostname_502(self):
        before = self.other.stats()["requests"]
        status, headers, body = http("POST", self.a.url + "/v1/chat/completions", chat_body(),
                                     {"X-Canary": "canary"})
        self.assertEqual(status, 502, body)
        err = assert_openai_error(body, "502 tls")
        self.assertTrue(tls_mentioned(err), f"the 502 does not say it is a TLS failure: {err}")
        self.assertEqual(self.other.stats()["requests"], before, "a request went to an unverified upstream")

    def test_tls_verify_false_200(self):
        status, _, body = http("POST", self.b.url + "/v1/chat/completions", chat_body())
        self.assertEqual(status, 200, body)

    def test_private_ca_without_ca_file_502(self):
        before = self.good.stats()["requests"]
        status, _, body = http("POST", self.b.url + "/v1/chat/completions", chat_body(), {"X-Canary": "canary"})
        self.assertEqual(status, 502, body)
        err = assert_openai_error(body, "502 untrusted")
        self.assertTrue(tls_mentioned(err), f"the 502 does not say it is a TLS failure: {err}")
        self.assertEqual(self.good.stats()["requests"], before)

    def test_tls_connections_pooled(self):
        self.good.reset()
        for _ in range(8):
            status, _, body = http("POST", self.a.url + "/v1/chat/completions", chat_body())
            self.assertEqual(status, 200, body)
        st = self.good.stats()
        self.assertEqual(st["requests"], 8)
        self.assertLessEqual(st["connections_accepted"], 2)


if __name__ == "__main__":
    unittest.main()
