"""Client load for ``delivery bench e2e``: K WebSocket users in one process.

    python -m bench.clients --urls ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws \
        --prefix bench-u --first 0 --count 100

User ``{prefix}{i}`` connects to ``urls[i % len(urls)]`` with the real ``DeliveryClient``
(which acks each message as it is yielded). Every message body carries the enqueue wall-clock
time ``t``; the latency reported is ``time.time() - t`` at the moment the client has the frame
and acks it. Reports are JSON lines on stdout:

- ``{"type": "ready", "connected": N}`` once every user is welcomed;
- ``{"type": "recv", "r": [[message_id, latency_ms, queue_ms], ...]}`` every ``--report-ms``
  (``queue_ms``: enqueue -> the worker accepted it, from the frame's ``sent_at``);
- ``{"type": "stats", "received": N, "duplicates": N, "reconnects": N}`` at exit.

It stops (closing every connection) when stdin closes or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from datetime import datetime
from typing import Any

from delivery.client import DeliveryClient
from delivery.gateway.tokens import issue_token


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _consume(client: DeliveryClient, out: list[list[Any]]) -> None:
    with contextlib.suppress(Exception):
        async for m in client:
            now = time.time()
            t = m.body.get("t") if isinstance(m.body, dict) else None
            if not isinstance(t, int | float):
                out.append([m.id, -1.0, -1.0])
                continue
            # sent_at is when the worker accepted the message: it splits the latency into
            # queue (enqueue -> the send task runs) and route (store, publish, gateway, ack).
            try:
                accepted = datetime.fromisoformat(m.sent_at).timestamp()
            except ValueError:
                accepted = t
            out.append([m.id, round((now - t) * 1000.0, 3), round((accepted - t) * 1000.0, 3)])


async def _reporter(out: list[list[Any]], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if out:
            batch = out[:]
            out.clear()
            _emit({"type": "recv", "r": batch})


async def run(args: argparse.Namespace) -> int:
    urls = [u for u in args.urls.split(",") if u]
    clients: list[DeliveryClient] = []
    sem = asyncio.Semaphore(50)

    async def connect(i: int) -> DeliveryClient:
        user = f"{args.prefix}{i}"
        client = DeliveryClient(urls[i % len(urls)], issue_token(user, args.secret, 3600),
                                ping_interval_s=None)
        async with sem:
            await client.connect(timeout=30.0)
        return client

    clients = list(await asyncio.gather(
        *(connect(i) for i in range(args.first, args.first + args.count))))
    out: list[list[Any]] = []
    consumers = [asyncio.create_task(_consume(c, out)) for c in clients]
    reporter = asyncio.create_task(_reporter(out, args.report_ms / 1000.0))
    _emit({"type": "ready", "connected": len(clients)})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()

    reporter.cancel()
    if out:
        _emit({"type": "recv", "r": out[:]})
        out.clear()
    stats = {"received": sum(c.stats.received for c in clients),
             "duplicates": sum(c.stats.duplicates for c in clients),
             "reconnects": sum(max(0, c.stats.connects - 1) for c in clients)}
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for t in consumers:
        t.cancel()
    _emit({"type": "stats", **stats})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delivery bench clients")
    parser.add_argument("--urls", required=True, help="comma-separated gateway ws:// URLs")
    # From the environment, not argv: a command line is visible to every local user.
    parser.add_argument("--secret", default=os.environ.get("DELIVERY_SECRET", ""),
                        help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench-u")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--report-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
