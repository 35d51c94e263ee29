"""Producer flow control over real processes (2 gateways, 2 workers, a private Redis, a
database of the test's own), on both brokers: with both workers frozen (SIGSTOP), a producer
sends past DELIVERY_MAX_BACKLOG. Must hold: the excess is refused with ``Overloaded`` (nothing
of it stored), every accepted message is delivered once after the workers resume, one outcome
each, nothing lost. Prints how many tasks the frozen workers held (docs/performance.md)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from celery import Celery

from delivery import flow_gate
from delivery.push.stub import FcmStub
from delivery.store import Store
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
from tests.support.flow import producer_bound
from workers.devkit.cluster import LocalCluster

__all__ = ["broker", "crash_cluster", "crash_env", "pg_store", "pg_url", "private_redis", "stub",
           "visibility_timeout"]

pytestmark = pytest.mark.slow

BOUND = 30
SENDS = 150


@pytest.fixture
def bounded_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """This test process's producers refuse sends past BOUND queued tasks."""
    with producer_bound(monkeypatch, BOUND) as value:
        yield value


def _queued(app: Celery) -> int:
    reader = flow_gate.depth_reader(app, "celery")
    assert reader is not None
    return reader()


def test_frozen_workers_past_the_bound_refuse_the_excess_and_deliver_every_accepted_message(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, broker: str,
    bounded_producer: int,
) -> None:
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store, with_devices=False, durable=True)
    pids = [w.popen.pid for w in cluster.workers.values()]

    async def run() -> tuple[int, int]:
        await t.connect()
        for pid in pids:
            os.killpg(pid, signal.SIGSTOP)
        try:
            await t.send(SENDS, 500)
            held = await asyncio.to_thread(_held_by_broker, cluster.env)
            queued = await asyncio.to_thread(_queued, app)
        finally:
            for pid in pids:
                os.killpg(pid, signal.SIGCONT)
        await t.settle(60)
        await t.close()
        return held, queued

    held, queued = asyncio.run(run())
    print(f"\nflow control, {broker} broker, both workers frozen, bound {bounded_producer}: "
          f"{len(t.sent)} accepted ({held} held unacked by the frozen workers, {queued} "
          f"queued), {t.refused} refused of {SENDS}")
    assert t.refused > 0, "nothing refused: the bound did not act"
    assert queued <= bounded_producer
    assert len(t.sent) + t.refused == SENDS
    # Nothing refused was stored: the store holds exactly the accepted messages.
    assert sum(pg_store.count_by_state().values()) == len(t.sent)
    t.check(stub)  # every accepted message shown and delivered once, one outcome each
