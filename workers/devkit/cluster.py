"""A local cluster of real processes: gateways, Celery workers and the FCM stub.

Used by the distributed demo, the end-to-end benchmark and the end-to-end tests, so all three
start the same roles the same way (the commands an operator would run by hand).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from delivery.secret import check_secret
from workers.devkit.procs import Proc, celery_argv

# The URL ends at whitespace or a quote (log lines may be key=value with a quoted event).
_LISTENING = re.compile(r"listening on (ws://[^\s\"']+)")
_STUB = re.compile(r"fcm-stub listening on (http://[^\s\"']+)")
_API = re.compile(r"api listening on (http://[^\s\"'/]+)")


@dataclass
class Gateway:
    node: str
    url: str
    proc: Proc

    @property
    def port(self) -> int:
        """Its port: a restart on the same one lets clients reconnect to the same URL."""
        port = urlsplit(self.url).port
        assert port is not None
        return port


@dataclass
class LocalCluster:
    """Starts roles with the given environment (DELIVERY_* pointing at Redis and PostgreSQL)."""

    env: dict[str, str]
    gateways: dict[str, Gateway] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)
    others: list[Proc] = field(default_factory=list)
    fcm_stub: Proc | None = None  # the last one started

    def __post_init__(self) -> None:
        # Every role here talks to shared services: refuse once, before starting any of them.
        check_secret(self.env.get("DELIVERY_SECRET", ""))

    def with_env(self, extra: Mapping[str, str]) -> None:
        self.env = {**self.env, **extra}

    def start_worker(self, name: str, *, concurrency: int = 8, timeout: float = 60.0,
                     extra: tuple[str, ...] = (), shards: str | None = None) -> Proc:
        """``shards``: the presence shards it serves (DELIVERY_WORKER_SHARDS), e.g. ``"0,2"``."""
        args = celery_argv(name, concurrency=concurrency, extra=("-E", *extra))
        env = self.env if shards is None else {**self.env, "DELIVERY_WORKER_SHARDS": shards}
        proc = Proc(f"worker-{name}", args, env)
        self.workers[name] = proc
        proc.wait_for_log("ready.", timeout=timeout)
        return proc

    def start_gateway(self, node: str, *, port: int = 0, timeout: float = 30.0,
                      extra: tuple[str, ...] = ()) -> Gateway:
        proc = Proc(f"gateway-{node}", [
            sys.executable, "-m", "workers.cli", "gateway", "--node", node,
            "--host", "127.0.0.1", "--port", str(port), *extra,
        ], self.env)
        proc.wait_for_log("listening on ws://", timeout=timeout)
        match = _LISTENING.search(proc.log())
        assert match is not None
        gw = Gateway(node, match.group(1), proc)
        self.gateways[node] = gw
        return gw

    def start_api(self, *, port: int = 0, timeout: float = 30.0,
                  extra: tuple[str, ...] = ()) -> tuple[str, Proc]:
        """``delivery api`` (POST /v1/messages); returns its base URL and process."""
        proc = Proc("api", [sys.executable, "-m", "workers.cli", "api", "--host", "127.0.0.1",
                            "--port", str(port), *extra], self.env)
        self.others.append(proc)
        proc.wait_for_log("api listening on http://", timeout=timeout)
        match = _API.search(proc.log())
        assert match is not None
        return match.group(1), proc

    def start_fcm_stub(self, timeout: float = 15.0, *, port: int = 0) -> str:
        """Start the FCM stub (on ``port``: its URL stays right across a restart); its URL."""
        proc = Proc("fcm-stub", [sys.executable, "-m", "workers.cli", "fcm-stub", "--port",
                                 str(port)], self.env)
        self.others.append(proc)
        self.fcm_stub = proc
        proc.wait_for_log("fcm-stub listening on", timeout=timeout)
        match = _STUB.search(proc.log())
        assert match is not None
        return match.group(1)

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop_gateway(self, node: str) -> None:
        gw = self.gateways.pop(node, None)
        if gw is not None:
            gw.proc.stop()

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker (a crash: no shutdown, its prefetched tasks unacked)."""
        proc = self.workers.pop(name)
        proc.kill9()
        proc.stop()

    def kill_gateway(self, node: str) -> Gateway:
        """SIGKILL a gateway (its connections drop at once); what it was."""
        gw = self.gateways.pop(node)
        gw.proc.kill9()
        gw.proc.stop()
        return gw

    def stop(self) -> None:
        for gw in list(self.gateways.values()):
            gw.proc.stop()
        for proc in list(self.workers.values()) + self.others:
            proc.stop()
        self.gateways.clear()
        self.workers.clear()
        self.others.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
