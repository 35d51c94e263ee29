"""The processes under test: 2 gateways, 2 Celery workers and the FCM stub, started the way an
operator would (``workers.devkit.cluster.LocalCluster``), each restartable on the same address."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from workers.devkit.cluster import LocalCluster
from workers.devkit.procs import Proc
from workers.devkit.services import ServiceEnv

GATEWAYS = ("gw-a", "gw-b")
WORKERS = ("w1", "w2")
FAKETIME_LIBS = (
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"),
    Path("/usr/lib/faketime/libfaketimeMT.so.1"),
)
START_TIMEOUT_S = 180.0  # the machine is shared: a worker may take long to boot


def faketime_lib() -> Path | None:
    return next((p for p in FAKETIME_LIBS if p.exists()), None)


def soak_env(*, database_url: str, broker_url: str, redis_url: str, key_prefix: str,
             secret: str, fcm_url: str) -> dict[str, str]:
    """The processes' environment: product defaults, only addresses set."""
    services = ServiceEnv(database_url, redis_url, key_prefix, secret, broker_url)
    return services.env(DELIVERY_FCM_URL=fcm_url, DELIVERY_FCM_PROJECT="soak")


@dataclass
class SoakCluster:
    env: dict[str, str]
    fcm_port: int
    local: LocalCluster = field(init=False)
    gateway_ports: dict[str, int] = field(default_factory=dict)
    stub: Proc | None = None

    def __post_init__(self) -> None:
        self.local = LocalCluster(self.env)

    def start(self) -> None:
        self.start_stub()
        for node in GATEWAYS:
            self.start_gateway(node)
        for name in WORKERS:
            self.start_worker(name)

    def gateway_url(self, node: str) -> str:
        return self.local.gateways[node].url

    # -- the FCM stub (on a fixed port, so the workers' DELIVERY_FCM_URL stays right) -------

    def start_stub(self) -> None:
        self.stub = Proc("soak-fcm-stub", [
            sys.executable, "-m", "workers.cli", "fcm-stub", "--port", str(self.fcm_port),
        ], self.env)
        self.stub.wait_for_log("fcm-stub listening on", timeout=START_TIMEOUT_S)

    def kill_stub(self) -> None:
        if self.stub is not None:
            self.stub.kill9()
            self.stub.stop()

    # -- gateways -----------------------------------------------------------------------------

    def start_gateway(self, node: str) -> None:
        gw = self.local.start_gateway(node, port=self.gateway_ports.get(node, 0),
                                      timeout=START_TIMEOUT_S)
        self.gateway_ports[node] = int(gw.url.rsplit(":", 1)[1].split("/")[0])

    def kill_gateway(self, node: str) -> None:
        gw = self.local.gateways.pop(node)
        gw.proc.kill9()
        gw.proc.stop()

    # -- workers ------------------------------------------------------------------------------

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        if extra_env:
            # A cluster of one with its own environment; the process joins ours.
            other = LocalCluster({**self.env, **extra_env})
            self.local.workers[name] = other.start_worker(name, timeout=START_TIMEOUT_S)
        else:
            self.local.start_worker(name, timeout=START_TIMEOUT_S)

    def kill_worker(self, name: str) -> None:
        proc = self.local.workers.pop(name)
        proc.kill9()
        proc.stop()

    def stop_worker(self, name: str) -> None:
        self.local.stop_worker(name)

    def signal_worker(self, name: str, sig: signal.Signals) -> None:
        os.killpg(self.local.workers[name].popen.pid, sig)

    def logs(self) -> dict[str, str]:
        """Where each process wrote its log (kept after the run, for a post-mortem)."""
        out = {f"gateway-{n}": str(g.proc.log_path) for n, g in self.local.gateways.items()}
        out.update({f"worker-{n}": str(p.log_path) for n, p in self.local.workers.items()})
        if self.stub is not None:
            out["fcm-stub"] = str(self.stub.log_path)
        return out

    def stop(self) -> None:
        # A paused worker ignores SIGTERM until continued.
        for proc in self.local.workers.values():
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGCONT)
        self.local.stop()
        if self.stub is not None:
            self.stub.stop()
