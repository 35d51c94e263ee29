"""What ``POST /v1/messages`` costs over the Python API it wraps, measured in one run.

    delivery bench api [--messages 1000] [--concurrency 16] [--json]

On a fresh PostgreSQL database and Redis broker key space: C threads call
``send_message(..., durable=True)`` in this process (the baseline: store, then enqueue), then
the same number of messages go over HTTP to a ``delivery api`` process from C keep-alive
clients. Nothing consumes the tasks (only the send path is measured). Prints sends/s and
latency percentiles of both and their ratio; with ``--json`` one JSON object. Then sends at
4 x ``DELIVERY_API_MAX_IN_FLIGHT`` concurrency and counts how many were refused with 429.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from delivery import migrate
from delivery.secret import new_secret
from workers.devkit.cluster import LocalCluster
from workers.devkit.services import (
    REDIS_URL,
    ServiceEnv,
    clear_redis_prefix,
    fresh_pg_database,
)


def _run(n: int, threads: int, send: Callable[[int], int]) -> dict[str, Any]:
    """``send(i)`` from ``threads`` threads until ``n`` calls; returns rate and latency."""
    lock = threading.Lock()
    counter = iter(range(n))
    lat: list[float] = []
    statuses: dict[int, int] = {}

    def loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            status = send(i)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                statuses[status] = statuses.get(status, 0) + 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    lat.sort()
    return {"messages": n, "seconds": round(elapsed, 3), "per_s": round(n / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery bench api", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per mode")
    parser.add_argument("--concurrency", type=int, default=16, help="sending threads")
    parser.add_argument("--max-in-flight", type=int, default=32,
                        help="DELIVERY_API_MAX_IN_FLIGHT of the API process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    key = new_secret()
    prefix = f"bench-api-{uuid.uuid4().hex[:6]}"
    with fresh_pg_database("delivery_bench") as db_url:
        migrate.upgrade(db_url)
        env = ServiceEnv(db_url, REDIS_URL, prefix).env(
            DELIVERY_API_KEYS=key, DELIVERY_API_MAX_IN_FLIGHT=str(args.max_in_flight))
        try:
            os.environ.update({k: v for k, v in env.items() if k.startswith("DELIVERY_")})
            from delivery.api import send_message
            from delivery.settings import reset_settings

            reset_settings()
            body = {"text": "x" * 100}

            def direct(i: int) -> int:
                send_message("alice", "bob", body, client_msg_id=f"py-{i}", durable=True)
                return 202

            baseline = _run(args.messages, args.concurrency, direct)
            with LocalCluster(env) as cluster:
                url, _ = cluster.start_api()
                local = threading.local()

                def post(i: int, tag: str = "http") -> int:
                    client = getattr(local, "client", None)
                    if client is None:
                        client = local.client = httpx.Client(
                            base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"})
                    res = client.post("/v1/messages", json={
                        "sender": "alice", "recipient": "bob", "body": body,
                        "client_msg_id": f"{tag}-{i}"})
                    return res.status_code

                http = _run(args.messages, args.concurrency, post)
                burst = _run(args.messages, args.max_in_flight * 4,
                             lambda i: post(i, "burst"))
        finally:
            clear_redis_prefix(REDIS_URL, prefix)
    result = {"python_send_message": baseline, "http_post": http,
              "http_over_python_rate": round(http["per_s"] / baseline["per_s"], 2),
              "overload_burst": {"concurrency": args.max_in_flight * 4, **burst}}
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("python_send_message", "http_post"):
            r = result[name]
            print(f"{name:<20} {r['per_s']:>8} sends/s  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  {r['statuses']}")
        print(f"http / python rate: {result['http_over_python_rate']}")
        print(f"burst at {args.max_in_flight * 4} concurrent: {burst['statuses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
