"""``delivery demo``: the pipeline on the embedded default, with a report.

Foundation stage: stores messages through the real send task on SQLite (in-process) and reports
their states. Later stages add the gateway, routing, clients and the seed's race.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from delivery import migrate
from delivery.runtime import Runtime, set_runtime
from delivery.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery demo")
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    data_dir = tempfile.mkdtemp(prefix="delivery-demo-")
    settings = Settings(data_dir=data_dir)
    migrate.upgrade(settings.effective_database_url)
    rt = Runtime.from_settings(settings)
    set_runtime(rt)
    from delivery.tasks import send

    started = time.monotonic()
    ids = set()
    for i in range(args.messages):
        ids.add(send("alice", f"user-{i % 10}", {"text": f"hello {i}"}, f"demo-{i}"))
        if i % 50 == 0:
            print(f"\rstored {i + 1}/{args.messages}", end="", file=sys.stderr)
    elapsed = time.monotonic() - started
    counts = rt.store.count_by_state()
    print(f"\rstored {len(ids)} messages in {elapsed:.2f}s; by state: {counts}")
    lost = args.messages - sum(counts.values())
    print(f"lost: {lost}")
    return 0 if lost == 0 else 1
