"""``delivery capacity``: the presence capacity model for one deployment, or the sizing table.

    delivery capacity --users 10000000 --gateways 500 --workers 500 --shards auto
    delivery capacity --table [--churn-per-min 0.1] [--json]

Pure arithmetic (:mod:`delivery.simulation.capacity`); prints per replica presence frames and
bytes per second in and out, memory, receive CPU, convergence after a join, Redis fan-out, and
the budgets the deployment exceeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .capacity import Costs, Deployment, Estimate, choose_shards, estimate, wire_sizes

USERS = (10**5, 10**6, 10**7)
NODES = (10, 100, 1000)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="delivery capacity", description="Presence capacity "
                                 "model: today's shared replication (S=1) and the sharded design.")
    ap.add_argument("--users", type=int, default=10**6, help="connected users")
    ap.add_argument("--gateways", type=int, default=50, help="gateway nodes (G)")
    ap.add_argument("--workers", type=int, default=50, help="worker processes (W)")
    ap.add_argument("--churn-per-min", type=float, default=0.1,
                    help="reconnects per connected user per minute")
    ap.add_argument("--rate", type=float, default=0.0, help="messages per second")
    ap.add_argument("--shards", default="1", help="S, or 'auto' (choose_shards)")
    ap.add_argument("--shards-per-worker", type=int, default=1,
                    help="shards each worker serves (sharded design)")
    ap.add_argument("--redis-nodes", default="auto",
                    help="Redis Cluster nodes for the shard channels, or 'auto' (as needed)")
    ap.add_argument("--heartbeat-ms", type=float, default=250.0,
                    help="worker replica heartbeat period")
    ap.add_argument("--gateway-heartbeat-ms", type=float, default=250.0,
                    help="gateway replica heartbeat period")
    ap.add_argument("--batch-ms", type=float, default=5.0,
                    help="delta batching window of a replica")
    ap.add_argument("--table", action="store_true",
                    help="U = 10^5, 10^6, 10^7 on 10, 100, 1000 nodes (half gateways), S=1 "
                    "and sharded")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def _deployment(users: int, gateways: int, workers: int, shards: str, redis_nodes: str,
                ns: argparse.Namespace) -> Deployment:
    s = choose_shards(users, workers) if shards == "auto" else int(shards)
    d = Deployment(users, gateways, workers, churn_per_min=ns.churn_per_min,
                   msg_rate=ns.rate, shards=s, shards_per_worker=ns.shards_per_worker,
                   heartbeat_s=ns.heartbeat_ms / 1000.0,
                   gateway_heartbeat_s=ns.gateway_heartbeat_ms / 1000.0,
                   batch_s=ns.batch_ms / 1000.0)
    if redis_nodes == "auto":
        need = estimate(d).redis_nodes_needed
        return dataclasses.replace(d, redis_nodes=min(need, s) if s > 1 else 1)
    return dataclasses.replace(d, redis_nodes=int(redis_nodes))


def as_dict(e: Estimate) -> dict[str, Any]:
    out = dataclasses.asdict(e)
    out["limits"] = list(e.limits)
    return out


def row(e: Estimate) -> str:
    d, w, g = e.deployment, e.worker, e.gateway

    def ms(x: float) -> str:
        return "inf" if x == float("inf") else f"{x:.0f}"

    over = [x for x in e.limits if not (x.startswith("gateway: ")
                                        and "worker: " + x[9:] in e.limits)]
    over = [x.replace("worker: ", "replica: ") if e.design == "shared" else x for x in over]
    return (f"| {d.users:.0e} | {d.replicas} | {d.shards} | {w.frames_in:,.0f} | "
            f"{w.bytes_in / 1e6:.2f} | {w.bytes_out / 1e3:.1f} | {g.bytes_out / 1e3:.1f} | "
            f"{w.memory_bytes / 1e6:,.0f} | {w.cpu:.2f} | {ms(w.convergence_p50_ms)} / "
            f"{ms(w.convergence_p99_ms)} | {e.deliveries_per_s:,.0f} | "
            f"{e.redis_nodes_needed} | {'; '.join(over) or 'ok'} |")


HEADER = ("| users | nodes | S | worker frames/s in | worker MB/s in | worker kB/s out | "
          "gateway kB/s out | worker MB | worker CPU | convergence p50 / p99 ms | "
          "Redis deliveries/s | Redis nodes needed | over budget |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    costs = Costs(wire=wire_sizes())
    try:
        if ns.table:
            ests = []
            for u in USERS:
                for n in NODES:
                    g, w = n // 2, n - n // 2
                    for shards in ("1", "auto"):
                        e = estimate(_deployment(u, g, w, shards, "auto", ns), costs)
                        if shards == "auto" and e.deployment.shards == 1:
                            continue  # the sharded design picks S=1 here: same row
                        ests.append(e)
        else:
            ests = [estimate(_deployment(ns.users, ns.gateways, ns.workers, ns.shards,
                                         ns.redis_nodes, ns), costs)]
    except ValueError as exc:
        print(f"delivery capacity: {exc}", file=sys.stderr)
        return 2
    if ns.json:
        sys.stdout.write(json.dumps([as_dict(e) for e in ests]) + "\n")
    else:
        sys.stdout.write(HEADER + "\n" + "\n".join(row(e) for e in ests) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
