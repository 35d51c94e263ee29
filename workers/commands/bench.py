"""``delivery bench NAME [ARGS]``: the benchmarks in ``bench/`` (each prints its figures)."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "presence": ("bench.presence", "presence: convergence over Redis, merge, transfer, memory"),
    "gateway": ("bench.gateway", "one gateway process: frames/s against a bare echo server, RSS"),
    "push": ("bench.push", "the FCM sender and push_message against the local stub"),
    "e2e": ("bench.e2e", "the whole pipeline against raw Celery, in one run"),
    "api": ("bench.http_api", "POST /v1/messages against the Python send_message, in one run"),
    "clients": ("bench.clients", "K WebSocket users in one process (e2e's client load)"),
}


def usage() -> str:
    lines = [f"usage: delivery bench {{{'|'.join(BENCHES)}}} [ARGS...]", "", "benchmarks:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in BENCHES.items()]
    lines += ["", "`delivery bench NAME --help` lists a benchmark's options."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if not argv or argv[0] not in BENCHES:
        print(usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[argv[0]][0])
    result: int = module.main(argv[1:])
    return result
