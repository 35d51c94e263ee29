"""The send path in batches, over real processes (2 gateways, 2 workers, a private Redis,
PostgreSQL): a backlog is made by stopping the workers' consumers while messages are sent,
so the workers run ``delivery.send`` in batches when they resume. Then a worker is killed
with -9 mid-batch, or the database goes away while the batches run, or a batch holds a bad
message and a duplicate. Each time every message is shown once on its client, ends
``delivered`` with one outcome, and no attempt was claimed twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from celery import Celery

from delivery.push.stub import FcmStub
from delivery.store import Store
from delivery.task_names import SEND_TASK
from tests.e2e.test_crashes import (
    _held_by_broker,
    broker,
    crash_cluster,
    crash_env,
    pg_store,
    pg_url,
    private_redis,
    stub,
    visibility_timeout,
)
from tests.e2e.traffic import Traffic
from workers.devkit.cluster import LocalCluster
from workers.devkit.services import allow_connections, refuse_connections

__all__ = ["broker", "crash_cluster", "crash_env", "pg_store", "pg_url", "private_redis", "stub",
           "visibility_timeout"]

pytestmark = pytest.mark.slow


def _consumers(app: Celery, on: bool) -> None:
    if on:
        app.control.add_consumer("celery", reply=False)
        return
    replies = app.control.cancel_consumer("celery", reply=True, timeout=3.0, limit=2)
    assert len(replies) >= 2, replies


def _batch_sizes(app: Celery) -> Counter[int]:
    sizes: Counter[int] = Counter()
    for reply in app.control.broadcast("send_batch_stats", reply=True, timeout=1.0, limit=2):
        for stats in reply.values():
            sizes.update({int(k): int(v) for k, v in stats["sizes"].items()})
    return sizes


def _no_attempt_claimed_twice(t: Traffic) -> None:
    for m in t.sent:
        rows = Counter((a.attempt, a.conn) for a in t.store.attempts_of(uuid.UUID(m)))
        assert all(n == 1 for n in rows.values()), f"{m}: an attempt claimed twice: {rows}"


async def _backlog(t: Traffic, app: Celery, n: int) -> None:
    """Connect, then send ``n`` messages while no worker consumes: a backlog to batch."""
    await t.connect()
    await asyncio.to_thread(_consumers, app, False)
    await t.send(n, 5000)


def test_kill_a_worker_mid_batch_loses_and_repeats_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, broker: str,
) -> None:
    """Fault: 300 sends in a backlog (stored first on Redis, enqueue-only on RabbitMQ, which
    gives a dead worker's tasks back at once); both workers resume and batch; cw1 is killed
    with -9 while it holds unacked batch requests, then restarted. The redelivered requests
    (RabbitMQ at once; Redis after the 4 s visibility timeout) claim nothing twice."""
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store, with_devices=False, durable=broker == "redis")

    async def run() -> tuple[int, int]:
        await _backlog(t, app, 300)
        await asyncio.to_thread(_consumers, app, True)
        # Wait until the drain is under way: on Redis, requests sit in kombu's "unacked" hash
        # (read at once); RabbitMQ's API counts them seconds late, so there: messages shown.
        shown_before = len(t.shown_at)
        held = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if broker == "redis":
                held = await asyncio.to_thread(_held_by_broker, cluster.env)
                if held > 0:
                    break
            elif len(t.shown_at) >= shown_before + 20:
                break
            await asyncio.sleep(0.005)
        cluster.workers["cw1"].kill9()
        waiting = sum(1 for m in t.sent if m not in t.shown_at)
        await asyncio.to_thread(cluster.start_worker, "cw1", concurrency=4)
        await t.settle(60)
        await t.close()
        return held, waiting

    held, waiting = asyncio.run(run())
    # RabbitMQ's management API counts unacked messages with a delay of seconds: there, the
    # proof is that the kill came mid-drain (prefetch hands each worker 16 requests at once).
    assert waiting > 0 and (held > 0 or broker == "rabbitmq"), \
        f"the kill came after the drain (held {held}, waiting {waiting}): nothing injected"
    sizes = _batch_sizes(app)
    assert max(sizes, default=0) > 1, f"no batch of more than one send ran: {sizes}"
    t.check(stub)
    _no_attempt_claimed_twice(t)


@pytest.mark.parametrize("broker", ["redis"])
@pytest.mark.parametrize("durable", [True, False], ids=["stored-first", "enqueue-only"])
def test_database_outage_during_batches_loses_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, pg_url: str,
    durable: bool,
) -> None:
    """Fault: 200 sends in a backlog; the database refuses connections (live backends
    terminated) as the workers resume, for 2 s. The batches fail as a whole; each request
    goes through the per-message task, which retries until the database is back."""
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store, with_devices=False, durable=durable)

    async def run() -> None:
        await _backlog(t, app, 200)
        await asyncio.to_thread(refuse_connections, pg_url)
        try:
            await asyncio.to_thread(_consumers, app, True)
            await asyncio.sleep(2.0)
        finally:
            await asyncio.to_thread(allow_connections, pg_url)
        await t.settle(60)
        await t.close()

    asyncio.run(run())
    logs = "".join(w.log() for w in cluster.workers.values())
    assert "send batch of" in logs and "database unavailable" in logs, \
        "no batch met the outage: the test tests nothing"
    t.check(stub)
    _no_attempt_claimed_twice(t)


@pytest.mark.parametrize("broker", ["redis"])
def test_a_bad_message_and_a_duplicate_in_a_batch_hold_up_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub,
) -> None:
    """A backlog of good sends with, among them, an invalid one (a control character in the
    recipient) and the same enqueue-only send twice: the good ones are delivered, the
    duplicate once, the invalid one is stored nowhere."""
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store, with_devices=False, durable=False)
    bad_sender = f"bad-{uuid.uuid4().hex[:6]}"

    async def run() -> None:
        await t.connect()
        await asyncio.to_thread(_consumers, app, False)
        dup: dict[str, Any] = {"sender": "alice", "recipient": t.users[0],
                               "body": {"text": "dup"}, "client_msg_id": uuid.uuid4().hex}
        app.send_task(SEND_TASK, kwargs=dup, ignore_result=True)
        app.send_task(SEND_TASK, kwargs={"sender": bad_sender, "recipient": "bo\x00b",
                                         "body": {"text": "x"}}, ignore_result=True)
        await t.send(40, 5000)
        app.send_task(SEND_TASK, kwargs=dup, ignore_result=True)
        from delivery.validation import message_id_for

        t.sent[str(message_id_for("alice", dup["client_msg_id"]))] = t.users[0]
        await asyncio.to_thread(_consumers, app, True)
        await t.settle(30)
        await asyncio.sleep(0.5)  # a second copy of the duplicate would arrive by now
        await t.close()

    asyncio.run(run())
    assert max(_batch_sizes(app), default=0) > 1
    t.check(stub)
    assert all(n == 1 for u in t.users for n in t.received[u].values()), "shown twice"
    with pg_store.engine.connect() as conn:
        from sqlalchemy import text

        n = conn.execute(text("SELECT count(*) FROM messages WHERE sender = :s"),
                         {"s": bad_sender}).scalar()
    assert n == 0
