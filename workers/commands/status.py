"""``delivery status``: a one-screen summary of the cluster (``--json`` for scripts).

- workers: Celery ``inspect ping`` + ``stats`` (short timeout): name, pool, concurrency, tasks;
- presence: a short-lived replica of our own joins, syncs, reports every replica it hears
  (gateways ``gw-*``, workers ``worker.*``) as up or down with its connection count, then leaves;
- messages by state and the age of the oldest unacked message (the store).

In embedded mode (no broker) only the store part applies.

As a probe, the exit status says what is wrong (the lowest code wins when several are):

    0  healthy: the database answers, and in a cluster the broker and Redis answer, the
       status replica synced and at least one worker answered the ping
    2  a setting is invalid (the line names the variable)
    3  the database cannot be reached or is not migrated
    4  the broker cannot be reached
    5  presence: Redis cannot be reached or the status replica did not sync
    6  no worker answered within --timeout
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from delivery.runtime import get_runtime
from delivery.settings import Settings, get_settings
from delivery.vocabulary import State

EXIT_OK, EXIT_DATABASE, EXIT_BROKER, EXIT_PRESENCE, EXIT_NO_WORKER = 0, 3, 4, 5, 6

STATES = tuple(s.value for s in State)


def store_status(settings: Settings) -> dict[str, Any]:
    store = get_runtime().store
    counts = store.count_by_state()
    oldest = store.oldest_unacked()
    age = None
    if oldest is not None:
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    return {
        "by_state": {s: int(counts.get(s, 0))
                     for s in (*STATES, *sorted(set(counts) - set(STATES)))},
        "total": int(sum(counts.values())),
        "oldest_unacked_age_s": age,
        "oldest_unacked_at": oldest.isoformat() if oldest is not None else None,
    }


def worker_status(settings: Settings, timeout: float) -> dict[str, Any]:
    from delivery.celery_app import make_app

    app = make_app(settings)
    try:
        insp = app.control.inspect(timeout=timeout)
        pings = insp.ping() or {}
        stats = (insp.stats() or {}) if pings else {}
    except Exception as exc:  # broker down: say so instead of failing the whole summary
        return {"error": f"{type(exc).__name__}: {exc}", "workers": []}
    finally:
        app.close()
    workers = []
    for name in sorted(pings):
        s = stats.get(name, {})
        pool = s.get("pool", {}) if isinstance(s, dict) else {}
        total = s.get("total", {}) if isinstance(s, dict) else {}
        workers.append({
            "name": name,
            "ok": pings[name].get("ok") == "pong" if isinstance(pings[name], dict) else False,
            # "celery.concurrency.thread:TaskPool" -> "thread"
            "pool": str(pool.get("implementation", "")).split(":")[0].rsplit(".", 1)[-1] or None,
            "concurrency": pool.get("max-concurrency"),
            "tasks": int(sum(total.values())) if isinstance(total, dict) else None,
            "uptime_s": s.get("uptime") if isinstance(s, dict) else None,
        })
    return {"workers": workers}


def _role(name: str) -> str:
    if name.startswith("gw-") or name.startswith("gateway"):
        return "gateway"
    if name.startswith("worker"):
        return "worker"
    return "other"


def presence_status(settings: Settings, timeout: float) -> dict[str, Any]:
    from delivery.configs import presence_config
    from presence.runtime import PresenceNode, redis_transport

    name = f"status.{socket.gethostname()}.{os.getpid()}"
    node = PresenceNode(name, redis_transport(settings.redis_url, settings.key_prefix, name),
                        presence_config(settings))
    node.start()
    try:
        synced = node.wait_synced(timeout)
        # Give every replica one heartbeat to be heard, so "up" and "down" are current.
        time.sleep(min(timeout, 2 * settings.presence_heartbeat_s))
        stats = node.stats()
        conns = Counter(p.node for p in node.list_all())
    finally:
        node.stop(graceful=True)
    replicas = []
    for status in ("up", "down"):
        for rid in stats.get(f"replicas_{status}", []):
            rname = rid.rsplit(":", 1)[0]
            replicas.append({"name": rname, "role": _role(rname), "status": status,
                             "connections": conns.get(rname, 0)})
    replicas.sort(key=lambda r: (r["role"], r["name"]))
    return {"synced": synced, "entries": int(stats.get("entries", 0)), "replicas": replicas}


def collect(settings: Settings, timeout: float) -> dict[str, Any]:
    """The summary, with ``problems``: [{"code", "what"}] for every failed check."""
    from delivery.preflight import ServiceError, check_broker, check_database, check_redis

    problems: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "mode": "embedded" if settings.embedded else "cluster",
        "key_prefix": settings.key_prefix,
        "time": datetime.now(UTC).isoformat(),
        "problems": problems,
    }
    try:
        check_database(settings)  # before the store: never creates an empty SQLite file
        out["messages"] = store_status(settings)
    except Exception as exc:
        problems.append({"code": EXIT_DATABASE, "what": _line(exc)})
        out["messages"] = {"error": _line(exc)}
    if settings.embedded:
        return out
    try:
        check_broker(settings, timeout)
    except ServiceError as exc:
        problems.append({"code": EXIT_BROKER, "what": str(exc)})
        out["workers"] = {"error": str(exc), "workers": []}
    else:
        out["workers"] = worker_status(settings, timeout)
        if "error" in out["workers"]:
            problems.append({"code": EXIT_BROKER, "what": out["workers"]["error"]})
        elif not any(w["ok"] for w in out["workers"]["workers"]):
            problems.append({"code": EXIT_NO_WORKER,
                             "what": f"no worker answered within {timeout:g}s"})
    try:
        check_redis(settings, timeout)
        out["presence"] = presence_status(settings, timeout)
        if not out["presence"]["synced"]:
            problems.append({"code": EXIT_PRESENCE, "what": "presence replica did not sync"})
    except Exception as exc:
        out["presence"] = {"error": _line(exc), "replicas": []}
        problems.append({"code": EXIT_PRESENCE, "what": _line(exc)})
    return out


def exit_code(summary: dict[str, Any]) -> int:
    codes = [int(p["code"]) for p in summary.get("problems", [])]
    return min(codes) if codes else EXIT_OK


def _line(exc: BaseException) -> str:
    from delivery.preflight import ServiceError, first_line

    return str(exc) if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {first_line(exc)}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def render(s: dict[str, Any]) -> str:
    lines = [f"delivery status ({s['mode']}, prefix {s['key_prefix']}) at {s['time']}", ""]
    for problem in s.get("problems", []):
        lines.append(f"PROBLEM (exit {problem['code']}): {problem['what']}")
    if s.get("problems"):
        lines.append("")
    if "workers" in s:
        w = s["workers"]
        if "error" in w:
            lines.append(f"workers: cannot reach the broker: {w['error']}")
        else:
            lines.append(f"workers: {len(w['workers'])} answering")
            for x in w["workers"]:
                lines.append(f"  {x['name']:<32} {'ok' if x['ok'] else 'NO PONG':<8} "
                             f"pool={x['pool']} concurrency={x['concurrency']} "
                             f"tasks={x['tasks']}")
        lines.append("")
    if "presence" in s:
        pr = s["presence"]
        if "error" in pr:
            lines.append(f"presence: cannot join: {pr['error']}")
        else:
            roles = Counter(r["role"] for r in pr["replicas"] if r["status"] == "up")
            down = sum(1 for r in pr["replicas"] if r["status"] == "down")
            lines.append(f"presence: {'synced' if pr['synced'] else 'NOT SYNCED'}, "
                         f"{pr['entries']} connections; {roles.get('gateway', 0)} gateways, "
                         f"{roles.get('worker', 0)} worker replicas up, {down} down")
            for r in pr["replicas"]:
                lines.append(f"  {r['role']:<8} {r['name']:<40} {r['status']:<5} "
                             f"connections={r['connections']}")
        lines.append("")
    m = s["messages"]
    if "error" in m:
        lines.append("messages: unavailable (see above)")
        return "\n".join(lines)
    lines.append(f"messages: {m['total']} total")
    lines.append("  " + "  ".join(f"{k}={v}" for k, v in m["by_state"].items()))
    lines.append(f"  oldest unacked: {_age(m['oldest_unacked_age_s'])}"
                 + (f" (since {m['oldest_unacked_at']})" if m["oldest_unacked_at"] else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="delivery status", description="One-screen summary: workers, gateways and presence "
        "replicas, messages by state, oldest unacked message age. Exit status: 0 healthy, "
        "2 bad setting, 3 database, 4 broker, 5 presence (Redis), 6 no worker answering.")
    parser.add_argument("--json", action="store_true", help="print JSON (with a problems list)")
    parser.add_argument("--timeout", type=float, default=1.5,
                        help="seconds to wait for workers' replies and the presence sync")
    args = parser.parse_args(argv)
    summary = collect(get_settings(), args.timeout)
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        print()
    else:
        print(render(summary))
    return exit_code(summary)
