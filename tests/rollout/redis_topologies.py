"""Redis as teams run it, for the tests of issue 16: a primary + replica +
sentinels, and a Redis Cluster of primaries. Debian's redis-server,
redis-sentinel and redis-cli, on free loopback ports, each process stopped by
PID; waits poll with a deadline (harness.wait_until).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Optional

import harness
from harness import LOOPBACK, wait_until
from rollout_helpers import RedisServer, _encode, _Reader  # one RESP codec for every test

# Diskless full syncs start at once (the default waits 5 s for more replicas);
# a primary stopped by the test does not wait for its replicas.
NODE_ARGS = ["--repl-diskless-sync-delay", "0", "--shutdown-on-sigterm", "now"]


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = harness.free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port + 10000))
            except OSError:
                continue
        return port


def info_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


class SentinelSet:
    """A primary, a replica and `count` sentinels monitoring it as "mymaster",
    with fast failure detection (down-after 1 s)."""

    MASTER = "mymaster"

    def __init__(self, count: int = 3, down_after_ms: int = 1000):
        if not shutil.which("redis-sentinel"):
            raise RuntimeError("redis-sentinel is not installed (scripts/install-deps.sh)")
        self.count = count
        self.down_after_ms = down_after_ms
        self.tmp = tempfile.TemporaryDirectory(prefix="canaryd-sentinel-")
        self.nodes: list[RedisServer] = []
        self.sentinel_ports: list[int] = []
        self.sentinels: list[subprocess.Popen] = []

    def start(self) -> "SentinelSet":
        primary = RedisServer(extra=NODE_ARGS).start()
        replica = RedisServer(extra=NODE_ARGS + ["--replicaof", LOOPBACK, str(primary.port)]).start()
        self.nodes = [primary, replica]
        quorum = min(2, self.count)
        for _ in range(self.count):
            port = harness.free_port()
            d = os.path.join(self.tmp.name, f"sentinel-{port}")
            os.makedirs(d)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind {LOOPBACK}\ndaemonize no\ndir {d}\n"
                        f"sentinel monitor {self.MASTER} {LOOPBACK} {primary.port} {quorum}\n"
                        f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {self.MASTER} 4000\n"
                        f"sentinel parallel-syncs {self.MASTER} 1\n")
            log = open(os.path.join(d, "sentinel.log"), "wb")
            proc = subprocess.Popen(["redis-sentinel", conf], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            log.close()
            harness._register(proc)
            self.sentinel_ports.append(port)
            self.sentinels.append(proc)
        self.wait_ready()
        return self

    def stop(self) -> None:
        for proc in self.sentinels:
            harness.stop_process(proc, timeout=5)
        self.sentinels.clear()
        for node in self.nodes:
            node.stop()
            node.tmp.cleanup()

    def __enter__(self) -> "SentinelSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.tmp.cleanup()

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.MASTER}/0"

    def sentinel(self, *args: str, i: int = 0) -> Any:
        with socket.create_connection((LOOPBACK, self.sentinel_ports[i]), timeout=2) as sock:
            sock.sendall(_encode(args))
            return _Reader(sock).read()

    def master_port(self, i: int = 0) -> Optional[int]:
        addr = self.sentinel("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER, i=i)
        return int(addr[1]) if addr else None

    def all_name(self, port: int) -> bool:
        return all(self.master_port(i) == port for i in range(self.count))

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primary(self) -> RedisServer:
        return self.node(self.master_port())

    def replica(self) -> RedisServer:
        p = self.master_port()
        return next(n for n in self.nodes if n.port != p)

    def wait_ready(self, timeout: float = 30) -> None:
        """Every sentinel names one primary and sees the other sentinels; the
        other node is its replica, in sync."""

        def ready() -> bool:
            port = self.master_port()
            if port is None or not self.all_name(port):
                return False
            for i in range(self.count):
                doc = self.sentinel("SENTINEL", "MASTER", self.MASTER, i=i)
                fields = dict(zip(doc[::2], doc[1::2]))
                if fields.get("flags") != "master" or fields.get("num-other-sentinels") != str(self.count - 1):
                    return False
            other = next(n for n in self.nodes if n.port != port)
            if other.proc is None:
                return False
            info = other.command("INFO", "replication")
            return info_field(info, "role") == "slave" and info_field(info, "master_port") == str(port) and \
                info_field(info, "master_link_status") == "up"

        wait_until(ready, timeout, 0.1, "the sentinels, the primary and its replica to be ready")


class ClusterSet:
    """A Redis Cluster of `primaries` nodes without replicas, made with
    redis-cli --cluster create (slots split evenly in node order)."""

    def __init__(self, primaries: int = 3, extra: Optional[list[str]] = None):
        self.nodes = [RedisServer(port=cluster_port(),
                                  extra=NODE_ARGS + ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                                     "--cluster-node-timeout", "2000"] + list(extra or []))
                      for _ in range(primaries)]

    def start(self) -> "ClusterSet":
        for n in self.nodes:
            n.start()
        cli = ["redis-cli", "--cluster", "create"] + [f"{LOOPBACK}:{n.port}" for n in self.nodes] + \
              ["--cluster-replicas", "0", "--cluster-yes"]
        out = subprocess.run(cli, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: " + out.stdout.decode(errors="replace")[-2000:])

        def ok() -> bool:
            return all(info_field(n.command("CLUSTER", "INFO"), "cluster_state") == "ok" and
                       info_field(n.command("CLUSTER", "INFO"), "cluster_known_nodes") == str(len(self.nodes))
                       for n in self.nodes)

        wait_until(ok, 30, 0.1, "cluster_state:ok on every node")
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
            n.tmp.cleanup()

    def __enter__(self) -> "ClusterSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)

    def node_id(self, i: int) -> str:
        return self.nodes[i].command("CLUSTER", "MYID")

    def get(self, key: str) -> Any:
        """GET on the node that owns the key (the others answer MOVED)."""
        for n in self.nodes:
            try:
                return n.command("GET", key)
            except RuntimeError as e:
                if "MOVED" not in str(e):
                    raise
        raise AssertionError(f"no node serves {key}")

    def owner(self, key: str) -> int:
        for i, n in enumerate(self.nodes):
            try:
                n.command("EXISTS", key)
                return i
            except RuntimeError as e:
                if "MOVED" not in str(e):
                    raise
        raise AssertionError(f"no node serves {key}")

    def reshard(self, source: int, target: int, slots: int) -> float:
        """Moves `slots` slots (and their keys) from node `source` to node
        `target` with redis-cli --cluster reshard; returns how long it took."""
        t0 = time.monotonic()
        cli = ["redis-cli", "--cluster", "reshard", f"{LOOPBACK}:{self.nodes[0].port}",
               "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
               "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "20"]
        out = subprocess.run(cli, capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --cluster reshard failed: " + out.stdout.decode(errors="replace")[-2000:])
        return time.monotonic() - t0
