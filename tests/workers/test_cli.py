"""The `delivery` command as a user runs it (subprocesses, embedded SQLite in a temp dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
        env={**base, "DELIVERY_DATA_DIR": str(data_dir), **env}, timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    out = run(["migrate"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "revision head" in out.stdout
    return tmp_path


def test_send_then_inspect_json(data_dir: Path) -> None:
    sent = run(["send", "--from", "alice", "--to", "bob", "--client-msg-id", "c-1", "hello"],
               data_dir)
    assert sent.returncode == 0, sent.stderr
    msg_id = sent.stdout.strip()
    again = run(["send", "--from", "alice", "--to", "bob", "--client-msg-id", "c-1", "hello"],
                data_dir)
    assert again.stdout.strip() == msg_id  # idempotent
    out = run(["inspect", msg_id, "--json"], data_dir)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["id"] == msg_id and doc["state"] == "accepted"
    assert doc["sender"] == "alice" and doc["recipient"] == "bob"
    assert doc["body"] == {"text": "hello"} and doc["attempts"] == []
    text = run(["inspect", msg_id], data_dir)
    assert "state     accepted" in text.stdout


def test_bad_input_is_a_clear_error(data_dir: Path) -> None:
    bad = run(["send", "--from", "", "--to", "bob", "x"], data_dir)
    assert bad.returncode == 2 and "invalid sender" in bad.stderr
    assert run(["inspect", "not-an-id"], data_dir).returncode == 2
    missing = run(["inspect", "6f1c2d8e-5a4b-4c3d-9e8f-7a6b5c4d3e2f"], data_dir)
    assert missing.returncode == 1 and "no message" in missing.stderr
    unknown = run(["frobnicate"], data_dir)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
    config = run(["send", "--from", "a", "--to", "b", "x"], data_dir,
                 DELIVERY_ACK_TIMEOUT_S="-1")
    assert config.returncode == 2 and "DELIVERY_ACK_TIMEOUT_S" in config.stderr


def test_help_lists_every_command(data_dir: Path) -> None:
    out = run(["--help"], data_dir)
    for name in ("demo", "migrate", "send", "inspect", "gateway", "simulate", "bench"):
        assert name in out.stdout
