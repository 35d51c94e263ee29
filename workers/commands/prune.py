"""``delivery prune [--keep N] [--batch N]``: prune the attempt rows of settled messages."""

from __future__ import annotations

import argparse

from delivery.runtime import get_runtime
from delivery.store.prune import DEFAULT_KEEP, prune_attempts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="delivery prune", description="Replace the middle attempt rows of messages that "
        "have their outcome by one summary row (first and last N, open, acked and FCM-accepted "
        "rows stay). The recovery sweep does the same once a minute.")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                        help="first and last rows kept per message")
    parser.add_argument("--batch", type=int, default=500, help="messages per round")
    args = parser.parse_args(argv)
    store = get_runtime().store
    total = 0
    while True:
        n = prune_attempts(store, keep=args.keep, batch=args.batch)
        if n == 0:
            break
        total += n
    print(f"pruned {total} attempt rows")
    return 0
