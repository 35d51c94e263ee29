"""The Python client against a real in-process gateway: auto-ack, manual ack, dedupe, reconnect
with replay, and auth failures."""

from __future__ import annotations

import asyncio
import json

import pytest

from delivery.channels import MemoryChannels
from delivery.client import AuthError, DeliveryClient
from delivery.gateway import Gateway, GatewayConfig, issue_token
from delivery.models import State
from delivery.runtime import Runtime
from delivery.secret import new_secret
from delivery.settings import Settings
from delivery.store import Store
from tests.delivery.gateway.conftest import SECRET, gateway_harness, presence_nodes, run


def test_auto_ack_marks_delivered(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            old = h.accept("bob", "replayed")
            async with DeliveryClient(h.url, h.token("bob")) as client:
                assert client.user == "bob" and client.conn_id in h.gateway.conns
                m1 = await client.receive(5)
                assert (m1.id, m1.sender, m1.body) == (str(old.id), "alice", "replayed")
                live = h.accept("bob", {"k": 1})
                assert client.conn_id is not None
                h.deliver(live, [client.conn_id])
                m2 = await client.receive(5)
                assert m2.id == str(live.id) and m2.body == {"k": 1}
                await h.wait_db(lambda: sqlite_store.count_by_state() == {"delivered": 2})

    run(main())


def test_manual_ack_dedupe_and_reconnect_replay(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            msg = h.accept("bob")
            client = DeliveryClient(h.url, h.token("bob"), auto_ack=False,
                                    backoff_initial_s=0.05)
            await client.connect()
            first = await client.receive(5)
            assert first.id == str(msg.id)
            conn1 = client.conn_id
            # Drop the connection server-side: the client reconnects and gets the replay,
            # which it recognises as a duplicate (not yielded again).
            await h.gateway.conns[conn1].ws.close(1011, "test")  # type: ignore[index]
            await h.wait_for(lambda: client.connected and client.conn_id != conn1)
            await h.wait_for(lambda: client.stats.duplicates == 1)
            with pytest.raises(TimeoutError):
                await client.receive(0.3)
            assert await client.ack(first.id)
            await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            assert client.stats.connects == 2
            await client.close()

    run(main())


def test_reconnects_after_gateway_restart(sqlite_store: Store) -> None:
    async def main() -> None:
        settings = Settings(secret=SECRET)
        cfg = GatewayConfig(replay_tail_s=0)

        tokens = 0

        def token() -> str:
            nonlocal tokens
            tokens += 1
            return issue_token("bob", SECRET, 60)

        # The gateway's presence node lives and dies with it (a restart is a new incarnation).
        with presence_nodes("gw1") as (node1,):
            rt = Runtime(settings=settings, store=sqlite_store)
            gw = Gateway("gw1", rt, cfg, presence=node1, channels=MemoryChannels())
            port = await gw.start("127.0.0.1", 0)
            client = DeliveryClient(gw.url, token, backoff_initial_s=0.05, backoff_max_s=0.2)
            await client.connect()
            assert [p.conn for p in node1.list("bob")] == [client.conn_id]
            await gw.stop()
            assert node1.list("bob") == []
        await asyncio.sleep(0.3)  # a few failed attempts while nobody listens
        rt = Runtime(settings=settings, store=sqlite_store)
        import uuid
        from datetime import timedelta

        from delivery.clock import utcnow

        now = utcnow()
        msg, _ = sqlite_store.accept(message_id=uuid.uuid4(), sender="alice", recipient="bob",
                                     body="while you were away", client_msg_id=None, now=now,
                                     ttl_s=60, deadline=now + timedelta(seconds=60))
        with presence_nodes("gw1") as (node2,):
            gw2 = Gateway("gw1", rt, cfg, presence=node2, channels=MemoryChannels())
            await gw2.start("127.0.0.1", port)
            try:
                got = await client.receive(10)
                assert got.id == str(msg.id) and got.body == "while you were away"
                assert client.stats.connects == 2 and tokens >= 2
                assert [p.conn for p in node2.list("bob")] == [client.conn_id]
                await asyncio.sleep(0.1)
                assert sqlite_store.get(msg.id).state == State.DELIVERED  # type: ignore[union-attr]
            finally:
                await client.close()
                await gw2.stop()

    run(main())


def test_bad_token_is_final(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            client = DeliveryClient(h.url, issue_token("bob", new_secret(), 60))
            with pytest.raises(AuthError) as info:
                await client.connect()
            assert info.value.code == 1008 and "invalid token" in info.value.reason
            with pytest.raises(AuthError):
                await client.receive(1)
            await client.close()

    run(main())


def test_error_frames_are_collected(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            client = await DeliveryClient(h.url, h.token("bob")).connect()
            await client.send_raw({"type": "nope"})
            await client.send_raw(json.dumps({"type": "ping"}))
            await h.wait_for(lambda: len(client.stats.errors) == 1)
            assert client.stats.errors[0]["code"] == "unknown_type"
            await client.close()

    run(main())
