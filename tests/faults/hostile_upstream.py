"""A scripted, hostile OpenAI-compatible upstream on a raw socket.

Each request names its behaviour in `X-Hostile: <mode>` and carries a tag in
`X-Tag`; the honest part of every answer echoes that tag (`{"tag": ...}`), so a
test can check that each client got its own answer. The modes are what a buggy
or compromised upstream (or a hop in front of it) sends: interim responses,
bytes past the response, two responses in one write, a short body, a chunk size
that overflows, a stall, a body on a HEAD answer.

    with HostileUpstream() as up:
        up.base_url    # http://127.0.0.1:PORT/v1
        up.requests    # requests read so far (method, path, headers)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Optional

LOOPBACK = "127.0.0.1"


def answer(tag: str, status: int = 200, extra_headers: bytes = b"", close: bool = False) -> bytes:
    body = json.dumps({"object": "chat.completion", "tag": tag,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "tag " + tag},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
    reason = {200: b"OK", 204: b"No Content", 304: b"Not Modified"}.get(status, b"Whatever")
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (status, reason, len(body)) +
            extra_headers + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    return head + body


def chunked_answer(tag: str) -> bytes:
    body = json.dumps({"object": "chat.completion", "tag": tag}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
            b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


def evil(tag: str) -> bytes:
    """A complete, well-formed response that answers nobody: if it reaches a client, that is a desync."""
    return answer("EVIL-after-" + tag)


class HostileUpstream:
    def __init__(self, stall_seconds: float = 30.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[str, str, dict]] = []
        self.connections = 0
        self.late_sent = 0  # late_response: extra responses sent after an answer
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.open: set[socket.socket] = set()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def __enter__(self) -> "HostileUpstream":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.sock.close()
        with self.lock:
            for c in list(self.open):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        for t in self.threads:
            t.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read_request(self, conn: socket.socket, buf: bytes) -> Optional[tuple[str, str, dict, bytes]]:
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return method, path, headers, rest[n:]

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self.stopping.is_set():
                req = self._read_request(conn, buf)
                if req is None:
                    return
                method, path, headers, buf = req
                with self.lock:
                    self.requests.append((method, path, headers))
                if not self._respond(conn, method, headers.get("x-hostile", "honest"), headers.get("x-tag", "")):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.open.discard(conn)
            conn.close()

    def _respond(self, conn: socket.socket, method: str, mode: str, tag: str) -> bool:
        """Writes the answer for `mode`; False closes the connection."""
        send = conn.sendall
        if mode == "honest":
            send(answer(tag))
        elif mode == "interim_100":
            send(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(tag))
        elif mode == "interim_102":
            send(b"HTTP/1.1 102 Processing\r\n\r\n")
            time.sleep(0.01)
            send(answer(tag))
        elif mode == "interim_103":
            send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + answer(tag))
        elif mode == "interim_many":
            send(b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + answer(tag))
        elif mode == "switch_101":
            send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + evil(tag))
        elif mode == "extra_after_length":
            send(answer(tag) + b"garbage bytes nobody asked for")
        elif mode == "two_responses":
            send(answer(tag) + evil(tag))
        elif mode == "late_response":
            send(answer(tag))
            time.sleep(0.05)
            send(evil(tag))
            with self.lock:
                self.late_sent += 1
        elif mode == "chunked_then_extra":
            send(chunked_answer(tag) + evil(tag))
        elif mode == "short_body":
            full = answer(tag)
            head, body = full.split(b"\r\n\r\n", 1)
            head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1000))
            send(head + b"\r\n\r\n" + body)
            self.stopping.wait(self.stall_seconds)
            return False
        elif mode == "short_body_close":
            full = answer(tag)
            head, body = full.split(b"\r\n\r\n", 1)
            head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1000))
            send(head + b"\r\n\r\n" + body)
            return False
        elif mode == "chunk_overflow":
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"ffffffffffffffffffffff\r\n" + evil(tag))
        elif mode == "stall":
            head, body = answer(tag).split(b"\r\n\r\n", 1)
            send(head + b"\r\n\r\n" + body[:10])
            self.stopping.wait(self.stall_seconds)
            return False
        elif mode == "body_on_head":
            # A HEAD answer must not have a body; this one sends one.
            send(answer(tag))
        elif mode == "body_on_204":
            send(answer(tag, status=204))
        elif mode == "stream_then_extra":
            events = b"".join(b"data: " + json.dumps({"tag": tag, "i": i}).encode() + b"\n\n" for i in range(3))
            events += b"data: [DONE]\n\n"
            send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
                 b"%x\r\n" % len(events) + events + b"\r\n0\r\n\r\n" + evil(tag))
        elif mode.startswith("size_"):
            # size_<framing>_<bytes>: an answer of exactly that many body bytes.
            _, framing, n = mode.split("_")
            body = (b'{"tag":"' + tag.encode() + b'","pad":"')
            body += b"x" * max(0, int(n) - len(body) - 2) + b'"}'
            if framing == "length":
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif framing == "chunked":
                out = [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"]
                for i in range(0, len(body), 65536):
                    part = body[i:i + 65536]
                    out.append(b"%x\r\n" % len(part) + part + b"\r\n")
                out.append(b"0\r\n\r\n")
                send(b"".join(out))
            else:  # close-delimited
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body)
                return False
        else:
            send(answer("unknown-mode-" + mode, status=500))
        return True
