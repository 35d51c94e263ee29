"""What the e2e benchmark and its group case both measure: CPU per process and role, PostgreSQL's
transaction and row counters, progress lines; and the online users' id prefix."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg

ONLINE = "bench-u"


def progress(text: str) -> None:
    print(f"[bench e2e {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pg_counters(admin_url: str, dbname: str) -> dict[str, int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    assert row is not None
    return dict(zip(("xact_commit", "xact_rollback", "tup_inserted", "tup_updated",
                     "tup_deleted"), (int(v) for v in row), strict=True))


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_pid(roles: dict[str, list[int]]) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for role, pids in roles.items():
        for pid in pids:
            v = _cpu_of(pid)
            if v is not None:
                out[(role, pid)] = v
    return out


def cpu_delta_ms(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float],
                 messages: int) -> dict[str, float]:
    """CPU milliseconds per message by role, over processes alive at both snapshots."""
    per_role: dict[str, float] = {}
    for key, v in after.items():
        if key in before:
            per_role[key[0]] = per_role.get(key[0], 0.0) + v - before[key]
    result = {role: round(sec * 1000.0 / messages, 3) for role, sec in per_role.items()}
    result["total"] = round(sum(per_role.values()) * 1000.0 / messages, 3)
    return result
