"""K Socket.IO users in one process: ``python -m bench.peer_socketio.clients``.

User ``{prefix}{i}`` connects to ``urls[i % len(urls)]`` over WebSocket. Reports the same JSON
lines on stdout as ``bench.clients`` (``ready``, ``recv`` rows ``[id, latency_ms, queue_ms]``,
``stats``), so ``bench.e2e`` reads both alike. No ack: the peer has none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

import socketio

from bench.peer_socketio import config


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    urls = [u for u in args.urls.split(",") if u]
    out: list[list[Any]] = []
    received = 0
    sem = asyncio.Semaphore(50)

    def on_message(data: dict[str, Any]) -> None:
        nonlocal received
        now = time.time()
        received += 1
        body = data.get("body") or {}
        t = body.get("t") if isinstance(body, dict) else None
        if not isinstance(t, int | float):
            out.append([data.get("id"), -1.0, -1.0])
            return
        accepted = float(data.get("sent_at") or t)
        out.append([data.get("id"), round((now - t) * 1000.0, 3),
                    round((accepted - t) * 1000.0, 3)])

    async def connect(i: int) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False)
        client.on(config.EVENT, on_message)
        async with sem:
            await client.connect(urls[i % len(urls)], auth={"user": f"{args.prefix}{i}"},
                                 transports=["websocket"], wait_timeout=30)
        return client

    clients = list(await asyncio.gather(
        *(connect(i) for i in range(args.first, args.first + args.count))))
    _emit({"type": "ready", "connected": len(clients)})

    async def reporter() -> None:
        while True:
            await asyncio.sleep(args.report_ms / 1000.0)
            if out:
                batch = out[:]
                out.clear()
                _emit({"type": "recv", "r": batch})

    rep = asyncio.create_task(reporter())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()
    rep.cancel()
    if out:
        _emit({"type": "recv", "r": out[:]})
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    _emit({"type": "stats", "received": received, "duplicates": 0, "reconnects": 0})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_socketio.clients")
    parser.add_argument("--urls", required=True, help="comma-separated http:// server URLs")
    parser.add_argument("--prefix", default="peer-u")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--report-ms", type=float, default=50.0)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
