"""The seed's five-step race, on real processes: it must end delivered (or pushed), never lost."""

from __future__ import annotations

import asyncio

import pytest
from celery import Celery

from delivery.push.stub import FcmStub
from delivery.store import Store
from tests.e2e.conftest import (
    client,
    hold_presence,
    receive_ids,
    send,
    user,
    wait_state,
    workers_see,
)
from workers.devkit.cluster import LocalCluster

pytestmark = pytest.mark.slow


def test_reconnect_on_the_same_node_while_workers_lag(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub
) -> None:
    bob = user()

    async def scenario() -> None:
        c1 = await client(cluster, "gw-a", bob).connect()  # step 1: connection 1 on A
        conn1 = c1.conn_id
        workers_see(app, bob, {conn1})  # type: ignore[arg-type]
        hold_presence(app, 3.0)  # steps 3-4 replicate slowly to the workers
        await c1.close()  # step 3: the user drops...
        c2 = await client(cluster, "gw-a", bob).connect()  # step 4: ...and reconnects on A
        msg_id = send(app, bob, "are you there?")  # step 5: workers still see connection 1
        assert await receive_ids(c2, 1) == [msg_id]
        msg = wait_state(pg_store, msg_id, {"delivered"})
        assert msg.delivered_conn == c2.conn_id
        history = pg_store.attempts_of(msg.id)
        assert any(a.conn == conn1 and a.result == "nacked" for a in history), history
        assert stub.requests == []  # delivered over the socket: no push
        await c2.close()

    asyncio.run(scenario())


def test_reconnect_on_another_node_while_workers_lag(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub
) -> None:
    carol = user()

    async def scenario() -> None:
        c1 = await client(cluster, "gw-a", carol).connect()
        workers_see(app, carol, {c1.conn_id})  # type: ignore[arg-type]
        hold_presence(app, 2.0)
        await c1.close()
        c2 = await client(cluster, "gw-b", carol).connect()
        msg_id = send(app, carol, "moved nodes")
        # Gateway A nacks at once; routing waits for fresh presence, then reaches B, or pushes
        # (no device here: pending) and the message is replayed on the next connect.
        msg = wait_state(pg_store, msg_id, {"delivered", "pending", "pushed"})
        if msg.state != "delivered":
            c3 = await client(cluster, "gw-b", carol).connect()
            assert msg_id in await receive_ids(c3, 1)
            await c3.close()
        msg = wait_state(pg_store, msg_id, {"delivered"})
        await c2.close()

    asyncio.run(scenario())
