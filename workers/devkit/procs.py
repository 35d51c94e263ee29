"""Child processes of ours (workers, gateways, the FCM stub) with a log file each, that a
caller starts, waits for and always stops, and free ports for them: used by the local cluster,
the benchmarks and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file (read it on failure)."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(args), env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {needle!r} not seen in {timeout}s:\n{self.log()[-4000:]}")

    def wait_until(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: condition not met in {timeout}s:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def pause(self) -> None:
        """SIGSTOP the process group (a GC or VM pause, CPU starvation): sockets stay open."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGCONT)  # a paused process cannot exit
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.popen.returncode


def celery_argv(name: str, *, concurrency: int, extra: Sequence[str] = ()) -> list[str]:
    """The command line of a Celery worker of ours (threads pool, no gossip or mingle)."""
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n", f"{name}@%h",
        "--pool", "threads", "-c", str(concurrency), "--loglevel", "INFO", "--without-gossip",
        "--without-mingle", *extra,
    ]


def celery_worker(
    env: dict[str, str], name: str = "w1", *, concurrency: int = 4, extra: Sequence[str] = ()
) -> Proc:
    """A Celery worker process, returned once it is ready."""
    proc = Proc(f"celery-{name}", celery_argv(name, concurrency=concurrency, extra=extra), env)
    proc.wait_for_log("ready.", timeout=60)
    return proc


def delivery_cmd(name: str, argv: Sequence[str], env: dict[str, str]) -> Proc:
    """``delivery ARGV...`` as a child process (not waited for)."""
    return Proc(name, [sys.executable, "-m", "workers.cli", *argv], env)
