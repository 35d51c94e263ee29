"""Faults beyond crashes, mid-traffic on a real cluster (2 gateways, 2 workers, a private
Redis, PostgreSQL; the Celery broker is the private Redis or a private RabbitMQ vhost): a
database outage, with sends stored first by the producer (the default) and with sends that
only enqueue; a worker paused (SIGSTOP) while it holds tasks and sweep claims. After each:
every message the producer got an id for is shown on its client, ends ``delivered`` and has
one outcome; sends refused during the outage raised."""

from __future__ import annotations

import asyncio

from celery import Celery

from delivery.push.stub import FcmStub
from delivery.store import Store
from tests.e2e.test_crashes import (
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

# The crash tests' cluster, on each broker (Redis and RabbitMQ).
__all__ = ["broker", "crash_cluster", "crash_env", "pg_store", "pg_url", "private_redis", "stub",
           "visibility_timeout"]


def _outage(pg_url: str, seconds: float):  # type: ignore[no-untyped-def]
    async def disrupt() -> None:
        await asyncio.to_thread(refuse_connections, pg_url)
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(allow_connections, pg_url)
    return disrupt


def test_database_outage_with_default_sends_loses_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, pg_url: str,
) -> None:
    """Fault: the database refuses connections and its live backends are terminated for 3 s
    while 50 messages/s are sent with the default ``send_message`` (stored first). Must hold:
    every send either raised or is shown and delivered once."""
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store)
    asyncio.run(t.run_with(200, 50, _outage(pg_url, 3.0)))
    assert t.refused > 0, "the outage never reached the producer: the test tests nothing"
    t.check(stub)


def test_database_outage_with_enqueue_only_sends_loses_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, pg_url: str,
) -> None:
    """Fault: the same 3 s outage, with a producer that has no database (it only enqueues):
    the send task must retry until the database is back, never ack a send it did not store.
    Before: 303 of 2,100 messages lost to a 3 s outage."""
    cluster, app = crash_cluster
    t = Traffic(cluster, app, pg_store, durable=False)
    asyncio.run(t.run_with(200, 50, _outage(pg_url, 3.0)))
    assert t.refused == 0
    t.check(stub)
    logs = "".join(w.log() for w in cluster.workers.values())
    assert "database unavailable" in logs, "no send met the outage: the test tests nothing"


def test_a_paused_worker_stalls_nothing(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub,
) -> None:
    """Fault: one of two workers is SIGSTOPped for 10 s mid-traffic, holding prefetched tasks,
    sweep claims and its presence replica's heartbeats. Must hold: the other worker routes
    and recovers everything (nothing waits for the paused one), and when it resumes nothing
    is delivered twice."""
    cluster, app = crash_cluster
    paused = cluster.workers["cw1"]

    async def pause() -> None:
        paused.pause()
        await asyncio.sleep(10)
        paused.resume()

    t = Traffic(cluster, app, pg_store)
    asyncio.run(t.run_with(300, 30, pause))
    t.check(stub)
