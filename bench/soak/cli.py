"""``delivery soak [--broker redis|rabbitmq] [--messages N] [--rate R] [--clients C]
[--faults LIST] [--rounds K] [--json] [--out FILE]``: exit 1 if any message was lost, shown
twice or left in a non-final state."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from bench.soak import schedule
from bench.soak.report import text
from bench.soak.run import SoakConfig, soak


def parse(argv: list[str]) -> tuple[SoakConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="delivery soak", description=(
        "fault-injection soak over real processes: private Redis (and PostgreSQL where "
        "possible), 2 gateways, 2 workers, the FCM stub, reconnecting clients"))
    p.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis",
                   help="the Celery broker: a private Redis, or a private RabbitMQ vhost")
    p.add_argument("--messages", type=int, default=3000,
                   help="at least this many sends (traffic lasts until the faults are done)")
    p.add_argument("--rate", type=float, default=50.0, help="sends per second")
    p.add_argument("--clients", type=int, default=16, help="users, one WebSocket client each")
    p.add_argument("--faults", default="fast", help=(
        f"comma list, 'fast' or 'all'; kinds: {', '.join(schedule.ALL)}"))
    p.add_argument("--rounds", type=int, default=1, help="each fault this many times")
    p.add_argument("--quiet", type=float, default=8.0, help="seconds of calm after each fault")
    p.add_argument("--settle", type=float, default=60.0,
                   help="seconds to wait at the end for every message to be shown")
    p.add_argument("--bound", type=float, default=30.0,
                   help="a message shown later than this after its fault ended counts as late")
    p.add_argument("--churn", type=float, default=5.0,
                   help="seconds between client restarts (one client at a time)")
    p.add_argument("--seed", type=int, default=None, help="shuffle each round's faults")
    p.add_argument("--pg-url", default=os.environ.get(
        "DELIVERY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="admin URL of a PostgreSQL server for the soak's own database when no private "
             "instance is used")
    p.add_argument("--no-private-pg", action="store_true",
                   help="never initdb a private PostgreSQL (pg_restart is then skipped)")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.add_argument("--out", type=Path, help="also write the JSON report to this file")
    a = p.parse_args(argv)
    if a.clients < 1 or a.rate <= 0 or a.messages < 1 or a.rounds < 1:
        p.error("--clients, --rate, --messages and --rounds must be positive")
    try:
        faults = tuple(schedule.parse_faults(a.faults, broker=a.broker))
    except ValueError as exc:
        p.error(str(exc))
    cfg = SoakConfig(
        broker=a.broker, messages=a.messages, rate=a.rate, clients=a.clients, faults=faults,
        rounds=a.rounds, quiet_s=a.quiet, settle_s=a.settle, bound_s=a.bound, churn_s=a.churn,
        seed=a.seed, pg_url=a.pg_url, private_pg=not a.no_private_pg,
    )
    return cfg, a


def main(argv: list[str]) -> int:
    cfg, args = parse(argv)
    result = asyncio.run(soak(cfg))
    result["command"] = "delivery soak " + " ".join(argv)
    blob = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(blob + "\n")
    print(blob if args.json else text(result))
    if args.json:
        print(text(result), file=sys.stderr)
    return 0 if result["ok"] else 1
