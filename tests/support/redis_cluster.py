"""A real, small Redis Cluster for tests: N ``redis-server`` processes with ``cluster-enabled``
on free ports in a temporary directory, joined with ``redis-cli --cluster create``; stopped
by pid (only the processes it started) and its directory removed."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from workers.devkit.procs import Proc

# Each node also listens on its port + 10,000 (the cluster bus), so ports stay below 55,536.
PORT_RANGE = (20000, 55000)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A port free on 127.0.0.1 whose cluster-bus port (+10,000) is free too."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _cluster_ok(port: int) -> bool:
    try:
        r = redis.Redis(port=port, socket_timeout=1.0)
        try:
            info = r.execute_command("CLUSTER", "INFO")
        finally:
            r.close()
    except redis.RedisError:
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


@contextmanager
def redis_cluster(nodes: int = 3, timeout: float = 30.0) -> Iterator[list[int]]:
    """Start a cluster of ``nodes`` masters; yields their ports once every node reports ok."""
    tmp = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    procs: list[Proc] = []
    try:
        ports = [cluster_port() for _ in range(nodes)]
        for port in ports:
            d = tmp / str(port)
            d.mkdir()
            proc = Proc(f"redis-{port}", [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", "5000", "--dir", str(d), "--save", "",
                "--appendonly", "no", "--protected-mode", "no",
            ], {})
            procs.append(proc)
        for proc in procs:
            proc.wait_for_log("Ready to accept connections", timeout=timeout)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )
        end = time.monotonic() + timeout
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > end:
                raise TimeoutError(f"redis cluster on {ports} never reached cluster_state:ok")
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
