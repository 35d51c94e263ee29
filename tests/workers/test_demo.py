"""The README's main job, small: the embedded demo runs end to end and loses nothing, direct
and group messages alike."""

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
    # Group conversations: every recipient shown every message, in seq order, and each sender
    # told by receipts (delivered to every recipient, and read).
    groups = report["groups"]
    assert groups["conversations"] == 3 and groups["messages"] == 12
    assert groups["lost"] == 0 and groups["out_of_order"] == 0
    assert groups["shown"] == groups["recipient_deliveries"] > 12
    assert groups["final_states"] == {"delivered": groups["recipient_deliveries"]}
    assert groups["messages_without_all_delivered_receipts"] == 0
    assert groups["messages_with_read_receipts"] == 12
    assert groups["receipt_frames"]["delivered"] >= groups["recipient_deliveries"]
