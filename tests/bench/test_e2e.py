"""Smoke test of ``delivery bench e2e`` with tiny parameters (real Redis, PostgreSQL, processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.e2e import lat_summary, summarize_profile

ROOT = Path(__file__).resolve().parents[2]


def test_latency_summary() -> None:
    s = lat_summary([1.0, 2.0, 3.0])
    assert s["p50"] == 2.0 and s["n"] == 3


def test_profile_summary(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("main (a.py:1);f (b.py:2) 3\nmain (a.py:1);g (b.py:5) 1\n")
    text = summarize_profile(raw)
    assert "75.0%  f (b.py)" in text and "100.0%  main (a.py)" in text


@pytest.mark.timeout(150)
def test_tiny_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bench", "e2e", "--quick", "--json",
         "--workers", "1", "--gateways", "1", "--clients", "20", "--drain", "100",
         "--tiny", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=145,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("acked_per_s", "raw_celery_per_s", "ratio", "latency_ms", "lost",
                "duplicate_outcomes", "broker_round_trips_per_message", "db_writes_per_message",
                "push_per_s", "peer_socketio_per_s", "peer_socketio_latency_ms"):
        assert key in result
    assert result["lost"] == 0 and result["duplicate_outcomes"] == 0
    assert result["raw_celery_per_s"] > 0 and result["acked_per_s"] > 0
    assert set(result["latency_ms"]) >= {"p50", "p99", "p999"}
    assert result["peer_socketio_per_s"] > 0 and result["peer_socketio_lost"] == 0
    # The per-message counts at each batch limit (the tiny run's limits are 1 and 8).
    sweep = result["per_batch_size"]
    assert list(sweep) == ["1", "8"]
    assert sweep["1"]["max_size"] == 1 and sweep["8"]["max_size"] <= 8
    for counts in sweep.values():
        assert counts["db_commits_per_message"] > 0 and counts["cpu_ms_per_message"]["total"] > 0
    assert (out / "e2e.json").exists() and (out / "e2e.png").stat().st_size > 0


@pytest.mark.timeout(90)
def test_tiny_group_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bench", "e2e", "--group", "--json",
         "--workers", "1", "--gateways", "1", "--clients", "20", "--group-size", "10",
         "--group-messages", "4", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=85,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for phase in ("direct", "group"):
        assert result[phase]["recipient_deliveries"] == 40
        for key in ("deliveries_per_s", "cpu_ms_per_delivery", "db_writes_per_delivery"):
            assert key in result[phase]
    assert result["cpu_ratio"] > 0
    assert (out / "e2e-group.json").exists()
