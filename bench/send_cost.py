"""What the default send costs: stored first by the producer (then routed by the task) against
enqueue-only (the task stores and routes in one transaction), measured in one run on the same
PostgreSQL database, interleaved, for a recipient who is online.

    .venv/bin/python -m bench.send_cost [--messages 2000] [--rounds 3] [--json]

Counts per message: database statements and commits (SQLAlchemy events), and CPU seconds of
this process (producer + task work; the broker publish, identical in both modes, is not
included). PostgreSQL's own CPU is not counted. Prints a table, or one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from statistics import median_high
from typing import Any

from bench.db_counts import count_db_calls
from delivery import migrate
from delivery.channels import MemoryChannels
from delivery.clock import later, utcnow
from delivery.db import make_engine
from delivery.routing.policy import PolicyConfig
from delivery.routing.router import Router
from delivery.store import Store
from delivery.validation import SendRequest, validate_send
from presence.runtime import MemoryNetwork, PresenceConfig, PresenceNode
from workers.devkit.services import PG_ADMIN_URL, create_database, drop_database


def _request(i: int, tag: str) -> SendRequest:
    return validate_send("alice", "bob", {"text": f"message {i}"}, f"{tag}-{i}",
                         max_body_bytes=16384, default_ttl_s=3600)


def _measure(n: int, tag: str, one: Callable[[SendRequest], None],
             counts: dict[str, int]) -> dict[str, float]:
    reqs = [_request(i, tag) for i in range(n)]
    before = dict(counts)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for req in reqs:
        one(req)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n,
            "statements": (counts["statements"] - before["statements"]) / n,
            "commits": (counts["commits"] - before["commits"]) / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    url = create_database("delivery_sendcost", PG_ADMIN_URL)
    net = MemoryNetwork(seed=1)
    cfg = PresenceConfig(heartbeat_s=0.05, down_s=1.0, purge_s=5.0, batch_s=0.001)
    gw, worker = PresenceNode("gw-a", net, cfg), PresenceNode("worker", net, cfg)
    engine = None
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        counts = count_db_calls(engine)
        store = Store(engine)
        gw.start()
        worker.start()
        gw.track("bob", "c1", {})
        while not worker.list("bob"):
            time.sleep(0.01)
        channels = MemoryChannels()
        channels.subscribe("gw-a", lambda f: None)
        router = Router(store, worker, channels, PolicyConfig(ack_timeout_s=30),
                        enqueue_push=lambda m, a: None, schedule_recheck=lambda m, a, d, r: None)

        def enqueue_only(req: SendRequest) -> None:  # the task: insert + attempt, one commit
            router.accept_and_route(req)

        def stored_first(req: SendRequest) -> None:  # producer insert, then the task routes
            now = utcnow()
            store.accept_request(req, now=now, deadline=later(2.0, now))
            assert router.route_stored(req) is not None

        modes = {"enqueue_only": enqueue_only, "stored_first (default)": stored_first}
        results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode, fn in modes.items():
                results[mode].append(_measure(args.messages, f"{mode[:6]}{r}", fn, counts))
                print(f"round {r + 1}/{args.rounds} {mode}: "
                      f"{results[mode][-1]['cpu_ms']:.3f} ms CPU/msg", file=sys.stderr)
        summary: dict[str, Any] = {"messages_per_round": args.messages, "rounds": args.rounds}
        for mode, runs in results.items():
            summary[mode] = {k: median_high(x[k] for x in runs) for k in runs[0]}
        base, new = summary["enqueue_only"], summary["stored_first (default)"]
        summary["cpu_ratio"] = new["cpu_ms"] / base["cpu_ms"]
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"{'mode':<24}{'CPU ms/msg':>12}{'wall ms/msg':>13}{'statements':>12}"
                  f"{'commits':>9}")
            for mode in modes:
                s = summary[mode]
                print(f"{mode:<24}{s['cpu_ms']:>12.3f}{s['wall_ms']:>13.3f}"
                      f"{s['statements']:>12.2f}{s['commits']:>9.2f}")
            print(f"default / enqueue-only CPU: {summary['cpu_ratio']:.2f}x (medians of "
                  f"{args.rounds} interleaved rounds)")
        return 0
    finally:
        gw.stop()
        worker.stop()
        if engine is not None:
            engine.dispose()
        drop_database(url, PG_ADMIN_URL)


if __name__ == "__main__":
    sys.exit(main())
