"""``delivery bench``: every benchmark is reachable, and the command explains itself."""

from __future__ import annotations

import importlib
import subprocess
import sys

from workers.commands.bench import BENCHES
from workers.devkit.procs import ROOT


def test_help_lists_every_benchmark() -> None:
    out = subprocess.run([sys.executable, "-m", "workers.cli", "bench", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: delivery bench")
    for name in ("presence", "gateway", "push", "e2e", "clients"):
        assert f"  {name} " in out.stdout


def test_unknown_benchmark_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "workers.cli", "bench", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage: delivery bench" in out.stderr


def test_every_benchmark_module_has_a_main() -> None:
    for module_name, _ in BENCHES.values():
        assert callable(importlib.import_module(module_name).main)


def test_push_bench_runs_tiny() -> None:
    out = subprocess.run([sys.executable, "-m", "workers.cli", "bench", "push", "--n", "5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sends/s" in out.stdout and "5/5 pushed" in out.stdout
