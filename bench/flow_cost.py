"""What producer flow control costs a send: ``send_message(durable=False)`` on a Redis broker
with DELIVERY_MAX_BACKLOG off and on (a bound never reached), interleaved rounds, in one
process. Prints the CPU and wall time per send, the depth reads per send, and the two parts
apart (the cached decision; one depth read), whose sum per send is the estimate that does not
drown in the machine's noise.

    .venv/bin/python -m bench.flow_cost [--sends 3000] [--rounds 3] [--threads 1] [--json]

Nothing consumes: each round's tasks are deleted with its key prefix afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from typing import Any

from delivery import flow_gate
from delivery.api import send_message
from delivery.celery_app import make_app
from delivery.settings import Settings, reset_settings
from workers.devkit.services import REDIS_URL, clear_redis_prefix


def one_round(bound: int, sends: int, threads: int) -> dict[str, float]:
    prefix = f"flowcost-{uuid.uuid4().hex[:8]}"
    app = make_app(Settings(broker_url=REDIS_URL, redis_url=REDIS_URL, key_prefix=prefix))
    if bound:
        os.environ["DELIVERY_MAX_BACKLOG"] = str(bound)
    else:
        os.environ.pop("DELIVERY_MAX_BACKLOG", None)
    reset_settings()
    flow_gate.reset()
    try:
        for i in range(50):  # warm: connections, the gate's reader
            send_message("a", "b", {"i": i}, client_msg_id=f"w{i}", app=app, durable=False)
        per = sends // threads

        def run(k: int) -> None:
            for i in range(per):
                send_message("a", "b", {"i": i}, client_msg_id=f"{k}-{i}", app=app,
                             durable=False)

        workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        cpu0, t0 = time.process_time(), time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        gate = flow_gate.gate_for(app, "celery") if bound else None
        reads = gate.reads if gate is not None else 0
        n = per * threads
        return {"cpu_us_per_send": cpu / n * 1e6, "wall_us_per_send": wall / n * 1e6,
                "reads_per_send": reads / (n + 50)}
    finally:
        app.close()
        clear_redis_prefix(REDIS_URL, f"{prefix}:")
        os.environ.pop("DELIVERY_MAX_BACKLOG", None)
        reset_settings()
        flow_gate.reset()


def parts(rounds: int) -> dict[str, float]:
    """The two costs apart: the cached decision (a bound never reached, a reading that never
    ages) and one depth read (``LLEN``), CPU µs each, median of ``rounds``."""
    from delivery.flow import FlowConfig
    from delivery.task_names import SEND_TASK

    prefix = f"flowcost-{uuid.uuid4().hex[:8]}"
    app = make_app(Settings(broker_url=REDIS_URL, redis_url=REDIS_URL, key_prefix=prefix))
    cached = FlowConfig(max_backlog=10**9, refresh_s=3600.0)
    kw = {"sender": "a", "recipient": "b", "body": 1}
    decision, read = [], []
    try:
        reader = flow_gate.depth_reader(app, "celery")
        assert reader is not None
        for _ in range(rounds):
            flow_gate.reset()
            flow_gate.check(app, SEND_TASK, kw, cached)
            c0 = time.process_time()
            for _ in range(20000):
                flow_gate.check(app, SEND_TASK, kw, cached)
            decision.append((time.process_time() - c0) / 20000 * 1e6)
            c0 = time.process_time()
            for _ in range(2000):
                reader()
            read.append((time.process_time() - c0) / 2000 * 1e6)
    finally:
        flow_gate.reset()
        app.close()
    return {"decision_cpu_us": round(statistics.median(decision), 1),
            "depth_read_cpu_us": round(statistics.median(read), 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    bound = 10**9  # on, never reached
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            runs[mode].append(one_round(bound if mode == "on" else 0, args.sends, args.threads))
    out: dict[str, Any] = {"sends": args.sends, "rounds": args.rounds, "threads": args.threads}
    for mode, rs in runs.items():
        out[mode] = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        out[mode]["cpu_us_per_send_each_round"] = [round(r["cpu_us_per_send"], 1) for r in rs]
    out["cpu_ratio_on_vs_off"] = round(out["on"]["cpu_us_per_send"]
                                       / out["off"]["cpu_us_per_send"], 3)
    out["cpu_us_added_per_send"] = round(out["on"]["cpu_us_per_send"]
                                         - out["off"]["cpu_us_per_send"], 1)
    out["parts"] = parts(args.rounds)
    out["estimated_cpu_us_added_per_send"] = round(
        out["parts"]["decision_cpu_us"]
        + out["on"]["reads_per_send"] * out["parts"]["depth_read_cpu_us"], 1)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
