"""py-spy for the benchmarks (a dev tool, not a dependency): find it, record one process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

MISSING = "py-spy is not installed (.venv/bin/pip install py-spy)"


def py_spy_exe() -> str | None:
    """py-spy on PATH or beside this Python; None when neither has it."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def record(exe: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``--gil``: Python CPU time, 200 Hz) on ``pid`` for ``seconds``, raw stacks into
    ``out``; the caller waits for the returned process."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "200",
         "--format", "raw", "-o", str(out), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
