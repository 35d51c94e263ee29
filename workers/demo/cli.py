"""``delivery demo [--messages N] [--json]``: start the stack, run the phases, print the report.

Embedded (default): one process — SQLite, the in-process broker and presence network, two
gateways, a worker, the FCM stub. With DELIVERY_REDIS_URL and DELIVERY_DATABASE_URL set: the
same demo against Redis and PostgreSQL, with gateways, workers and the FCM stub as separate
processes (the roles an operator runs).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import tempfile

from delivery.settings import Settings, get_settings
from workers import demo
from workers.demo.phases import drive
from workers.demo.population import Plan
from workers.demo.report import report
from workers.demo.result import Result
from workers.demo.stack import cluster_stack
from workers.embedded import EmbeddedStack


def main(argv: list[str]) -> int:
    plan, as_json = parse(argv)
    settings = get_settings()
    if settings.redis_url and settings.database_url and not settings.embedded:
        result, mode = run_on_processes(settings, plan)
    else:
        result, mode = asyncio.run(run_embedded(settings, plan))
    print(json.dumps(result.to_json(), indent=2) if as_json else report(result, mode))
    return 0 if result.passed else 1


def parse(argv: list[str]) -> tuple[Plan, bool]:
    """The plan, and whether to print the result as JSON."""
    parser = argparse.ArgumentParser(prog="delivery demo",
                                     description=(demo.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages to send")
    parser.add_argument("--users", type=int, default=40, help="simulated users")
    parser.add_argument("--offline", type=int, default=8, help="users never online in traffic")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="messages per second offered (the embedded stack sustains ~130)")
    parser.add_argument("--race-every", type=int, default=50,
                        help="force the seed's race every N messages, at most once a second "
                        "(0: never)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the schedule")
    parser.add_argument("--group-sizes", default="5,8,25",
                        help="members of each group conversation, comma-separated ('': none)")
    parser.add_argument("--group-messages", type=int, default=None,
                        help="messages sent to the groups (default: --messages / 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.users < 1 or not 0 <= args.offline < args.users or args.messages < 1:
        parser.error("need --messages >= 1, --users >= 1 and 0 <= --offline < --users")
    try:
        sizes = tuple(int(x) for x in args.group_sizes.split(",") if x.strip())
    except ValueError:
        parser.error("--group-sizes: comma-separated integers")
    group_messages = args.messages // 10 if args.group_messages is None else args.group_messages
    if group_messages < 0 or any(n < 2 for n in sizes):
        parser.error("need --group-messages >= 0 and groups of at least 2 members")
    plan = Plan(messages=args.messages, users=args.users, offline=args.offline,
                rate=args.rate, race_every=args.race_every, seed=args.seed,
                group_sizes=sizes, group_messages=group_messages if sizes else 0)
    return plan, bool(args.json)


def run_on_processes(settings: Settings, plan: Plan) -> tuple[Result, str]:
    with cluster_stack(settings) as (stack, mode):
        result = asyncio.run(drive(stack, settings, plan, progress=True))
    return result, mode


async def run_embedded(settings: Settings, plan: Plan) -> tuple[Result, str]:
    logging.basicConfig(level=logging.WARNING)
    if not settings.database_url:  # a fresh database each run, so the report is this run's
        settings = dataclasses.replace(settings, data_dir=tempfile.mkdtemp(prefix="demo-"))
    print("starting the embedded pipeline (SQLite, in-process broker and presence, "
          "2 gateways, 1 worker, FCM stub)...", file=sys.stderr)
    async with EmbeddedStack(settings) as stack:
        print(f"gateways: {', '.join(stack.url(g) for g in stack.gateway_names)}",
              file=sys.stderr)
        result = await drive(stack, stack.settings, plan, progress=True)
    return result, "embedded: SQLite, in-process broker and presence, 2 gateways, 1 worker"
