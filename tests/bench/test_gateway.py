"""Smoke run of ``delivery bench gateway`` (tiny sizes): it runs and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workers.devkit.procs import ROOT

pytestmark = pytest.mark.slow


def test_bench_gateway_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.gateway", "--quick", "--json",
         "--connections", "300", "--clients", "30", "--seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=True)
    result = json.loads(out.stdout)
    for key in ("connections_held", "rss_mb", "frames_per_s", "echo_frames_per_s", "ratio"):
        assert key in result, result
    assert result["connections_held"] == 300
    assert result["frames_per_s"] > 0 and result["echo_frames_per_s"] > 0
    assert result["delivered_in_store"] > 0
    assert "connections held" in out.stderr
