"""A fault during group fan-out, on real processes with a database of the test's own (the
session cluster's workers, on the shared database, would otherwise sweep this cluster's stalled
rows with their own presence and leave them pending)."""

from __future__ import annotations

import asyncio

import pytest
from celery import Celery

from delivery.store import Store
from tests.e2e.conftest import client, receive_ids, user, workers_see
from tests.e2e.test_conversations import group, gsend, wait_rows
from tests.e2e.test_crashes import (
    broker,
    crash_cluster,
    crash_env,
    private_redis,
    stub,
    visibility_timeout,
)
from workers.devkit.cluster import LocalCluster

pytestmark = pytest.mark.slow
__all__ = ["broker", "crash_cluster", "crash_env", "private_redis", "stub", "visibility_timeout"]


@pytest.fixture
def pg_url(own_pg: tuple[str, Store]) -> str:
    return own_pg[0]


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_worker_killed_mid_fan_out_loses_no_recipient(
    crash_cluster: tuple[LocalCluster, Celery], own_pg: tuple[str, Store],
) -> None:
    """Fault: one of two workers is killed with -9 while 30 group messages to 8 online
    members are being fanned out. Must hold: every recipient row ends delivered and every
    member is shown every message."""
    cluster, app = crash_cluster
    pg_store = own_pg[1]
    s = user()
    members = [user() for _ in range(8)]
    conv = group(pg_store, s, *members)

    async def scenario() -> None:
        clients = [await client(cluster, "gw-a" if i % 2 else "gw-b", u).connect()
                   for i, u in enumerate(members)]
        for u, c in zip(members, clients, strict=True):
            workers_see(app, u, {c.conn_id})  # type: ignore[arg-type]
        ids: list[str] = []
        for i in range(30):
            ids.append(await asyncio.to_thread(gsend, app, pg_store, s, conv, str(i)))
            if i == 10:
                cluster.workers["cw1"].kill9()
        for c in clients:
            assert len(set(await receive_ids(c, 30, timeout=90))) == 30
        wait_rows(pg_store, ids, {u: {"delivered"} for u in members}, timeout=60)
        for c in clients:
            await c.close()

    asyncio.run(scenario())
