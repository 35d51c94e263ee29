"""``delivery bench presence|gateway|e2e [ARGS]``: the benchmarks (each prints its figures)."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "presence": "delivery.bench.presence",
    "gateway": "delivery.bench.gateway",
    "e2e": "workers.bench_e2e",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: delivery bench {{{'|'.join(BENCHES)}}} [--json] [--quick] ...",
              file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[argv[0]])
    result: int = module.main(argv[1:])
    return result
