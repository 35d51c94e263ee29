"""Parts of ``delivery bench e2e`` shared with the Socket.IO peer (bench/peer_socketio): the
client subprocesses and what they report, CPU accounting, progress lines, the stop flag."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delivery.stats import percentile
from workers.devkit.procs import ROOT

SENDER_THREADS = 4

# Set by SIGTERM/SIGINT; long loops check it, so an interrupt swallowed by a library (kombu's
# publish retry, Celery's reply collection) still ends the run and its clean-up.
STOP = threading.Event()


def check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


def lat_summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2),
            "p999": round(percentile(values, 99.9), 2),
            "max": round(max(values), 2) if values else float("nan"), "n": len(values)}


# -- client subprocesses ------------------------------------------------------------------------


@dataclass
class Received:
    """What the client subprocesses reported: message id -> latency (ms)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latency_ms: dict[str, float] = field(default_factory=dict)
    queue_ms: dict[str, float] = field(default_factory=dict)
    repeats: int = 0
    stats: list[dict[str, Any]] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)

    def add(self, rows: list[list[Any]]) -> None:
        with self.lock:
            for mid, lat, queued in rows:
                if mid in self.latency_ms:
                    self.repeats += 1
                else:
                    self.latency_ms[mid] = float(lat)
                    self.queue_ms[mid] = float(queued)

    def count_of(self, ids: list[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.latency_ms)

    def wait_for(self, ids: list[str], timeout: float) -> bool:
        """Until every one of ``ids`` was reported (True) or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_of(ids) == len(ids):
                return True
            check_stop()
            time.sleep(0.01)
        return False


class ClientProcs:
    """K users in 1-2 subprocesses (``bench.clients``, or the peer's Socket.IO clients)."""

    def __init__(self, urls: list[str], clients: int, procs: int, env: dict[str, str], *,
                 module: str = "bench.clients", prefix: str) -> None:
        self.received = Received()
        self.procs: list[subprocess.Popen[str]] = []
        self.threads: list[threading.Thread] = []
        self.logs: list[Path] = []
        per = -(-clients // procs)
        for p in range(procs):
            first, count = p * per, min(per, clients - p * per)
            if count <= 0:
                continue
            log = Path(tempfile.mkstemp(prefix=f"bench-clients-{p}-", suffix=".log")[1])
            self.logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--urls", ",".join(urls),
                 "--prefix", prefix, "--first", str(first),
                 "--count", str(count)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log.open("wb"), text=True, bufsize=1, start_new_session=True)
            self.procs.append(proc)
            t = threading.Thread(target=self._read, args=(proc,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            kind = obj.get("type")
            if kind == "recv":
                self.received.add(obj["r"])
            elif kind == "ready":
                with self.received.lock:
                    self.received.ready.append(int(obj["connected"]))
            elif kind == "stats":
                with self.received.lock:
                    self.received.stats.append(obj)

    def wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.received.lock:
                if len(self.received.ready) == len(self.procs):
                    return sum(self.received.ready)
            for p, log in zip(self.procs, self.logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"client process exited:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError("client processes did not connect in time")

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                assert p.stdin is not None
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for t in self.threads:
            t.join(2)
        for log in self.logs:
            log.unlink(missing_ok=True)
