"""What one enqueue-only send batch costs the store alone: ``accept_dispatched_many`` on a fresh
PostgreSQL database, by batch size, wall and CPU time of this process (PostgreSQL's own CPU is
not counted), on an otherwise idle process — the floor of a batch's wall time inside a worker.

    .venv/bin/python -m bench.micro.store_batch [--batches 150] [--rounds 2] [--json]

The sizes alternate within each round (1, 4, 16), so a noisy machine hits them alike
(docs/performance.md, "Half-load latency, traced"). Each batch is 50 senders to 200 recipients,
one target each, like the end-to-end bench's traffic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta

from bench.db_counts import count_db_calls
from delivery import migrate
from delivery.clock import utcnow
from delivery.db import make_engine
from delivery.store import Store
from delivery.store.records import Target
from delivery.validation import SendRequest, validate_send
from workers.devkit.services import PG_ADMIN_URL, create_database, drop_database

SIZES = (1, 4, 16)


def _batch(start: int, size: int) -> list[tuple[SendRequest, list[Target]]]:
    items = []
    for k in range(start, start + size):
        req = validate_send(f"u{k % 50}", f"r{k % 200}", {"text": f"message {k}", "t": k},
                            f"c{k}", max_body_bytes=16384, default_ttl_s=3600)
        items.append((req, [Target("gw-1", f"conn-{k % 200}")]))
    return items


def measure(store: Store, batches: int, rounds: int) -> dict[str, dict[str, float]]:
    calls = count_db_calls(store.engine)
    samples: dict[int, list[tuple[float, float]]] = {s: [] for s in SIZES}
    counted: dict[int, int] = dict.fromkeys(SIZES, 0)
    k = 0
    for r in range(rounds):
        for size in SIZES:
            before = calls["statements"]
            for _ in range(batches):
                items = _batch(k, size)
                k += size
                now = utcnow()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                store.accept_dispatched_many(items, now=now, deadline=now + timedelta(seconds=10))
                samples[size].append((time.perf_counter() - wall0, time.process_time() - cpu0))
            counted[size] += calls["statements"] - before
            print(f"round {r + 1}/{rounds}: batches of {size} done", file=sys.stderr)
    out = {}
    for size, pairs in samples.items():
        wall = statistics.median(w for w, _ in pairs) * 1000
        cpu = statistics.median(c for _, c in pairs) * 1000
        out[str(size)] = {"wall_ms_p50": round(wall, 3), "cpu_ms_p50": round(cpu, 3),
                          "cpu_ms_per_message": round(cpu / size, 3),
                          "statements_per_batch": counted[size] / (batches * rounds)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=150, help="batches per size and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    url = create_database("delivery_storebatch", PG_ADMIN_URL)
    try:
        migrate.upgrade(url)
        store = Store(make_engine(url))
        try:
            result = measure(store, args.batches, args.rounds)
        finally:
            store.engine.dispose()
    finally:
        drop_database(url, PG_ADMIN_URL)
    if args.json:
        print(json.dumps(result))
    else:
        for size, row in result.items():
            print(f"batch of {size:>2}: wall p50 {row['wall_ms_p50']:.2f} ms, CPU p50 "
                  f"{row['cpu_ms_p50']:.2f} ms ({row['cpu_ms_per_message']:.3f} per message), "
                  f"{row['statements_per_batch']:.1f} statements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
