"""Group conversations on real processes (2 gateways, 2 Celery workers, PostgreSQL, Redis, the
FCM stub): a group with online, reconnecting and offline-with-device members; order under two
concurrent senders; membership changes racing sends; receipts after the sender reconnects and
a read receipt (a worker killed with -9 mid-fan-out: test_conversation_faults.py). Nothing is
lost per recipient."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from websockets.asyncio.client import ClientConnection, connect

from delivery.api import add_members, create_conversation, remove_members, send_to_conversation
from delivery.clock import utcnow
from delivery.push.stub import FcmStub
from delivery.store import MessageRecord, Store
from tests.e2e.conftest import client, hold_presence, receive_ids, token, user, workers_see
from tests.e2e.test_outcomes import pushed_ids
from workers.devkit.cluster import LocalCluster

pytestmark = pytest.mark.slow


def group(store: Store, *members: str) -> str:
    conv = f"g-{uuid.uuid4().hex[:8]}"
    assert create_conversation(conv, list(members), store=store)
    return conv


def gsend(app: Celery, store: Store, sender: str, conv: str, text: str) -> str:
    return send_to_conversation(sender, conv, {"text": text}, app=app, store=store)


def rows_of(store: Store, msg_id: str) -> dict[str, MessageRecord]:
    return {m.recipient: m for m in store.group_rows(uuid.UUID(msg_id))}


def wait_rows(store: Store, msg_ids: list[str], want: dict[str, set[str]],
              timeout: float = 30.0) -> None:
    """Until every message's row for each user in ``want`` is in one of its states."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = [{u: r.state for u, r in rows_of(store, m).items()} for m in msg_ids]
        if all(all(states.get(u) in ok for u, ok in want.items()) for states in last):
            return
        time.sleep(0.1)
    raise AssertionError(f"rows never reached {want}: {last}")


class Raw:
    """A bare WebSocket client: keeps every frame, acks messages and receipts on arrival."""

    def __init__(self, ws: ClientConnection, conn: str) -> None:
        self.ws = ws
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, cluster: LocalCluster, node: str, who: str) -> Raw:
        ws = await connect(cluster.gateways[node].url, compression=None)
        await ws.send(json.dumps({"type": "hello", "token": token(who, cluster.env)}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        return cls(ws, welcome["conn"])

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.frames.append(frame)
            if frame["type"] in ("message", "receipt"):
                await self.ws.send(json.dumps({"type": "ack", "id": frame["id"]}))

    def of(self, ftype: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == ftype]

    async def until(self, ftype: str, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(ftype)) < n:
                await asyncio.sleep(0.02)
        return self.of(ftype)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()


def test_a_group_with_online_reconnecting_and_offline_members_loses_nobody(
    cluster: LocalCluster, app: Celery, pg_store: Store, stub: FcmStub,
) -> None:
    """Online on gw-a, reconnecting while the workers' presence lags (the seed's race) and
    offline with a device: delivered, delivered (the stale connection nacked), pushed."""
    s, on, rc, off = user(), user(), user(), user()
    conv = group(pg_store, s, on, rc, off)
    pg_store.register_device(off, f"tok-{off}", "android", utcnow())

    async def scenario() -> None:
        c_on = await client(cluster, "gw-a", on).connect()
        c1 = await client(cluster, "gw-a", rc).connect()
        workers_see(app, on, {c_on.conn_id})  # type: ignore[arg-type]
        workers_see(app, rc, {c1.conn_id})  # type: ignore[arg-type]
        hold_presence(app, 3.0)
        await c1.close()
        c2 = await client(cluster, "gw-a", rc).connect()
        msg_id = gsend(app, pg_store, s, conv, "hello group")
        rows = rows_of(pg_store, msg_id)
        assert await receive_ids(c_on, 1) == [str(rows[on].id)]
        assert await receive_ids(c2, 1) == [str(rows[rc].id)]
        wait_rows(pg_store, [msg_id], {on: {"delivered"}, rc: {"delivered"}, off: {"pushed"}})
        assert pushed_ids(stub) == {str(rows[off].id): 1}
        await c_on.close()
        await c2.close()

    asyncio.run(scenario())


def test_two_concurrent_senders_on_two_workers_get_gap_free_ordered_seqs(
    cluster: LocalCluster, app: Celery, pg_store: Store,
) -> None:
    s1, s2, r = user(), user(), user()
    conv = group(pg_store, s1, s2, r)
    ids: list[str] = []
    lock = threading.Lock()

    def sender(who: str) -> None:
        for i in range(15):
            mid = gsend(app, pg_store, who, conv, f"{who} {i}")
            with lock:
                ids.append(mid)

    async def scenario() -> None:
        c = await client(cluster, "gw-b", r).connect()
        workers_see(app, r, {c.conn_id})  # type: ignore[arg-type]
        threads = [threading.Thread(target=sender, args=(w,)) for w in (s1, s2)]
        for t in threads:
            t.start()
        got = await receive_ids(c, 30, timeout=60)
        for t in threads:
            t.join()
        mine = {str(rows_of(pg_store, m)[r].id): rows_of(pg_store, m)[r] for m in ids}
        assert set(got) == set(mine)
        seqs = sorted(m.conv_seq or 0 for m in mine.values())
        assert seqs == list(range(1, 31))
        assert all(m.conv_prev == (m.conv_seq or 0) - 1 for m in mine.values())
        await c.close()

    asyncio.run(scenario())


def test_membership_changes_racing_sends_are_respected_by_seq(
    cluster: LocalCluster, app: Celery, pg_store: Store,
) -> None:
    s, m, carol = user(), user(), user()
    conv = group(pg_store, s, m)
    ids: list[str] = []

    def churn() -> None:
        for _ in range(8):
            add_members(conv, [carol], store=pg_store)
            remove_members(conv, [carol], store=pg_store)

    def sends() -> None:
        for i in range(20):
            ids.append(gsend(app, pg_store, s, conv, str(i)))

    async def scenario() -> None:
        c = await client(cluster, "gw-a", m).connect()
        workers_see(app, m, {c.conn_id})  # type: ignore[arg-type]
        threads = [threading.Thread(target=churn), threading.Thread(target=sends)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(await receive_ids(c, 20, timeout=60))) == 20
        await c.close()

    asyncio.run(scenario())
    spans = [(x.joined_seq, x.left_seq) for x in pg_store.members_of(conv, current=False)
             if x.user_id == carol]
    assert len(spans) == 8
    for mid in ids:
        rows = rows_of(pg_store, mid)
        seq = rows[m].conv_seq or 0
        member = any(j < seq and (left is None or seq <= left) for j, left in spans)
        assert (carol in rows) == member, (seq, spans)
    wait_rows(pg_store, ids, {m: {"delivered"}})


def test_receipts_reach_the_sender_after_it_reconnects_and_a_read_receipt_follows(
    cluster: LocalCluster, app: Celery, pg_store: Store,
) -> None:
    s, a, b = user(), user(), user()
    conv = group(pg_store, s, a, b)

    async def scenario() -> None:
        sender = await Raw.open(cluster, "gw-a", s)
        await sender.close()  # away while the members get it
        ra, rb = await Raw.open(cluster, "gw-a", a), await Raw.open(cluster, "gw-b", b)
        workers_see(app, a, {ra.conn})
        workers_see(app, b, {rb.conn})
        msg_id = gsend(app, pg_store, s, conv, "tick?")
        got_a = (await ra.until("message", 1))[0]
        await rb.until("message", 1)
        assert (got_a["conversation"], got_a["seq"], got_a["message"]) == (conv, 1, msg_id)
        await ra.ws.send(json.dumps({"type": "read", "conversation": conv, "seq": 1}))
        wait_rows(pg_store, [msg_id], {a: {"delivered"}, b: {"delivered"}})
        sender = await Raw.open(cluster, "gw-b", s)
        receipts = await sender.until("receipt", 3)
        assert sorted((r["status"], r["user"]) for r in receipts) == sorted(
            [("delivered", a), ("delivered", b), ("read", a)])
        assert {r["message"] for r in receipts} == {msg_id}
        for c in (sender, ra, rb):
            await c.close()

    asyncio.run(scenario())
