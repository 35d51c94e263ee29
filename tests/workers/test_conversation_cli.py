"""`delivery conversation`, `delivery send --conversation` and `delivery inspect` of a group
message, as a user runs them (subprocesses, embedded SQLite in a temp dir)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.workers.test_cli import data_dir, run

__all__ = ["data_dir"]


def test_create_send_show_and_inspect_a_group(data_dir: Path) -> None:
    made = run(["conversation", "create", "team", "--members", "alice,bob,carol"], data_dir)
    assert made.returncode == 0 and "created with 3 members" in made.stdout, made.stderr
    assert "added dave" in run(["conversation", "add", "team", "dave", "bob"], data_dir).stdout
    assert "removed carol" in run(["conversation", "remove", "team", "carol"], data_dir).stdout
    sent = run(["send", "--from", "alice", "--conversation", "team", "hi all"], data_dir)
    assert sent.returncode == 0, sent.stderr
    msg_id = sent.stdout.strip()
    doc = json.loads(run(["inspect", msg_id, "--json"], data_dir).stdout)
    assert doc["seq"] == 1 and doc["conversation_id"] == "team"
    assert doc["recipients"] == {"bob": {"state": "accepted", "attempts": 0},
                                 "dave": {"state": "accepted", "attempts": 0}}
    shown = json.loads(run(["conversation", "show", "team", "--json"], data_dir).stdout)
    assert shown["last_seq"] == 1
    assert {m["user"]: m["left_seq"] for m in shown["members"]} == {
        "alice": None, "bob": None, "carol": 0, "dave": None}
    direct = run(["send", "--from", "alice", "--to", "bob", "hey"], data_dir).stdout.strip()
    one = json.loads(run(["inspect", direct, "--json"], data_dir).stdout)
    assert one["recipients"] == {"bob": {"state": "accepted", "attempts": 0}}
    assert one["conversation_id"] == "dm:alice:bob" and one["conv_seq"] == 1


def test_bad_conversation_requests_are_clear_errors_and_store_nothing(data_dir: Path) -> None:
    run(["conversation", "create", "team", "--members", "alice,bob"], data_dir)
    cases = [
        (["send", "--from", "zed", "--conversation", "team", "x"], "not a member"),
        (["send", "--from", "alice", "--conversation", "nope", "x"], "unknown conversation"),
        (["conversation", "create", "big", "--members", "a,b,c"],
         "DELIVERY_MAX_CONVERSATION_MEMBERS"),
        (["conversation", "add", "nope", "x"], "unknown conversation"),
        (["conversation", "create", "dm:a:b", "--members", "a,b"], "reserved"),
    ]
    for args, text in cases:
        out = run(args, data_dir, DELIVERY_MAX_CONVERSATION_MEMBERS="2")
        assert out.returncode == 2 and text in out.stderr, (args, out.stderr)
    assert run(["conversation", "show", "big"], data_dir).returncode == 1
    shown = json.loads(run(["conversation", "show", "team", "--json"], data_dir).stdout)
    assert shown["last_seq"] == 0
