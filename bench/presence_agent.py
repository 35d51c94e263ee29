"""A presence node in its own process, driven by JSON lines on stdin.

Used by the multi-process tests and the benchmark::

    python -m bench.presence_agent --url redis://127.0.0.1:6379/0 --prefix p --name n1

It prints ``{"ready": true, ...}`` once started, then answers every command
line with one JSON line. Commands (``op``): ``track``, ``untrack``,
``untrack_conn``, ``list``, ``list_all``, ``stats``, ``wait_synced``, ``pause``,
``resume``, ``latencies`` (join latencies, measured from ``meta["t"]`` wall
time, since the last call), ``stop`` (``graceful``: bool).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from presence.config import PresenceConfig
from presence.runtime import PresenceNode
from presence.state import Presence
from presence.transport.redis import RedisTransport


def _row(p: Presence) -> list[Any]:
    return [p.key, p.conn, p.node, dict(p.meta)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.presence_agent")
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--heartbeat", type=float, default=0.25)
    ap.add_argument("--down", type=float, default=3.0)
    ap.add_argument("--purge", type=float, default=60.0)
    ap.add_argument("--batch", type=float, default=0.005)
    ap.add_argument(
        "--impl", choices=("now", "v1"), default="now",
        help="v1: the replica before the per-node cost cuts (bench/presence_v1), for comparisons",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.impl == "v1":
        import presence.runtime
        from bench.presence_v1.replica import Replica as ReplicaV1

        presence.runtime.Replica = ReplicaV1  # type: ignore[attr-defined,assignment]
    cfg = PresenceConfig(
        heartbeat_s=args.heartbeat, down_s=args.down, purge_s=args.purge, batch_s=args.batch
    )
    transport = RedisTransport(args.url, args.prefix, args.name)
    node = PresenceNode(args.name, transport, cfg)
    latencies: list[float] = []

    def on_diff(joins: list[Presence], leaves: list[Presence]) -> None:
        now = time.time()
        for p in joins:
            t = p.meta.get("t")
            if isinstance(t, float) and p.node != args.name:
                latencies.append(now - t)

    node.subscribe(on_diff)
    node.start()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "incarnation": node.incarnation}) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            op = cmd["op"]
            res: dict[str, Any] = {"ok": True}
            if op == "track":
                meta = dict(cmd.get("meta") or {})
                if cmd.get("stamp"):
                    meta["t"] = time.time()
                node.track(cmd["key"], cmd["conn"], meta)
            elif op == "untrack":
                node.untrack(cmd["key"], cmd["conn"])
            elif op == "untrack_conn":
                node.untrack_conn(cmd["conn"])
            elif op == "list":
                res["result"] = [_row(p) for p in node.list(cmd["key"])]
            elif op == "list_all":
                res["result"] = sorted(_row(p)[:3] for p in list(node.list_all()))
            elif op == "stats":
                res["result"] = node.stats()
            elif op == "wait_synced":
                res["result"] = node.wait_synced(float(cmd.get("timeout", 5.0)))
            elif op == "pause":
                transport.pause()
            elif op == "resume":
                transport.resume()
            elif op == "latencies":
                res["result"], latencies[:] = list(latencies), []
            elif op == "stop":
                node.stop(graceful=bool(cmd.get("graceful", True)))
                out.write(json.dumps(res) + "\n")
                out.flush()
                return 0
            else:
                res = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:
            res = {"ok": False, "error": repr(exc)}
        out.write(json.dumps(res, default=str) + "\n")
        out.flush()
    node.stop(graceful=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
