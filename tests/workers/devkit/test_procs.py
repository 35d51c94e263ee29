"""Child processes and free ports of the dev kit."""

from __future__ import annotations

import socket
import sys

from workers.devkit.cluster import Gateway
from workers.devkit.procs import Proc, celery_argv, free_port


def test_a_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_proc_logs_and_stops() -> None:
    proc = Proc("echo", [sys.executable, "-c", "print('hello', flush=True); input()"], {})
    try:
        proc.wait_for_log("hello", timeout=30)
    finally:
        proc.stop()
    assert proc.popen.poll() is not None


def test_a_worker_command_line_ends_with_the_extra_arguments() -> None:
    argv = celery_argv("w1", concurrency=3, extra=("-E",))
    assert argv[-1] == "-E" and argv[argv.index("-c") + 1] == "3" and "w1@%h" in argv


def test_a_gateway_knows_its_port() -> None:
    gw = Gateway("gw-a", "ws://127.0.0.1:8765/ws", proc=None)  # type: ignore[arg-type]
    assert gw.port == 8765
