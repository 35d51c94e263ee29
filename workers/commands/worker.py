"""``delivery worker``: ``celery -A workers.app worker -E`` with our defaults.

    delivery worker                      # threads pool, concurrency 8, loglevel INFO, events on
    delivery worker -c 16 -n w2@%h       # any other option goes to ``celery worker`` as is
    delivery worker --shards 0,2         # sharded: serve shards 0 and 2 (DELIVERY_WORKER_SHARDS)
    delivery worker --dry-run            # print the command instead of running it

The plain ``celery -A workers.app worker`` keeps working: these are only defaults (the pool and
concurrency defaults also live in the app's configuration).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def build_command(argv: list[str]) -> tuple[list[str], bool]:
    parser = argparse.ArgumentParser(
        prog="delivery worker", add_help=False,
        description="Run a Celery worker of workers.app (extra options go to celery worker).")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("-P", "--pool", default="threads",
                        help="Celery pool (threads: one presence replica serves every task)")
    parser.add_argument("-c", "--concurrency", type=int, default=None,
                        help="task threads (default 8, from the app's configuration)")
    parser.add_argument("-l", "--loglevel", default=os.environ.get("DELIVERY_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default DELIVERY_LOG_LEVEL or INFO)")
    parser.add_argument("--shards", default=None,
                        help="the presence shards this worker serves, e.g. 0,2 or 0-3 "
                             "(sets DELIVERY_WORKER_SHARDS; default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nAny other option is passed to `celery worker` (celery -A workers.app worker "
              "--help lists them).")
        raise SystemExit(0)
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-E",
           "--pool", args.pool, "--loglevel", args.loglevel]
    if args.concurrency is not None:
        cmd += ["--concurrency", str(args.concurrency)]
    if args.shards is not None:
        # through env(1): visible in --dry-run, and exec keeps Celery the signals' target
        cmd = ["/usr/bin/env", f"DELIVERY_WORKER_SHARDS={args.shards}", *cmd]
    return cmd + rest, args.dry_run


def main(argv: list[str]) -> int:
    cmd, dry_run = build_command(argv)
    if dry_run:
        print(shlex.join(cmd))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process: signals (warm shutdown on SIGTERM) go straight to Celery.
    os.execv(cmd[0], cmd)
