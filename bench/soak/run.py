"""One soak run: start private services and the cluster, run traffic, walk the nemesis plan,
let everything settle, then hand what was observed to the checker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from bench.soak import schedule
from bench.soak.checker import Verdict, Window, check
from bench.soak.cluster import SoakCluster, soak_env
from bench.soak.faults import EXECUTORS, Targets
from bench.soak.proxy import FaultyProxy
from bench.soak.report import Progress, summary
from bench.soak.traffic import Traffic
from workers.devkit.procs import free_port
from workers.devkit.services import (
    PrivatePostgres,
    PrivateRedis,
    RabbitVhost,
    create_database,
    drop_database,
    rabbitmq_answers,
)


@dataclass(frozen=True)
class SoakConfig:
    broker: str = "redis"
    messages: int = 3000
    rate: float = 50.0
    clients: int = 16
    faults: tuple[str, ...] = schedule.FAST
    rounds: int = 1
    quiet_s: float = 8.0
    warmup_s: float = 5.0
    settle_s: float = 60.0
    bound_s: float = 30.0
    churn_s: float = 5.0
    seed: int | None = None
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    private_pg: bool = True
    amqp_host: str = "127.0.0.1"
    amqp_port: int = 5672


def _use_producer_env(env: dict[str, str]) -> None:
    """Configure this process as a chat application would: DELIVERY_* variables, and the
    project's Celery app as the default one, so ``send_message`` runs with its defaults.

    ``set_default``, not only ``set_current``: Celery's current app is per thread, and a send
    from another thread would otherwise go to Celery's built-in app (amqp://localhost)."""
    from delivery.celery_app import make_app
    from delivery.runtime import set_runtime
    from delivery.settings import reset_settings

    os.environ.update({k: v for k, v in env.items() if k.startswith("DELIVERY_")})
    reset_settings()
    set_runtime(None)
    app = make_app()
    app.set_default()
    app.set_current()


def _register_devices(database_url: str, users: list[str]) -> None:
    """Half the users have a push device, so the FCM path is exercised too."""
    from delivery.clock import utcnow
    from delivery.db import make_engine
    from delivery.store import Store

    engine = make_engine(database_url)
    store = Store(engine)
    for u in users[::2]:
        store.register_device(u, f"tok-{u}", "android", utcnow())
    engine.dispose()


def _final_states(database_url: str, ids: list[str], shown: set[str],
                  wait_s: float) -> tuple[dict[str, str | None], dict[str, int]]:
    """The store's states, after giving acks of shown messages time to be recorded."""
    from delivery.db import make_engine
    from delivery.store import Store

    engine = make_engine(database_url)
    store = Store(engine)
    deadline = time.monotonic() + wait_s
    while True:
        states: dict[str, str | None] = {m: None for m in ids}
        for start in range(0, len(ids), 1000):
            for rec in store.get_many(uuid.UUID(m) for m in ids[start:start + 1000]):
                states[str(rec.id)] = rec.state
        waiting = [m for m in shown if states.get(m) != "delivered"]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    dups = store.duplicate_outcomes(uuid.UUID(m) for m in ids)
    engine.dispose()
    return states, dups


async def soak(cfg: SoakConfig, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or Progress()
    base = time.monotonic()

    def clock() -> float:  # seconds since the soak began, as the report shows them
        return time.monotonic() - base

    t0 = 0.0
    run_id = uuid.uuid4().hex[:6]
    steps = schedule.plan(cfg.faults, rounds=cfg.rounds, quiet_s=cfg.quiet_s, seed=cfg.seed)
    notes: list[str] = []
    redis = PrivateRedis(appendonly=False)  # a restart empties it
    private_pg: PrivatePostgres | None = None
    pg_skip = ""
    rabbit: RabbitVhost | None = None
    proxy = FaultyProxy("127.0.0.1", redis.port)
    cluster: SoakCluster | None = None
    traffic: Traffic | None = None
    database_url = ""
    admin_url = cfg.pg_url
    try:
        await asyncio.to_thread(redis.start)
        if cfg.private_pg and "pg_restart" in cfg.faults:
            try:
                private_pg = PrivatePostgres()
                await asyncio.to_thread(private_pg.start)
                admin_url = private_pg.admin_url
            except Exception as exc:  # the machine may not allow it
                pg_skip = f"no private PostgreSQL here ({type(exc).__name__}: {exc})"[:300]
                notes.append(pg_skip)
                if private_pg is not None:
                    private_pg.stop()
                private_pg = None
        elif "pg_restart" in cfg.faults:
            pg_skip = "private PostgreSQL disabled (--no-private-pg)"
        database_url = await asyncio.to_thread(create_database, "delivery_soak", admin_url)
        from delivery import migrate

        await asyncio.to_thread(migrate.upgrade, database_url)
        if cfg.broker == "rabbitmq":
            amqp = f"amqp://guest:guest@{cfg.amqp_host}:{cfg.amqp_port}"
            if not rabbitmq_answers(amqp):
                raise RuntimeError(f"RabbitMQ does not answer on {cfg.amqp_host}:{cfg.amqp_port}")
            rabbit = RabbitVhost(amqp, "soak")
            await asyncio.to_thread(rabbit.start)
        await proxy.start()
        secret = uuid.uuid4().hex
        fcm_port = free_port()
        env = soak_env(database_url=database_url,
                       broker_url=rabbit.url if rabbit else redis.url,
                       redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                       key_prefix=f"soak-{run_id}", secret=secret,
                       fcm_url=f"http://127.0.0.1:{fcm_port}")
        cluster = SoakCluster(env, fcm_port)
        progress.show(clock() - t0, "soak: starting 2 gateways, 2 workers and the FCM stub...")
        await asyncio.to_thread(cluster.start)
        # The producer talks to Redis directly: only the processes' presence link is faulty.
        _use_producer_env({**env, "DELIVERY_REDIS_URL": redis.url})
        traffic = Traffic(run_id, [cluster.gateway_url(n) for n in sorted(cluster.gateway_ports)],
                          secret, cfg.clients, cfg.rate, clock=clock, churn_s=cfg.churn_s)
        await asyncio.to_thread(_register_devices, database_url, traffic.user_ids)
        await traffic.connect_all()
        targets = Targets(cluster, proxy, redis, admin_url, database_url, private_pg, pg_skip,
                          rabbit)
        windows = await _drive(cfg, steps, traffic, targets, progress, t0)
        states, dups = await asyncio.to_thread(
            _final_states, database_url, list(traffic.given), {s.msg_id for s in traffic.shown},
            15.0)
        verdict: Verdict = check(traffic.given, traffic.shown, states,
                                 traffic.connected_users(), windows, bound_s=cfg.bound_s)
        return summary(verdict, config=_config_json(cfg), refused=traffic.refused,
                       errors=traffic.errors, duration_s=clock() - t0,
                       extra={"store_duplicate_outcomes": dups,
                              "client_restarts": traffic.restarts,
                              "notes": notes + targets.notes, "logs": cluster.logs()})
    finally:
        progress.done()
        if traffic is not None:
            await traffic.close()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        await proxy.close()
        redis.stop()
        if rabbit is not None:
            with contextlib.suppress(Exception):
                rabbit.stop()
        if database_url:
            with contextlib.suppress(Exception):
                drop_database(database_url, admin_url)
        if private_pg is not None:
            private_pg.stop()


async def _drive(cfg: SoakConfig, steps: list[schedule.Step], traffic: Traffic,
                 targets: Targets, progress: Progress, t0: float) -> list[Window]:
    clock = traffic.clock
    status = "warming up"
    stop = asyncio.Event()

    async def ticker() -> None:
        while True:
            progress.show(clock() - t0, (
                f"soak {clock() - t0:5.0f}s | given {len(traffic.given)} refused "
                f"{traffic.refused} shown {len(traffic.shown)} missing {traffic.missing()} | "
                f"clients {len(traffic.connected_users())}/{cfg.clients} | {status}"))
            await asyncio.sleep(1.0)

    tick = asyncio.create_task(ticker())
    producing = asyncio.create_task(traffic.produce(cfg.messages, stop))
    churning = asyncio.create_task(traffic.churn(stop))
    windows: list[Window] = []
    try:
        await asyncio.sleep(cfg.warmup_s)
        for step in steps:
            status = f"fault {step.index + 1}/{len(steps)} {step.kind}"
            start = clock()
            try:
                skipped = await EXECUTORS[step.kind](targets, step)
            except Exception as exc:  # report it, keep soaking
                skipped = f"executor failed: {type(exc).__name__}: {exc}"[:300]
            windows.append(Window(step.index, step.kind, start, clock(), skipped))
            status += " (skipped)" if skipped else " (quiet)"
            await asyncio.sleep(step.quiet_s)
        status = "sending the rest"
        stop.set()
        await producing
        await churning
        status = "settling"
        deadline = clock() + cfg.settle_s
        while clock() < deadline and traffic.missing():
            await asyncio.sleep(0.5)
        await traffic.wait_all_connected(10.0)
    finally:
        stop.set()
        tick.cancel()
        for task in (producing, churning):
            task.cancel()
    return windows


def _config_json(cfg: SoakConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["faults"] = list(cfg.faults)
    return out
