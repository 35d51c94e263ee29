"""Start the Socket.IO peer beside ours and measure it the way ``bench.e2e`` measures ours.

Same broker (Redis), same worker count and flags (``--pool threads -c C -E``), two server
nodes, the same number of clients in the same number of processes. Measured: the drain of B
pre-filled ``peer.send`` tasks (until every client has its message) and the latency of a paced
step at a given rate (enqueue -> the client has it; the peer has no ack to wait for).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery

from bench.e2e_measure import cpu_by_pid, cpu_delta_ms, progress
from bench.e2e_parts import SENDER_THREADS, ClientProcs, check_stop, lat_summary
from bench.peer_socketio import config
from workers.devkit.procs import Proc, free_port

PREFIX_USERS = "peer-u"


class PeerSocketio:
    def __init__(self, redis_url: str, *, clients: int, workers: int, concurrency: int,
                 servers: int = 2) -> None:
        self.redis_url = redis_url
        self.n_clients = clients
        self.n_workers = workers
        self.concurrency = concurrency
        self.n_servers = servers
        self.prefix = f"peer-{uuid.uuid4().hex[:10]}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DELIVERY_", "PEER_"))}
        self.env.update({"PEER_REDIS_URL": redis_url, "PEER_PREFIX": self.prefix,
                         "PYTHONUNBUFFERED": "1"})
        self.procs: list[Proc] = []
        self.workers: list[Proc] = []
        self.servers: list[Proc] = []
        self.clients: ClientProcs | None = None
        self.redis = redis.Redis.from_url(redis_url)
        self.app = Celery("peer-bench", broker=redis_url)
        self.app.conf.update(task_ignore_result=True, broker_transport_options={
            "global_keyprefix": f"{self.prefix}:celery:"})
        self.sent: dict[str, float] = {}

    def start(self) -> None:
        urls = []
        for i in range(self.n_servers):
            port = free_port()
            proc = Proc(f"peer-server-{i}", [sys.executable, "-m", "bench.peer_socketio.server",
                                             "--port", str(port)], self.env)
            self.procs.append(proc)
            self.servers.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        for i in range(self.n_workers):
            proc = Proc(f"peer-worker-{i}", [
                sys.executable, "-m", "celery", "-A", "bench.peer_socketio.app", "worker",
                "-n", f"peer{i}-{self.prefix}@%h", "--pool", "threads",
                "-c", str(self.concurrency), "--loglevel", "INFO", "-E",
                "--without-gossip", "--without-mingle"], self.env)
            self.procs.append(proc)
            self.workers.append(proc)
        for proc in self.servers:
            proc.wait_for_log("peer-socketio listening", timeout=30)
        for proc in self.workers:
            proc.wait_for_log("ready.", timeout=60)
        nprocs = 1 if self.n_clients <= 100 else 2
        self.clients = ClientProcs(urls, self.n_clients, nprocs, self.env,
                                   module="bench.peer_socketio.clients", prefix=PREFIX_USERS)
        n = self.clients.wait_ready(60)
        progress(f"peer: {self.n_servers} Socket.IO servers, {self.n_workers} workers, "
                 f"{n} clients connected")

    def stop(self) -> None:
        if self.clients is not None:
            with contextlib.suppress(Exception):
                self.clients.stop()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop()
        with contextlib.suppress(Exception):
            self.app.close()
        with contextlib.suppress(Exception):
            for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
                self.redis.delete(key)

    # -- sending ----------------------------------------------------------------------------

    def _send(self, user_index: int, producer: Any = None) -> str:
        check_stop()
        mid = uuid.uuid4().hex
        t = time.time()
        self.app.send_task(config.SEND_TASK, kwargs={
            "user": f"{PREFIX_USERS}{user_index % self.n_clients}", "message_id": mid,
            "body": {"t": t}}, producer=producer)
        self.sent[mid] = t
        return mid

    def _wait(self, ids: list[str], timeout: float) -> bool:
        assert self.clients is not None
        return self.clients.received.wait_for(ids, timeout)

    def warmup(self) -> None:
        ids = [self._send(i) for i in range(self.n_clients)]
        if not self._wait(ids, 30):
            raise RuntimeError("peer warm-up messages not all received within 30 s")

    def role_pids(self) -> dict[str, list[int]]:
        roles = {"bench": [os.getpid()], "workers": [p.popen.pid for p in self.workers],
                 "gateways": [p.popen.pid for p in self.servers]}
        if self.clients is not None:
            roles["clients"] = [p.pid for p in self.clients.procs]
        with contextlib.suppress(Exception):
            roles["redis"] = [int(self.redis.info("server")["process_id"])]
        return roles

    def drain(self, n: int) -> tuple[float, dict[str, float]]:
        """B tasks pre-filled with the consumers cancelled, then timed until all received."""
        assert self.clients is not None
        replies = self.app.control.cancel_consumer("celery", reply=True, timeout=3.0)
        if len(replies) < self.n_workers:
            raise RuntimeError(f"peer cancel_consumer: {len(replies)} of {self.n_workers}")
        with self.app.producer_or_acquire() as prod:
            ids = [self._send(i, prod) for i in range(n)]
        roles = self.role_pids()
        cpu0 = cpu_by_pid(roles)
        t0 = time.time()
        self.app.control.add_consumer("celery", reply=False)
        if not self._wait(ids, 120):
            raise RuntimeError("peer drain: not every message received within 120 s")
        got = self.clients.received
        with got.lock:
            t_end = max(self.sent[i] + got.latency_ms[i] / 1000.0 for i in ids)
        cpu = cpu_delta_ms(cpu0, cpu_by_pid(roles), n)
        rate = n / (t_end - t0)
        progress(f"peer: {rate:.0f} received/s draining a backlog")
        return rate, cpu

    def paced(self, rate: float, duration: float) -> dict[str, Any]:
        """Messages paced at ``rate`` for ``duration`` s; enqueue -> received latency."""
        assert self.clients is not None
        n = max(1, int(rate * duration))
        slots = [""] * n
        t0 = time.monotonic() + 0.01

        def pace(k: int) -> None:
            for i in range(k, n, SENDER_THREADS):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                slots[i] = self._send(i)

        threads = [threading.Thread(target=pace, args=(k,)) for k in range(SENDER_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ids = [i for i in slots if i]
        self._wait(ids, 3.0)
        got = self.clients.received
        with got.lock:
            lats = [got.latency_ms[i] for i in ids if i in got.latency_ms]
        return {"offered_per_s": round(rate, 1), "n": n, "received": len(lats),
                "latency_ms": lat_summary(lats)}


def measure(redis_url: str, *, clients: int, workers: int, concurrency: int, drain_n: int,
            latency_rates: dict[str, float], latency_s: float) -> dict[str, Any]:
    """Start the peer, measure it, stop it. Keys: ``peer_socketio_*``."""
    peer = PeerSocketio(redis_url, clients=clients, workers=workers, concurrency=concurrency)
    try:
        peer.start()
        peer.warmup()
        rate, cpu = peer.drain(drain_n)
        steps = {name: peer.paced(r, latency_s) for name, r in latency_rates.items()}
        for name, step in steps.items():
            progress(f"peer at {name} ({step['offered_per_s']:.0f}/s): {step['latency_ms']}")
        first = next(iter(steps.values()), None)
        return {
            "peer_socketio_per_s": round(rate, 1),
            "peer_socketio_latency_ms": first["latency_ms"] if first else {},
            "peer_socketio_steps": steps,
            "peer_socketio_cpu_ms_per_message": cpu,
            "peer_socketio_lost": sum(s["n"] - s["received"] for s in steps.values()),
        }
    finally:
        peer.stop()
