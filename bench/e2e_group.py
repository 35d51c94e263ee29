"""The group case of ``delivery bench e2e --group``: G-member group messages to online members
against the same recipient deliveries sent as direct messages, on the same cluster in the
same run (a direct phase, then a group phase). Each phase sends everything as fast as the
producer can (4 threads for the direct messages) to a running cluster — not pre-filled with the
workers paused: stored-first messages waiting longer than the ack timeout would be routed by the
recovery sweep as well as by their tasks, which would charge the direct phase twice.

Per phase: recipient deliveries acked per second (first send -> last client ack), CPU of every
process (workers, gateways, clients, Redis, PostgreSQL backends and this producer) from before
the first send to the last ack, per recipient delivery, and database writes (tuples inserted +
updated) and commits per recipient delivery. The cluster's idle CPU (heartbeats, sweeps,
metrics), measured for a few seconds before the phases, is subtracted for each phase's
duration (``cpu_ms_per_delivery_net``; the phases last very different times). ``cpu_ratio`` =
group / direct net CPU for the same number of recipient deliveries (the target: <= 0.20).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from celery import Celery

from bench.e2e_measure import ONLINE, cpu_by_pid, cpu_delta_ms, pg_counters, progress


class _Sized(Protocol):
    @property
    def clients(self) -> int: ...


class Bench(Protocol):
    """What the group case uses of bench.e2e's Bench (a protocol: bench.e2e imports this module)."""

    pg_admin: str
    tag: str
    engine: Any
    sent: dict[str, tuple[str, float]]

    @property
    def p(self) -> _Sized: ...
    @property
    def app(self) -> Celery | None: ...
    @property
    def dbname(self) -> str: ...
    def role_pids(self) -> dict[str, list[int]]: ...
    def wait_received(self, ids: list[str], timeout: float) -> bool: ...
    def recv_wall(self, mid: str) -> float: ...

GROUP_SENDER = "bench-gsender"
IDLE_S = 4.0
STATS_FLUSH_S = 11.0  # a PostgreSQL 15 backend reports its statistics within 10 s of idling


def _members(bench: Bench, size: int, k: int) -> list[str]:

    n = bench.p.clients
    return [f"{ONLINE}{(k * size + j) % n}" for j in range(size)]


def idle_cpu_ms_per_s(bench: Bench) -> float:
    """The whole cluster's CPU per second with no traffic."""

    roles = bench.role_pids()
    before, t0 = cpu_by_pid(roles), time.monotonic()
    time.sleep(IDLE_S)
    after, t1 = cpu_by_pid(roles), time.monotonic()
    used = sum(v - before[k] for k, v in after.items() if k in before)
    return used * 1000.0 / (t1 - t0)


def _phase(bench: Bench, name: str, prefill: Any, expected: Any, deliveries: int,
           idle_ms_per_s: float) -> dict[str, Any]:

    roles = bench.role_pids()
    start = time.monotonic()
    cpu0, pg0 = cpu_by_pid(roles), pg_counters(bench.pg_admin, bench.dbname)
    t0 = time.time()
    sent = prefill()
    ids = expected(sent)
    if not bench.wait_received(ids, 180):
        raise RuntimeError(f"{name}: not every recipient delivery acked within 180 s")
    t_end = max(bench.recv_wall(i) for i in ids)
    time.sleep(0.5)  # the last ack batches
    cpu = cpu_delta_ms(cpu0, cpu_by_pid(roles), deliveries)
    window = time.monotonic() - start
    net = cpu["total"] - idle_ms_per_s * window / deliveries
    time.sleep(STATS_FLUSH_S)
    pg1 = pg_counters(bench.pg_admin, bench.dbname)
    db = {k: pg1[k] - pg0[k] for k in pg0}
    rate = deliveries / max(t_end - t0, 1e-9)
    progress(f"{name}: {deliveries} recipient deliveries, {rate:.0f}/s, "
             f"CPU {cpu['total']:.2f} ms each ({net:.2f} net of idle over {window:.1f} s)")
    return {"recipient_deliveries": deliveries, "deliveries_per_s": round(rate, 1),
            "cpu_ms_per_delivery": cpu, "cpu_ms_per_delivery_net": round(net, 3),
            "window_s": round(window, 2),
            "db_writes_per_delivery": round((db["tup_inserted"] + db["tup_updated"])
                                            / deliveries, 2),
            "db_commits_per_delivery": round(db["xact_commit"] / deliveries, 3),
            "db_counters": db}


def run_group(bench: Bench, *, size: int, messages: int) -> dict[str, Any]:
    """Direct then group, ``messages`` group messages of ``size`` recipients each."""
    from delivery.api import create_conversation, send_message, send_to_conversation
    from delivery.conversations.ids import delivery_id
    from delivery.store import Store

    assert bench.app is not None
    app = bench.app
    store = Store(bench.engine)
    groups = max(1, bench.p.clients // size)
    convs = [f"bench-g{k}-{bench.tag}" for k in range(groups)]
    for k, conv in enumerate(convs):
        create_conversation(conv, [GROUP_SENDER, *_members(bench, size, k)], store=store)
    deliveries = messages * size
    progress(f"group case: {messages} messages to {groups} groups of {size} online members "
             f"against {deliveries} direct messages")

    def direct_one(i: int) -> list[str]:
        out = []
        for u in _members(bench, size, i % groups):
            t = time.time()
            mid = send_message(GROUP_SENDER, u, {"t": t}, client_msg_id=f"gd-{i}-{u}",
                               app=app, store=store)
            bench.sent[mid] = ("group-direct", t)
            out.append(mid)
        return out

    def direct_prefill() -> list[str]:  # 4 threads, as the default bench's producer
        with ThreadPoolExecutor(4) as pool:
            return [m for ids in pool.map(direct_one, range(messages)) for m in ids]

    def group_prefill() -> list[tuple[str, int, float]]:
        out = []
        for i in range(messages):
            t = time.time()
            mid = send_to_conversation(GROUP_SENDER, convs[i % groups], {"t": t},
                                       client_msg_id=f"gg-{i}", app=app, store=store)
            out.append((mid, i % groups, t))
        return out

    def group_ids(sent: list[tuple[str, int, float]]) -> list[str]:
        ids = []
        for mid, k, t in sent:
            for u in _members(bench, size, k):
                did = str(delivery_id(uuid.UUID(mid), u))
                bench.sent[did] = ("group", t)
                ids.append(did)
        return ids

    idle = idle_cpu_ms_per_s(bench)
    progress(f"idle cluster: {idle:.0f} ms CPU per second")
    direct = _phase(bench, "direct", direct_prefill, lambda s: s, deliveries, idle)
    group = _phase(bench, "group", group_prefill, group_ids, deliveries, idle)
    ratio = group["cpu_ms_per_delivery_net"] / direct["cpu_ms_per_delivery_net"]
    gross = group["cpu_ms_per_delivery"]["total"] / direct["cpu_ms_per_delivery"]["total"]
    progress(f"group / direct CPU per recipient delivery: {ratio:.3f} net of idle, "
             f"{gross:.3f} gross (target <= 0.20)")
    return {"group_size": size, "group_messages": messages, "groups": groups,
            "idle_cpu_ms_per_s": round(idle, 1), "cpu_ratio_gross": round(gross, 3),
            "direct": direct, "group": group, "cpu_ratio": round(ratio, 3),
            "target_cpu_ratio": 0.2, "meets_target": ratio <= 0.2}


def summary(r: dict[str, Any]) -> str:
    d, g = r["direct"], r["group"]
    return "\n".join([
        f"{r['group_messages']} group messages x {r['group_size']} members "
        f"vs {d['recipient_deliveries']} direct messages",
        f"direct  {d['deliveries_per_s']:8.0f} deliveries/s  "
        f"CPU {d['cpu_ms_per_delivery_net']:.2f} ms net ({d['cpu_ms_per_delivery']['total']:.2f})  "
        f"db writes {d['db_writes_per_delivery']:.2f}  commits {d['db_commits_per_delivery']:.3f}",
        f"group   {g['deliveries_per_s']:8.0f} deliveries/s  "
        f"CPU {g['cpu_ms_per_delivery_net']:.2f} ms net ({g['cpu_ms_per_delivery']['total']:.2f})  "
        f"db writes {g['db_writes_per_delivery']:.2f}  commits {g['db_commits_per_delivery']:.3f}",
        f"CPU ratio group/direct {r['cpu_ratio']:.3f} net of idle, {r['cpu_ratio_gross']:.3f} "
        f"gross (target <= {r['target_cpu_ratio']})",
    ])
