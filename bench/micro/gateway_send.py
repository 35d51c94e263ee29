"""CPU per frame of the gateway connection's send path: the caller writes a frame when the
writer task is parked (``direct``, today) vs waking the writer for every frame (``writer``, as
before: ``Connection.can_write_now`` forced to False).

One process serves ``--clients`` sockets, each wrapped in a gateway ``Connection``; a client
child process acks every frame, and each ack offers that connection's next frame (``--window``
outstanding), so the server does offer + send + ack per frame and nothing else. The two modes
alternate round by round in the same server process (``--rounds`` each); the figure is the
server's CPU microseconds per frame (``time.process_time``), median per mode, and the median
saving of each ``direct`` round against the ``writer`` round after it. Run with
``python -m bench.micro.gateway_send``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from statistics import median
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from delivery.gateway import GatewayConfig
from delivery.gateway.connection import Connection

TEXT = json.dumps({"type": "message", "id": "", "from": "alice",
                   "body": {"text": "hello, this is a benchmark message"},
                   "sent_at": "2024-01-01T00:00:00+00:00"})


async def client_main(port: int, clients: int) -> None:
    async def one() -> None:
        ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
        try:
            async for raw in ws:
                await ws.send(str(raw)[:36])  # the ack: the message id
        except ConnectionClosed:
            pass

    await asyncio.gather(*(one() for _ in range(clients)))


def writer_only(self: Connection) -> bool:
    return False


async def server_main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = GatewayConfig(max_in_flight=args.window, max_queued=1000, ping_interval_s=None)
    conns: list[Connection] = []
    counted = [0]

    def offer(conn: Connection) -> None:
        msg_id = str(uuid.uuid4())
        conn.offer(msg_id, msg_id + TEXT, None)

    async def handler(ws: ServerConnection) -> None:
        conn = Connection(f"c{len(conns)}", "u", ws, cfg, 0.0)
        conn.writer = asyncio.create_task(conn.write_loop())
        conns.append(conn)
        try:
            async for raw in ws:
                conn.acked_id(str(raw))
                counted[0] += 1
                offer(conn)
        except ConnectionClosed:
            pass
        finally:
            conn.close()

    direct = Connection.can_write_now
    results: dict[str, list[float]] = {"direct": [], "writer": []}
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        child = subprocess.Popen([sys.executable, "-m", "bench.micro.gateway_send", "--_client",
                                  str(port), str(args.clients)])
        try:
            while len(conns) < args.clients:
                await asyncio.sleep(0.05)
            for conn in conns:
                for _ in range(args.window):
                    offer(conn)
            await asyncio.sleep(args.seconds)  # warm-up
            for r in range(2 * args.rounds):
                mode = "direct" if r % 2 == 0 else "writer"
                Connection.can_write_now = direct if mode == "direct" else writer_only  # type: ignore[method-assign]
                await asyncio.sleep(0.2)  # settle into the mode
                n0, c0 = counted[0], time.process_time()
                await asyncio.sleep(args.seconds)
                n1, c1 = counted[0], time.process_time()
                results[mode].append((c1 - c0) / max(1, n1 - n0) * 1e6)
        finally:
            Connection.can_write_now = direct  # type: ignore[method-assign]
            child.kill()
            child.wait()
    out: dict[str, Any] = {"clients": args.clients, "window": args.window,
                           "seconds": args.seconds, "rounds": args.rounds}
    for mode, xs in results.items():
        out[f"{mode}_us_per_frame"] = round(median(xs), 2)
        out[f"{mode}_rounds"] = [round(x, 2) for x in xs]
    out["saved_us_per_frame"] = round(out["writer_us_per_frame"] - out["direct_us_per_frame"], 2)
    # Each round against its neighbour of the other mode: robust to slow drifts of the machine.
    pairs = zip(results["direct"], results["writer"], strict=True)
    out["paired_saving_pct"] = round(median((w - d) / w * 100 for d, w in pairs), 1)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="per mode, alternated")
    parser.add_argument("--_client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._client:
        asyncio.run(client_main(int(args._client[0]), int(args._client[1])))
        return 0
    print(json.dumps(asyncio.run(server_main(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
