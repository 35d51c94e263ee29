"""Check the capacity model against real presence replicas over Redis.

    .venv/bin/python -m bench.capacity_check [--replicas 8 16] [--seconds 6] [--json]
    .venv/bin/python -m bench.capacity_check --replicas 16 --shards 4    # the sharded design

(As a module: run as a script, ``bench/`` comes first on the path and ``bench/presence.py``
shadows the ``presence`` package.)

For each replica count N it starts N processes (half gateways, half workers), each one
``presence.runtime.PresenceNode`` on the Redis transport, all on one fresh channel prefix. The
gateways track ``--users-per-gateway`` users, then reconnect random users (an untrack and a
track) as a Poisson process of ``--events`` presence events a second. After a warm-up, every
process counts the frames and bytes its transport receives and publishes for ``--seconds``
and reports them with the events it made. The model
(:func:`delivery.simulation.capacity.estimate`, shared design, frame sizes measured on the
encoder) is fed the same users, replicas and the measured event rate; the table gives measured
against predicted per replica, averaged per role.

With ``--shards S`` (S > 1) the replicas run the sharded design as the pipeline builds it
(``presence.sharded.ShardedPresence``): each gateway a writer replica in every shard (it
subscribes to none), worker ``i`` a replica of shard ``i mod S`` only; counters are summed over
a process's shard transports, and the model's sharded design (one shard per worker) is fed the
same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from delivery.simulation.capacity import Costs, Deployment, estimate, wire_sizes
from presence.config import PresenceConfig
from presence.runtime import PresenceNode
from presence.sharded import ShardedPresence
from presence.transport.redis import RedisTransport

URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
META = {"device": "ios"}


class CountingTransport(RedisTransport):
    """The Redis transport, also counting the bytes it receives."""

    bytes_in = 0

    def start(self, on_frame: Callable[[bytes], None]) -> None:
        def counted(frame: bytes) -> None:
            self.bytes_in += len(frame)
            on_frame(frame)

        super().start(counted)


def _counters(ts: list[CountingTransport]) -> dict[str, int]:
    return {k: sum(getattr(t, k) for t in ts)
            for k in ("frames_in", "bytes_in", "frames_out", "bytes_out")}


def replica_main(args: argparse.Namespace) -> int:
    """One replica process: churn (gateways), count, print one JSON line."""
    cfg = PresenceConfig(heartbeat_s=0.25, batch_s=0.005)
    gateway = args.name.startswith("g")
    ts: list[CountingTransport] = []
    node: Any
    if args.shards > 1:
        def transport(shard: int, name: str) -> CountingTransport:
            t = CountingTransport(args.url, args.prefix, name, shard=shard, shards=args.shards,
                                  listen=not gateway)
            ts.append(t)
            return t

        served = None if gateway else (int(args.name[1:]) % args.shards,)
        node = ShardedPresence.build(args.name, transport, shards=args.shards, served=served,
                                     config=cfg, writer=gateway)
    else:
        ts.append(CountingTransport(args.url, args.prefix, args.name))
        node = PresenceNode(args.name, ts[0], cfg)
    node.start()
    rng = random.Random(args.name)
    base = int(args.name[1:]) * 1_000_000
    live: dict[str, str] = {}  # user -> connection (online)
    offline: list[str] = []
    if gateway:
        for i in range(args.users_per_gateway):
            key = f"user-{base + i:07d}"
            live[key] = f"c-{base + i:08x}"
            node.track(key, live[key], META)
    n_conn = base + args.users_per_gateway
    # ready: wait for the parent's common start time (every replica is up by then)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    start_at = float(sys.stdin.readline())
    measure_at = start_at + args.warmup
    stop_at = measure_at + args.seconds
    before: dict[str, int] = {}
    events = 0
    now = time.time()
    next_ev = now + rng.expovariate(args.events) if gateway and args.events > 0 else float("inf")
    while now < stop_at:
        if not before and now >= measure_at:
            before = _counters(ts)
            events = 0
        if now >= next_ev:
            # one event: a user goes offline, or an offline user comes back (10 % offline)
            if offline and (len(offline) >= len(live) / 9 or rng.random() < 0.5):
                key = offline.pop(rng.randrange(len(offline)))
                n_conn += 1
                live[key] = f"c-{n_conn:08x}"
                node.track(key, live[key], META)
            else:
                key = rng.choice(list(live))
                node.untrack(key, live.pop(key))
                offline.append(key)
            events += 1
            next_ev += rng.expovariate(args.events)
        time.sleep(max(0.0, min(next_ev, stop_at, measure_at if not before else stop_at)
                       - time.time()))
        now = time.time()
    after = _counters(ts)
    stats = node.stats()
    node.stop(graceful=True)
    out = {k: (after[k] - before.get(k, 0)) / args.seconds for k in after}
    out.update(name=args.name, role="gateway" if gateway else "worker",
               events_per_s=events / args.seconds, entries=stats.get("entries"),
               transfers=stats.get("transfers_requested"), gaps=stats.get("gaps"))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def run(replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    g = replicas // 2
    names = [f"g{i:02d}" for i in range(g)] + [f"w{i:02d}" for i in range(replicas - g)]
    prefix = f"capcheck-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bench.capacity_check", "--replica", n, "--prefix", prefix,
         "--url", args.url, "--warmup", str(args.warmup), "--seconds", str(args.seconds),
         "--events", str(args.events), "--users-per-gateway", str(args.users_per_gateway),
         "--shards", str(args.shards)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in names]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start_at = time.time() + 0.5
    rows = []
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at!r}\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=args.warmup + args.seconds + 60)
        rows.append(json.loads(out.strip().splitlines()[-1]))
    if args.verbose:
        for r in rows:
            sys.stderr.write(json.dumps(r) + "\n")
    ev = sum(r["events_per_s"] for r in rows)
    users = g * args.users_per_gateway
    d = Deployment(users, g, replicas - g, churn_per_min=ev / 2.0 / users * 60.0,
                   shards=args.shards)
    # names are 3 characters; keys and connection ids as in the processes above
    e = estimate(d, Costs(wire=wire_sizes(name_len=3, key="user-0000123",
                                          conn="c-0000007b", meta=META,
                                          counter=1000)))
    result: dict[str, Any] = {"replicas": replicas, "shards": args.shards, "gateways": g,
                              "workers": replicas - g,
                              "users": users, "events_per_s": round(ev, 1), "roles": {}}
    for role, pred in (("gateway", e.gateway), ("worker", e.worker)):
        mine = [r for r in rows if r["role"] == role]
        row: dict[str, Any] = {}
        for k in ("frames_in", "bytes_in", "frames_out", "bytes_out"):
            meas = sum(r[k] for r in mine) / len(mine)
            want = getattr(pred, k)
            row[k] = {"measured": round(meas, 1), "predicted": round(want, 1),
                      "error_pct": round(100.0 * (meas - want) / want, 1) if want else None}
        result["roles"][role] = row
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/capacity_check.py")
    ap.add_argument("--replicas", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--events", type=float, default=20.0, help="presence events/s per gateway")
    ap.add_argument("--users-per-gateway", type=int, default=500)
    ap.add_argument("--shards", type=int, default=1,
                    help="S > 1: the sharded design, worker i serving shard i mod S")
    ap.add_argument("--url", default=URL)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="every replica's counters on stderr")
    ap.add_argument("--replica", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.replica:
        args.name = args.replica
        return replica_main(args)
    results = [run(n, args) for n in args.replicas]
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
        return 0
    for res in results:
        print(f"{res['replicas']} replicas ({res['gateways']} gateways, {res['workers']} "
              f"workers), S = {res['shards']}, {res['users']} users, "
              f"{res['events_per_s']} events/s")
        for role, row in res["roles"].items():
            cells = "  ".join(f"{k} {v['measured']:.0f} vs {v['predicted']:.0f} "
                              f"({v['error_pct']:+.1f} %)" for k, v in row.items()
                              if v["predicted"])
            print(f"  {role:<8} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
