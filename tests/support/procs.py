"""Subprocesses of ours (workers, gateways, ...) that tests start, wait for and always stop."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from workers.procs import ROOT, Proc

__all__ = ["ROOT", "Proc", "celery_worker", "delivery_cmd"]


def celery_worker(
    env: dict[str, str], name: str = "w1", *, concurrency: int = 4, extra: Sequence[str] = ()
) -> Proc:
    args = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n", f"{name}@%h",
        "--pool", "threads", "-c", str(concurrency), "--loglevel", "INFO", "--without-gossip",
        "--without-mingle", *extra,
    ]
    proc = Proc(f"celery-{name}", args, env)
    proc.wait_for_log("ready.", timeout=60)
    return proc


def delivery_cmd(name: str, argv: Sequence[str], env: dict[str, str]) -> Proc:
    return Proc(name, [sys.executable, "-m", "workers.cli", *argv], env)
