"""The README's main job, small: the embedded demo runs end to end and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_embedded_demo_reports_no_loss(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_DATA_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo", "--messages", "120", "--users", "8",
         "--offline", "2", "--race-every", "20", "--rate", "60", "--json"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["messages"] == 120 and report["lost"] == 0
    assert report["duplicate_outcomes"] == 0 and report["duplicate_pushes"] == 0
    assert report["forced_races"] >= 1
    assert report["final_states"] == {"delivered": 120}
    # Offline users: those with a phone were pushed, the others waited as pending.
    assert report["pushed"] > 0 and report["pending"] > 0
    assert "sent" in out.stderr  # the live progress line
