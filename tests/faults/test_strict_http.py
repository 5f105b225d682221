"""Strict HTTP: request framings a proxy must refuse (request smuggling,
routing confusion) get 400 and a closed connection and never reach the
upstream; malformed upstream answers become 502, not a crash."""

import unittest

import harness
from harness import Canaryd, Mock, chat_body, http
from fault_helpers import CHAT, body_of, no_fallback_config, raw_request, requests_total, status_of, still_serving

BODY = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}'
CL = str(len(BODY)).encode()

BAD_REQUESTS = {
    "content_length_and_transfer_encoding":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL +
        b"\r\nTransfer-Encoding: chunked\r\n\r\n" + BODY,
    "transfer_encoding_then_content_length":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: " + CL +
        b"\r\n\r\n" + BODY,
    "duplicate_identical_content_length":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL + b"\r\nContent-Length: " + CL +
        b"\r\n\r\n" + BODY,
    "duplicate_different_content_length":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL + b"\r\nContent-Length: 3\r\n\r\n" +
        BODY,
    "content_length_list":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL + b", " + CL + b"\r\n\r\n" + BODY,
    "negative_content_length":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + BODY,
    "transfer_encoding_not_chunked":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + BODY,
    "transfer_encoding_chunked_not_last":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "invalid_chunk_size":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY +
        b"\r\n0\r\n\r\n",
    "overflowing_chunk_size":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1000000000000000000000040\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk_size_without_crlf":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
        format(len(BODY), "x").encode() + b"\n" + BODY + b"\r\n0\r\n\r\n",
    "bare_lf_in_headers":
        b"POST " + CHAT.encode() + b" HTTP/1.1\nHost: x\nContent-Length: " + CL + b"\n\n" + BODY,
    "bare_lf_one_header":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
    "bare_cr_in_header":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\rX-Evil: 1\r\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
    "obs_fold":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\nContent-Length: " + CL +
        b"\r\n\r\n" + BODY,
    "absolute_form_target":
        b"POST http://x/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
    "authority_form_target":
        b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    "space_before_colon":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length : " + CL + b"\r\n\r\n" + BODY,
    "duplicate_host":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
    "nul_in_header":
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
    "http_0_9_style":
        b"POST " + CHAT.encode() + b"\r\n\r\n",
    "http_2_version":
        b"POST " + CHAT.encode() + b" HTTP/2.0\r\nHost: x\r\nContent-Length: " + CL + b"\r\n\r\n" + BODY,
}


class StrictRequestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = cls.enterClassContext(Mock("strict-mock"))
        cls.cd = cls.enterClassContext(Canaryd(no_fallback_config(cls.mock.base_url)))

    def test_bad_framings_get_400_close_and_are_never_forwarded(self):
        self.mock.reset()
        before = requests_total(self.cd)
        for name, data in BAD_REQUESTS.items():
            with self.subTest(name):
                raw, closed = raw_request(self.cd.port, data)
                self.assertEqual(status_of(raw), 400, f"{name}: {raw[:300]!r}")
                self.assertTrue(closed, f"{name}: the connection must be closed after a framing error")
                head = raw.split(b"\r\n\r\n", 1)[0].lower()
                self.assertIn(b"connection: close", head, name)
                harness.assert_openai_error(body_of(raw).split(b"HTTP/1.1")[0], name)
                self.assertEqual(raw.count(b"HTTP/1.1 "), 1, f"{name}: exactly one response: {raw!r}")
        self.assertEqual(self.mock.stats()["requests"], 0, "a refused request reached the upstream")
        self.assertEqual(requests_total(self.cd), before)
        still_serving(self, self.cd)

    def test_good_framings_still_pass(self):
        self.mock.reset()
        chunked = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n" + format(len(BODY), "x").encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n")
        raw, _ = raw_request(self.cd.port, chunked)
        self.assertEqual(status_of(raw), 200, raw[:300])
        plain = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + CL +
                 b"\r\nConnection: close\r\n\r\n" + BODY)
        raw, _ = raw_request(self.cd.port, plain)
        self.assertEqual(status_of(raw), 200, raw[:300])
        self.assertEqual(self.mock.stats()["requests"], 2)

    def test_pipelined_smuggle_attempt_is_one_400(self):
        # CL.TE smuggling: the tail would be a second request to a lax parser.
        self.mock.reset()
        data = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        raw, closed = raw_request(self.cd.port, data)
        self.assertEqual(status_of(raw), 400, raw[:300])
        self.assertEqual(raw.count(b"HTTP/1.1 "), 1, raw)
        self.assertTrue(closed)
        self.assertEqual(self.mock.stats()["requests"], 0)


class MalformedUpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = cls.enterClassContext(Mock("bad-upstream"))
        cls.cd = cls.enterClassContext(Canaryd(no_fallback_config(cls.mock.base_url)))

    def one(self, headers, expect):
        before = requests_total(self.cd)
        status, _, body = http("POST", self.cd.url + CHAT, chat_body(), headers, timeout=10)
        self.assertIn(status, expect, body[:300])
        if status >= 400:
            harness.assert_openai_error(body, str(headers))
        self.assertEqual(requests_total(self.cd) - before, 1, "one upstream attempt, counted once")
        return status, body

    def test_truncated_chunked_body_is_502(self):
        self.one({"X-Mock-Truncate": "1"}, (502,))

    def test_reset_before_response_is_502(self):
        self.one({"X-Mock-Reset": "before"}, (502,))

    def test_reset_mid_body_is_502(self):
        self.one({"X-Mock-Reset": "mid-stream"}, (502,))

    def test_malformed_json_is_relayed_or_502(self):
        # The body is the upstream's; canaryd relays a 200 as-is or refuses it with 502, never crashes.
        self.one({"X-Mock-Malformed": "1"}, (200, 502))

    def test_still_serving(self):
        still_serving(self, self.cd)


if __name__ == "__main__":
    unittest.main()
