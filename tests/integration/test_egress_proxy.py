"""The per-upstream egress proxy (upstreams.X.proxy, HTTP CONNECT): canaryd opens
a tunnel through it, pools the tunnelled connection, and turns a proxy that
refuses the tunnel into a 502."""
import socket
import threading
import unittest

import harness
from harness import LOOPBACK, chat_body, http


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the tunnels asked for."""

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.targets = []
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            method, target, _ = line.split(" ", 2)
            self.targets.append((method, target))
            if method != "CONNECT" or self.refuse:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                t = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
                t.start()
                self._pipe(client, upstream)
                t.join(5)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.sock.close()


class EgressProxy(unittest.TestCase):
    def test_requests_go_through_the_tunnel_and_reuse_it(self):
        proxy = ConnectProxy()
        try:
            with harness.Mock("ctl") as mock:
                cfg = harness.base_config(mock.base_url, upstreams={"ctl": {"proxy": f"http://{LOOPBACK}:{proxy.port}"}})
                with harness.Canaryd(cfg) as c:
                    for _ in range(5):
                        status, headers, body = http("POST", c.url + "/v1/chat/completions", chat_body())
                        self.assertEqual(status, 200, body)
                        self.assertEqual(headers.get("X-Canaryd-Provider"), "ctl")
                    self.assertGreaterEqual(len(proxy.targets), 1)
                    self.assertTrue(all(t == ("CONNECT", f"{LOOPBACK}:{mock.port}") for t in proxy.targets),
                                    proxy.targets)
                    # Pooled: far fewer tunnels than requests (at most one per I/O thread).
                    self.assertLessEqual(len(proxy.targets), 2, proxy.targets)
                    self.assertEqual(mock.stats()["requests"], 5)
        finally:
            proxy.close()

    def test_a_refused_tunnel_is_a_502(self):
        proxy = ConnectProxy(refuse=True)
        try:
            with harness.Mock("ctl") as mock:
                cfg = harness.base_config(mock.base_url, upstreams={"ctl": {"proxy": f"http://{LOOPBACK}:{proxy.port}"}})
                with harness.Canaryd(cfg) as c:
                    status, _, body = http("POST", c.url + "/v1/chat/completions", chat_body())
                    self.assertEqual(status, 502, body)
                    harness.assert_openai_error(body, "CONNECT")
                    self.assertEqual(mock.stats()["requests"], 0)
        finally:
            proxy.close()


if __name__ == "__main__":
    unittest.main()
