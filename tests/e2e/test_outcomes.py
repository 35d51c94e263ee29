"""Offline recipients on real processes: pushed through FCM, or pending and replayed."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from celery import Celery

from delivery.clock import utcnow
from delivery.push.stub import FcmStub
from delivery.store import Store
from tests.e2e.conftest import client, receive_ids, send, user, wait_state
from workers.devkit.cluster import LocalCluster

pytestmark = pytest.mark.slow


def pushed_ids(stub: FcmStub) -> Counter[str]:
    return Counter(
        r["body"]["message"]["data"]["message_id"] for r in stub.requests if r["answer"] == "OK"
    )


def test_offline_recipient_is_pushed_once_then_replayed(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub
) -> None:
    dave = user()
    pg_store.register_device(dave, f"tok-{dave}", "android", utcnow())
    msg_id = send(app, dave, "you were offline")
    msg = wait_state(pg_store, msg_id, {"pushed"})
    assert msg.pushed_at is not None
    assert pushed_ids(stub) == {msg_id: 1}
    data = stub.requests[0]["body"]["message"]["data"]
    assert data["preview"] == "you were offline" and data["sender"] == "alice"

    async def reconnect() -> None:  # the app opens from the notification
        c = await client(cluster, "gw-b", dave).connect()
        assert await receive_ids(c, 1) == [msg_id]
        await c.close()

    asyncio.run(reconnect())
    assert wait_state(pg_store, msg_id, {"delivered"}).state == "delivered"


def test_no_device_leaves_it_pending_then_replay_delivers_in_order(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub
) -> None:
    erin = user()
    ids = [send(app, erin, f"note {i}") for i in range(5)]
    for msg_id in ids:
        msg = wait_state(pg_store, msg_id, {"pending"})
        assert msg.last_error and "device" in msg.last_error
    assert any(a.result == "no_device" for a in pg_store.attempts_of(msg.id))

    # Oldest first means in the order they were stored (two workers may store two sends in
    # either order).
    stored = sorted(pg_store.get_many(uuid.UUID(i) for i in ids), key=lambda m: m.seq)
    in_store_order = [str(m.id) for m in stored]

    async def reconnect() -> None:
        c = await client(cluster, "gw-a", erin).connect()
        assert await receive_ids(c, 5) == in_store_order
        await c.close()

    asyncio.run(reconnect())
    for msg_id in ids:
        wait_state(pg_store, msg_id, {"delivered"})
    assert stub.requests == []


def test_online_recipient_with_two_connections_gets_it_once_delivered(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub
) -> None:
    frank = user()

    async def scenario() -> None:
        phone = await client(cluster, "gw-a", frank).connect()
        laptop = await client(cluster, "gw-b", frank).connect()
        from tests.e2e.conftest import workers_see

        workers_see(app, frank, {phone.conn_id, laptop.conn_id})  # type: ignore[arg-type]
        msg_id = send(app, frank, "both screens")
        assert await receive_ids(phone, 1) == [msg_id]
        assert await receive_ids(laptop, 1) == [msg_id]
        msg = wait_state(pg_store, msg_id, {"delivered"})
        assert msg.delivered_conn in {phone.conn_id, laptop.conn_id}
        results = sorted(a.result or "" for a in pg_store.attempts_of(msg.id))
        assert results.count("acked") == 1
        await phone.close()
        await laptop.close()

    asyncio.run(scenario())
    assert stub.requests == []
