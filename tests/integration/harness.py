"""Loopback test harness for canaryd: runs the real canaryd binary against real
mock-upstream processes on free 127.0.0.1 ports, and speaks HTTP to them.

Python 3 stdlib only. Used by tests/integration and by the faults, redis and
prometheus suites (put tests/integration on PYTHONPATH and `import harness`).

Binaries come from the environment (CANARYD_BIN, MOCK_BIN, set by ctest),
else from the first build dir that has them (build-it, build, ...).

Every process started here is stopped by PID: by its context manager, and, if a
test dies before that, by an atexit hook. Waits poll with a deadline; nothing
sleeps a fixed time.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client as httpclient
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOOPBACK = "127.0.0.1"

# ---------------------------------------------------------------------------
# binaries


def _find_bin(env_name: str, rel_paths: Iterable[str]) -> str:
    path = os.environ.get(env_name)
    if path:
        return path
    for build in ("build-it", "build", "build-release", "build-debug"):
        for rel in rel_paths:
            cand = os.path.join(REPO_ROOT, build, rel)
            if os.access(cand, os.X_OK):
                return cand
    raise RuntimeError(f"{env_name} is not set and no built binary was found under {REPO_ROOT}/build*")


def canaryd_bin() -> str:
    return _find_bin("CANARYD_BIN", ["canaryd"])


def mock_bin() -> str:
    return _find_bin("MOCK_BIN", ["tools/mock-upstream/mock-upstream", "mock-upstream"])


# ---------------------------------------------------------------------------
# processes: every child is recorded so an interpreter exit kills leftovers

_children: dict[int, subprocess.Popen] = {}


def _register(proc: subprocess.Popen) -> None:
    _children[proc.pid] = proc


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_children.values()):
        _kill(proc)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    _children.clear()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> Optional[int]:
    """Signals the process by PID and waits; SIGKILLs it after `timeout`.
    Returns the exit code, or None when it had to be killed."""
    rc: Optional[int] = proc.poll()
    if rc is None:
        _kill(proc, sig)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, signal.SIGKILL)
            proc.wait(timeout=5)
            rc = None
    _children.pop(proc.pid, None)
    return rc


# ---------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A port that was free a moment ago (for "nothing listens here" tests, or
    configs that need a fixed port). Prefer port 0 where the program supports it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Polls pred() until it returns a truthy value (returned) or the deadline
    passes (AssertionError). Exceptions from pred count as "not yet"; the last
    one is reported."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_val: Any = None
    while True:
        try:
            last_val = pred()
            if last_val:
                return last_val
        except Exception as e:  # noqa: BLE001 - polling tolerates transient errors
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"; last value {last_val!r}" if last_exc is None else f"; last error {last_exc!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` merged into `base` recursively (dicts merge, others replace;
    a value of None in `over` deletes the key)."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def _yaml_key(k: Any) -> str:
    k = str(k)
    return k if _BARE_KEY.match(k) and k.lower() not in ("true", "false", "null", "yes", "no", "on", "off") else json.dumps(k)


def to_yaml(obj: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts/lists/scalars (enough for canaryd configs)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{_yaml_key(k)}:\n{to_yaml(v, indent + 1)}")
            elif isinstance(v, list) and v:
                lines.append(f"{pad}{_yaml_key(k)}:\n{to_yaml(v, indent + 1)}")
            elif isinstance(v, dict):
                lines.append(f"{pad}{_yaml_key(k)}: {{}}\n")
            elif isinstance(v, list):
                lines.append(f"{pad}{_yaml_key(k)}: []\n")
            else:
                lines.append(f"{pad}{_yaml_key(k)}: {_yaml_scalar(v)}\n")
        return "".join(lines)
    if isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1)
                # "- " then the first line of the nested block on the same line
                lines.append(f"{pad}- {body.lstrip()}")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item) if not isinstance(item, (dict, list)) else ('{}' if isinstance(item, dict) else '[]')}\n")
        return "".join(lines)
    return pad + _yaml_scalar(obj) + "\n"


# ---------------------------------------------------------------------------
# HTTP client helpers


def _encode_body(body: Any, headers: dict) -> Optional[bytes]:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(body).encode()


def _split_url(url: str) -> tuple[str, str, int, str]:
    m = re.match(r"^(https?)://([^/:]+|\[[^\]]+\])(?::(\d+))?(/.*)?$", url)
    if not m:
        raise ValueError(f"bad url {url!r}")
    scheme, host, port, path = m.group(1), m.group(2).strip("[]"), m.group(3), m.group(4) or "/"
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80), path


def _connection(url: str, timeout: float, ssl_context=None):
    scheme, host, port, path = _split_url(url)
    if scheme == "https":
        return httpclient.HTTPSConnection(host, port, timeout=timeout, context=ssl_context), path
    return httpclient.HTTPConnection(host, port, timeout=timeout), path


def http(method: str, url: str, body: Any = None, headers: Optional[dict] = None, timeout: float = 10.0,
         ssl_context=None) -> tuple[int, httpclient.HTTPMessage, bytes]:
    """One request on a fresh connection -> (status, headers, body bytes).
    `body` may be bytes, str, or a JSON-able object (sent as application/json)."""
    headers = dict(headers or {})
    data = _encode_body(body, headers)
    conn, path = _connection(url, timeout, ssl_context)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, resp.headers, payload
    finally:
        conn.close()


def request_on(conn: httpclient.HTTPConnection, method: str, path: str, body: Any = None,
               headers: Optional[dict] = None) -> tuple[int, httpclient.HTTPMessage, bytes]:
    """One request on an existing (keep-alive) connection."""
    headers = dict(headers or {})
    data = _encode_body(body, headers)
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def http_json(method: str, url: str, body: Any = None, headers: Optional[dict] = None,
              timeout: float = 10.0) -> tuple[int, httpclient.HTTPMessage, Any]:
    status, hdrs, payload = http(method, url, body, headers, timeout)
    try:
        return status, hdrs, json.loads(payload) if payload else None
    except ValueError as e:
        raise AssertionError(f"not JSON (status {status}): {payload[:500]!r}") from e


def raw_exchange(port: int, data: bytes, timeout: float = 10.0, method: str = "GET",
                 host: str = LOOPBACK) -> tuple[int, httpclient.HTTPMessage, bytes]:
    """Sends raw bytes on a new connection and parses one HTTP response (for
    requests http.client would refuse or fix up)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = httpclient.HTTPResponse(sock, method=method)
        resp.begin()
        return resp.status, resp.headers, resp.read()


def chat_body(model: str = "gpt-4.1", content: str = "hello", **extra: Any) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def assert_openai_error(body: bytes, message: str = "") -> dict:
    """Checks {"error":{"message","type","param":null,"code"}}; returns the inner object."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise AssertionError(f"{message}: error body is not JSON: {body[:300]!r}") from e
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        raise AssertionError(f"{message}: no 'error' object in {doc!r}")
    for key in ("message", "type", "param", "code"):
        if key not in err:
            raise AssertionError(f"{message}: error.{key} missing in {doc!r}")
    if not isinstance(err["message"], str) or not err["message"]:
        raise AssertionError(f"{message}: error.message must be a non-empty string in {doc!r}")
    if not isinstance(err["type"], str) or not err["type"]:
        raise AssertionError(f"{message}: error.type must be a non-empty string in {doc!r}")
    if err["param"] is not None:
        raise AssertionError(f"{message}: error.param must be null in {doc!r}")
    if err["code"] is not None and not isinstance(err["code"], str):
        raise AssertionError(f"{message}: error.code must be a string or null in {doc!r}")
    return err


# ---------------------------------------------------------------------------
# SSE streaming


@dataclass
class SSEEvent:
    t: float          # seconds since the request was sent (monotonic)
    raw: str          # the event text without its blank-line terminator
    data: str         # the joined "data:" lines
    wall: float = 0.0  # time.time() at arrival (compare with the mock's "mock_ts_us")


@dataclass
class StreamResult:
    status: int
    headers: httpclient.HTTPMessage
    events: list[SSEEvent] = field(default_factory=list)
    body: bytes = b""         # everything received (for non-SSE answers, e.g. errors)
    t_headers: float = 0.0
    t_end: float = 0.0
    complete: bool = False    # the response ended normally

    @property
    def done(self) -> bool:
        return any(e.data.strip() == "[DONE]" for e in self.events)

    def json_events(self) -> list[dict]:
        return [json.loads(e.data) for e in self.events if e.data and e.data.strip() != "[DONE]"]


def _parse_event(text: str, t: float) -> SSEEvent:
    data = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
    return SSEEvent(t=t, raw=text, data="\n".join(data))


def stream(url: str, body: Any, headers: Optional[dict] = None, timeout: float = 15.0,
           stop_after: Optional[int] = None,
           on_event: Optional[Callable[[SSEEvent], None]] = None) -> StreamResult:
    """POSTs `body` and reads the SSE answer as it arrives, recording each event's
    arrival time. With stop_after=N the client closes the connection after the
    N-th event (a client that goes away)."""
    headers = dict(headers or {})
    headers.setdefault("Accept", "text/event-stream")
    data = _encode_body(body, headers)
    conn, path = _connection(url, timeout)
    t0 = time.monotonic()
    try:
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        result = StreamResult(status=resp.status, headers=resp.headers, t_headers=time.monotonic() - t0)
        buf = b""
        while True:
            chunk = resp.read1(65536)
            now = time.monotonic() - t0
            wall = time.time()
            if not chunk:
                result.complete = True
                break
            result.body += chunk
            buf += chunk
            while True:
                m = re.search(rb"\r?\n\r?\n", buf)
                if not m:
                    break
                text, buf = buf[:m.start()], buf[m.end():]
                ev = _parse_event(text.decode("utf-8", "replace"), now)
                ev.wall = wall
                result.events.append(ev)
                if on_event:
                    on_event(ev)
            if stop_after is not None and len(result.events) >= stop_after:
                resp.close()
                break
        result.t_end = time.monotonic() - t0
        return result
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# mock-upstream


class Mock:
    """A mock-upstream process on a free loopback port.

        with Mock("control", latency=50, require_key="k") as m:
            m.url      # http://127.0.0.1:PORT  (base_url for canaryd: m.url + "/v1")
            m.stats()  # GET /mock/stats as a dict

    Keyword flags map to command-line flags (latency=50 -> --latency 50,
    hang=True -> --hang, tls_cert=... -> --tls-cert ...)."""

    def __init__(self, name: str = "mock", start_timeout: float = 10.0, **flags: Any):
        self.name = name
        self.flags = flags
        self.start_timeout = start_timeout
        self.tmp = tempfile.TemporaryDirectory(prefix=f"mock-{name}-")
        self.port: int = 0
        self.proc: Optional[subprocess.Popen] = None
        self.tls = bool(flags.get("tls_cert"))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def admin_url(self) -> str:
        # The test talks to the mock by IP (no resolver surprises); with TLS it
        # does not verify the mock's certificate.
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    def _argv(self) -> list[str]:
        port_file = os.path.join(self.tmp.name, "port")
        argv = [mock_bin(), "--port", "0", "--port-file", port_file, "--name", self.name]
        for k, v in self.flags.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                argv.append(flag)
            elif v is False or v is None:
                continue
            else:
                argv += [flag, str(v)]
        return argv

    def start(self) -> "Mock":
        port_file = os.path.join(self.tmp.name, "port")
        self.stdout_path = os.path.join(self.tmp.name, "stdout.log")
        self.stderr_path = os.path.join(self.tmp.name, "stderr.log")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self._argv(), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _register(self.proc)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock-upstream {self.name} exited with {self.proc.returncode}: {self.output()}")
            port = None
            with contextlib.suppress(OSError, ValueError):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    port = int(text)
            if port is None:
                m = re.search(r"listening on \S+?:(\d+)", self._read(self.stdout_path))
                if m:
                    port = int(m.group(1))
            if port:
                self.port = port
            return bool(port)

        try:
            wait_until(ready, self.start_timeout, message=f"mock-upstream {self.name} to listen")
            # the port file may be written just before accept() runs: make sure it answers
            wait_until(lambda: self.stats() is not None, self.start_timeout, message=f"mock {self.name} /mock/stats")
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self, path: str) -> str:
        with contextlib.suppress(OSError):
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return ""

    def output(self) -> str:
        return (self._read(self.stdout_path) + self._read(self.stderr_path))[-4000:]

    def _ssl_context(self):
        if not self.tls:
            return None
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def stats(self) -> dict:
        status, _, body = http("GET", self.admin_url + "/mock/stats", timeout=5, ssl_context=self._ssl_context())
        if status != 200:
            raise AssertionError(f"mock {self.name} /mock/stats answered {status}: {body[:200]!r}")
        return json.loads(body)

    def reset(self) -> None:
        status, _, body = http("POST", self.admin_url + "/mock/reset", body=b"", timeout=5, ssl_context=self._ssl_context())
        if status not in (200, 204):
            raise AssertionError(f"mock {self.name} /mock/reset answered {status}: {body[:200]!r}")

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict] = None,
                timeout: float = 10.0) -> tuple[int, httpclient.HTTPMessage, bytes]:
        """Talks to the mock directly (bypassing canaryd), e.g. to compare bodies."""
        return http(method, self.admin_url + path, body, headers, timeout, ssl_context=self._ssl_context())

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
        self.tmp.cleanup()

    def __enter__(self) -> "Mock":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# canaryd


def base_config(control_url: str, canary_url: Optional[str] = None, **sections: Any) -> dict:
    """A minimal test config: listen on a free port, 2 threads, fast shutdown,
    `ctl` and `cny` upstreams (keys from CANARYD_IT_CONTROL_KEY/CANARYD_IT_CANARY_KEY),
    no rollout steps (weight 0), pricing for gpt-4.1 so it is a known model label.
    Keyword sections are deep-merged on top (server={...}, upstreams={...}, ...)."""
    cfg = {
        "server": {
            "listen": f"{LOOPBACK}:0",
            "threads": 2,
            "drain_delay": "0s",
            "shutdown_grace": "5s",
        },
        "upstreams": {
            "ctl": {"base_url": control_url, "api_key_env": "CANARYD_IT_CONTROL_KEY", "connect_timeout": "1s",
                    "timeout": "10s"},
            "cny": {"base_url": canary_url or f"http://{LOOPBACK}:{free_port()}/v1",
                    "api_key_env": "CANARYD_IT_CANARY_KEY", "connect_timeout": "1s", "timeout": "10s"},
        },
        "split": {"control": "ctl", "canary": "cny", "salt": "it", "override_header": "X-Canary"},
        "pricing": {"gpt-4.1": {"input": 8.0, "output": 32.0}},
    }
    return deep_merge(cfg, sections)


DEFAULT_ENV = {"CANARYD_IT_CONTROL_KEY": "sk-control-upstream-key", "CANARYD_IT_CANARY_KEY": "sk-canary-upstream-key"}


class Canaryd:
    """The canaryd binary with a config written to a temp dir.

        with Canaryd(base_config(m.base_url), env={...}) as c:
            http("POST", c.url + "/v1/chat/completions", chat_body())
            c.logs()         # stdout so far (JSON lines)
        # __exit__ sends SIGTERM and asserts exit code 0

    `config` is a dict (dumped as YAML) or YAML text. env is added to a copy of
    os.environ (DEFAULT_ENV's upstream keys are set unless given)."""

    def __init__(self, config: Any, env: Optional[dict] = None, args: Iterable[str] = (),
                 log_level: Optional[str] = None, start_timeout: float = 15.0, wait_ready: bool = True):
        self.config = config
        self.tmp = tempfile.TemporaryDirectory(prefix="canaryd-it-")
        self.config_path = os.path.join(self.tmp.name, "canaryd.yaml")
        self.stdout_path = os.path.join(self.tmp.name, "stdout.log")
        self.stderr_path = os.path.join(self.tmp.name, "stderr.log")
        self.env = dict(os.environ)
        self.env.update(DEFAULT_ENV)
        self.env.update(env or {})
        self.args = list(args)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.wait_ready = wait_ready
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.returncode: Optional[int] = None
        self.write_config(config)

    def write_config(self, config: Any) -> None:
        text = config if isinstance(config, str) else to_yaml(config)
        with open(self.config_path, "w") as f:
            f.write(text)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Canaryd":
        argv = [canaryd_bin(), "-c", self.config_path] + self.args
        if self.log_level:
            argv += ["--log-level", self.log_level]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env)
        _register(self.proc)
        try:
            self.port = self._wait_port()
            if self.wait_ready:
                wait_until(self._ready, self.start_timeout, message="canaryd /ready to answer 200")
        except BaseException as e:
            self.kill()
            raise AssertionError(f"canaryd did not start: {e}\n{self.tail()}") from e
        return self

    def _wait_port(self) -> int:
        def port() -> Optional[int]:
            for line in self.log_lines():
                if line.get("msg") == "canaryd listening" and line.get("port"):
                    return int(line["port"])
            if self.proc.poll() is not None:
                raise RuntimeError(f"canaryd exited with {self.proc.returncode} before listening")
            return None

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                p = port()
            except RuntimeError:
                raise
            if p:
                return p
            if time.monotonic() > deadline:
                raise AssertionError(f"no 'canaryd listening' line within {self.start_timeout}s")
            time.sleep(0.02)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"canaryd exited with {self.proc.returncode}")
        status, _, _ = http("GET", self.url + "/ready", timeout=2)
        return status == 200

    def _read(self, path: str) -> str:
        with contextlib.suppress(OSError):
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return ""

    def logs(self) -> str:
        """canaryd's stdout so far (JSON lines; spdlog flushes info lines about once a second)."""
        return self._read(self.stdout_path)

    def stderr(self) -> str:
        return self._read(self.stderr_path)

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.logs().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_log(self, pred: Callable[[dict], bool], timeout: float = 5.0, message: str = "log line") -> dict:
        def find():
            for line in self.log_lines():
                if pred(line):
                    return line
            return None
        return wait_until(find, timeout, interval=0.05, message=message)

    def tail(self, n: int = 40) -> str:
        out = self.logs().splitlines()[-n:]
        err = self.stderr().splitlines()[-n:]
        return ("--- canaryd stdout (tail) ---\n" + "\n".join(out) +
                "\n--- canaryd stderr (tail) ---\n" + "\n".join(err))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0, expect_rc: Optional[int] = 0) -> Optional[int]:
        """SIGTERM by PID, wait, and (by default) assert exit code 0. Idempotent."""
        if self.proc is None:
            return None
        if self.returncode is None:
            still_running = self.proc.poll() is None
            rc = stop_process(self.proc, timeout=timeout)
            self.returncode = rc
            if expect_rc is not None:
                if rc is None:
                    raise AssertionError(f"canaryd did not exit within {timeout}s of SIGTERM (killed)\n{self.tail()}")
                if rc != expect_rc:
                    how = "after SIGTERM" if still_running else "before SIGTERM (it died on its own)"
                    raise AssertionError(f"canaryd exited with {rc} {how}, expected {expect_rc}\n{self.tail()}")
        return self.returncode

    def wait_exit(self, timeout: float) -> Optional[int]:
        """Waits for the process to exit by itself (after a signal sent by the test)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncode = rc
        _children.pop(self.proc.pid, None)
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=0.5, sig=signal.SIGKILL)

    def cleanup(self) -> None:
        if os.environ.get("CANARYD_IT_KEEP_TMP"):
            sys.stderr.write(f"keeping {self.tmp.name}\n")
            return
        self.tmp.cleanup()

    def __enter__(self) -> "Canaryd":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.stop()
            else:
                sys.stderr.write(self.tail() + "\n")
                self.kill()
        finally:
            self.cleanup()


def check_config(config: Any, env: Optional[dict] = None, filename: str = "canaryd.yaml",
                 timeout: float = 15.0) -> tuple[int, str, str, str]:
    """Runs `canaryd --check-config -c FILE` -> (exit code, stdout, stderr, path)."""
    tmp = tempfile.mkdtemp(prefix="canaryd-check-")
    path = os.path.join(tmp, filename)
    with open(path, "w") as f:
        f.write(config if isinstance(config, str) else to_yaml(config))
    full_env = dict(os.environ)
    full_env.update(DEFAULT_ENV)
    full_env.update(env or {})
    proc = subprocess.run([canaryd_bin(), "--check-config", "-c", path], capture_output=True, env=full_env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"), path


# ---------------------------------------------------------------------------
# TLS material (openssl CLI)


class CertAuthority:
    """A throw-away CA in a temp dir that issues server certs for tests."""

    def __init__(self, directory: Optional[str] = None, name: str = "canaryd test CA"):
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="canaryd-ca-")
        self.dir = directory or self._tmp.name
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN={name}",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    @staticmethod
    def _openssl(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.decode(errors='replace')}")

    def issue(self, name: str, dns: Iterable[str] = (), ips: Iterable[str] = ()) -> tuple[str, str]:
        """A server cert signed by this CA with the given SANs -> (cert path, key path)."""
        base = os.path.join(self.dir, re.sub(r"[^A-Za-z0-9_.-]", "_", name))
        key, csr, crt, ext = base + ".key", base + ".csr", base + ".crt", base + ".ext"
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n")
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                      "-out", crt, "-days", "2", "-extfile", ext)
        return crt, key

    def cleanup(self) -> None:
        if self._tmp:
            self._tmp.cleanup()


# ---------------------------------------------------------------------------
# metrics text


def metric_samples(text: str, name: str) -> list[tuple[dict, float]]:
    """Samples of one metric from Prometheus text format -> [(labels, value)]."""
    out = []
    pat = re.compile(r"^" + re.escape(name) + r"(\{(.*)\})?\s+(\S+)")
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((labels, float(m.group(3))))
    return out
