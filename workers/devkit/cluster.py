"""A local cluster of real processes: gateways, Celery workers and the FCM stub.

Used by the distributed demo, the end-to-end benchmark and the end-to-end tests, so all three
start the same roles the same way (the commands an operator would run by hand).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from delivery.secret import check_secret
from workers.devkit.procs import Proc, celery_argv

# The URL ends at whitespace or a quote (log lines may be key=value with a quoted event).
_LISTENING = re.compile(r"listening on (ws://[^\s\"']+)")
_STUB = re.compile(r"fcm-stub listening on (http://[^\s\"']+)")


@dataclass
class Gateway:
    node: str
    url: str
    proc: Proc


@dataclass
class LocalCluster:
    """Starts roles with the given environment (DELIVERY_* pointing at Redis and PostgreSQL)."""

    env: dict[str, str]
    gateways: dict[str, Gateway] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)
    others: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Every role here talks to shared services: refuse once, before starting any of them.
        check_secret(self.env.get("DELIVERY_SECRET", ""))

    def with_env(self, extra: Mapping[str, str]) -> None:
        self.env = {**self.env, **extra}

    def start_worker(self, name: str, *, concurrency: int = 8, timeout: float = 60.0,
                     extra: tuple[str, ...] = ()) -> Proc:
        args = celery_argv(name, concurrency=concurrency, extra=("-E", *extra))
        proc = Proc(f"worker-{name}", args, self.env)
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

    def start_fcm_stub(self, timeout: float = 15.0) -> str:
        proc = Proc("fcm-stub", [sys.executable, "-m", "workers.cli", "fcm-stub", "--port", "0"],
                    self.env)
        self.others.append(proc)
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
