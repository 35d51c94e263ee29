"""Thin executors, one per fault kind: do the harm, hold it, repair it.

Each returns "" once the fault is over, or the reason it could not run on this machine.
Blocking work (process starts, SQL, rabbitmqctl) runs in a thread so clients keep going.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.soak import schedule
from bench.soak.cluster import GATEWAYS, WORKERS, SoakCluster, faketime_lib
from bench.soak.inflight import busy_client_ports, owner_of_port
from bench.soak.proxy import FaultyProxy
from bench.soak.schedule import Step
from workers.devkit.services import (
    PrivatePostgres,
    PrivateRedis,
    RabbitVhost,
    allow_connections,
    refuse_connections,
)


@dataclass
class Targets:
    cluster: SoakCluster
    proxy: FaultyProxy
    redis: PrivateRedis
    pg_admin_url: str
    database_url: str
    private_pg: PrivatePostgres | None
    pg_skip_reason: str
    rabbit: RabbitVhost | None
    notes: list[str] = field(default_factory=list)


Executor = Callable[[Targets, Step], Awaitable[str]]


def _pick(names: tuple[str, ...], step: Step) -> str:
    return names[step.index % len(names)]


async def db_outage(t: Targets, step: Step) -> str:
    await asyncio.to_thread(refuse_connections, t.database_url, t.pg_admin_url)
    try:
        await asyncio.sleep(step.hold_s)
    finally:
        await asyncio.to_thread(allow_connections, t.database_url, t.pg_admin_url)
    return ""


async def pg_restart(t: Targets, step: Step) -> str:
    if t.private_pg is None:
        return t.pg_skip_reason or "no private PostgreSQL instance"
    await asyncio.to_thread(t.private_pg.restart)
    return ""


async def kill_worker(t: Targets, step: Step) -> str:
    name = _pick(WORKERS, step)
    t.cluster.kill_worker(name)
    await asyncio.sleep(step.hold_s)
    await asyncio.to_thread(t.cluster.start_worker, name)
    return ""


async def kill_gateway(t: Targets, step: Step) -> str:
    node = _pick(GATEWAYS, step)
    t.cluster.kill_gateway(node)
    await asyncio.sleep(step.hold_s)
    await asyncio.to_thread(t.cluster.start_gateway, node)
    return ""


async def kill_fcm(t: Targets, step: Step) -> str:
    t.cluster.kill_stub()
    await asyncio.sleep(step.hold_s)
    await asyncio.to_thread(t.cluster.start_stub)
    return ""


def _worker_mid_transaction(t: Targets) -> tuple[str, bool] | None:
    """A worker with a database transaction open (advisory lock: it is sweeping), if any."""
    pids = {p.popen.pid: n for n, p in t.cluster.local.workers.items()}
    for port, advisory in busy_client_ports(t.pg_admin_url, t.database_url):
        pid = owner_of_port(port, pids)
        if pid is not None:
            return pids[pid], advisory
    return None


async def pause_worker(t: Targets, step: Step) -> str:
    """Prefer to freeze a worker in the middle of a transaction (its sweep, if it holds the
    advisory lock); after 3 s of looking, any worker."""
    name, how = _pick(WORKERS, step), "at a random moment"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while loop.time() < deadline:
        found = await asyncio.to_thread(_worker_mid_transaction, t)
        if found is not None:
            name = found[0]
            how = "holding an advisory lock" if found[1] else "inside a transaction"
            break
        await asyncio.sleep(0.02)
    t.cluster.signal_worker(name, signal.SIGSTOP)
    t.notes.append(f"pause_worker #{step.index}: {name} paused {how}")
    try:
        await asyncio.sleep(step.hold_s)
    finally:
        t.cluster.signal_worker(name, signal.SIGCONT)
    return ""


async def redis_restart(t: Targets, step: Step) -> str:
    await asyncio.to_thread(t.redis.crash)
    return ""


async def broker_restart(t: Targets, step: Step) -> str:
    if t.rabbit is None:
        return "the broker is not RabbitMQ"
    await asyncio.to_thread(t.rabbit.restart)
    return ""


async def redis_cut(t: Targets, step: Step) -> str:
    t.proxy.set_cut(True)
    try:
        await asyncio.sleep(step.hold_s)
    finally:
        t.proxy.set_cut(False)
    return ""


async def presence_delay(t: Targets, step: Step) -> str:
    t.proxy.delay_s = schedule.DELAY_S
    try:
        await asyncio.sleep(step.hold_s)
    finally:
        t.proxy.delay_s = 0.0
    return ""


async def clock_skew(t: Targets, step: Step) -> str:
    lib = faketime_lib()
    if lib is None:
        return "libfaketime is not installed (apt-get install faketime)"
    name = _pick(WORKERS, step)
    skewed = {"LD_PRELOAD": str(lib), "FAKETIME": schedule.SKEW,
              # Only the wall clock is wrong, as on a machine whose NTP drifted.
              "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    await asyncio.to_thread(t.cluster.stop_worker, name)
    await asyncio.to_thread(t.cluster.start_worker, name, skewed)
    await asyncio.sleep(step.hold_s)
    await asyncio.to_thread(t.cluster.stop_worker, name)
    await asyncio.to_thread(t.cluster.start_worker, name)
    return ""


EXECUTORS: dict[str, Executor] = {
    "db_outage": db_outage,
    "pg_restart": pg_restart,
    "kill_worker": kill_worker,
    "kill_gateway": kill_gateway,
    "kill_fcm": kill_fcm,
    "pause_worker": pause_worker,
    "redis_restart": redis_restart,
    "broker_restart": broker_restart,
    "redis_cut": redis_cut,
    "presence_delay": presence_delay,
    "clock_skew": clock_skew,
}
assert set(EXECUTORS) == set(schedule.HOLD_S)
