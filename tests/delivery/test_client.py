"""The Python client against a real in-process gateway: auto-ack, manual ack, dedupe, reconnect
with replay, auth failures, and showing a message once across a client restart."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from delivery.channels import MemoryChannels
from delivery.client import AuthError, DeliveryClient, Message
from delivery.client_dedupe import MemorySeenStore
from delivery.gateway import Gateway, GatewayConfig, issue_token
from delivery.models import State
from delivery.runtime import Runtime
from delivery.secret import new_secret
from delivery.settings import Settings
from delivery.store import Store
from tests.delivery.gateway.conftest import SECRET, gateway_harness, presence_nodes, run

REPO = str(Path(__file__).resolve().parents[2])


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


def test_a_client_evicted_by_a_newer_connection_does_not_reconnect(sqlite_store: Store) -> None:
    # Reconnecting on 4008 would evict the newer connection, which would do the same: a loop.
    async def main() -> None:
        cfg = GatewayConfig(replay_tail_s=0, max_conns_per_user=1)
        async with gateway_harness(sqlite_store, cfg) as h:
            old = await DeliveryClient(h.url, h.token("bob"), backoff_initial_s=0.01).connect()
            new = await DeliveryClient(h.url, h.token("bob"), backoff_initial_s=0.01).connect()
            with pytest.raises(AuthError) as info:
                await old.receive(1)
            assert info.value.code == 4008
            await asyncio.sleep(0.3)
            assert old.stats.connects == 1 and list(h.gateway.by_user["bob"]) == [new.conn_id]
            await old.close()
            await new.close()

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


def test_restart_after_a_lost_ack_does_not_show_twice(sqlite_store: Store, tmp_path: Path) -> None:
    """Fault: the app's client process is killed after it showed a message and recorded its id
    in the dedupe file, before its ack left. Traffic: that message, then one more after the
    restart. Must hold: the gateway replays the first message to the restarted client (same
    dedupe file), which does not show it again but acks it, so the store records it delivered;
    the new message is shown once."""
    dedupe = tmp_path / "seen.sqlite3"

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            first = h.accept("bob", "before the crash")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.delivery.dedupe_client_proc", h.url,
                h.token("bob"), str(dedupe), stdout=asyncio.subprocess.PIPE,
                cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
            try:
                assert proc.stdout is not None
                lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
                         for _ in range(2)]
                assert lines == [["shown", str(first.id)], ["recorded", str(first.id)]]
            finally:
                proc.kill()
                await proc.wait()
            assert h.acks == []  # the ack never reached the gateway
            await h.wait_for(lambda: not any(c.user == "bob" for c in h.gateway.conns.values()))
            assert sqlite_store.get(first.id).state != State.DELIVERED  # type: ignore[union-attr]

            second = h.accept("bob", "after the restart")
            shown: list[Message] = []
            client = DeliveryClient(h.url, h.token("bob"), dedupe_path=dedupe)
            await client.connect()
            running = asyncio.create_task(client.run(shown.append))
            # Replay is oldest first on one connection: once the second message is shown, the
            # first has been handled.
            await h.wait_for(lambda: len(shown) >= 1, timeout=10)
            assert [m.id for m in shown] == [str(second.id)]
            assert client.stats.duplicates == 1
            await h.wait_db(lambda: all(
                sqlite_store.get(m.id).state == State.DELIVERED  # type: ignore[union-attr]
                for m in (first, second)), timeout=10)
            rec = sqlite_store.get(first.id)
            assert rec is not None and rec.delivered_conn == client.conn_id
            await client.close()
            await running
            assert [m.id for m in shown] == [str(second.id)]

    run(main())


def test_a_failing_handler_leaves_the_message_unrecorded_and_unacked(sqlite_store: Store) -> None:
    """Fault: the app's handler raises on a message. Must hold: the id is not recorded and not
    acked, so the next client with the same dedupe store shows it (then records and acks it)."""
    seen = MemorySeenStore()

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            msg = h.accept("bob", "boom")

            def fail(m: Message) -> None:
                raise RuntimeError("app bug")

            async with DeliveryClient(h.url, h.token("bob"), seen_store=seen) as client:
                with pytest.raises(RuntimeError, match="app bug"):
                    await client.run(fail)
            assert not seen.seen(str(msg.id)) and h.acks == []

            shown: list[str] = []
            async with DeliveryClient(h.url, h.token("bob"), seen_store=seen) as client:
                running = asyncio.create_task(client.run(lambda m: shown.append(m.id)))
                await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
                assert shown == [str(msg.id)] and seen.seen(str(msg.id))
            await running

    run(main())


class BrokenStore:
    """A dedupe store whose disk has failed: every call raises."""

    def seen(self, msg_id: str) -> bool:
        raise OSError("disk I/O error")

    def add(self, msg_id: str) -> None:
        raise OSError("disk I/O error")


def test_a_failing_dedupe_store_still_shows_and_acks(sqlite_store: Store) -> None:
    """Fault: the dedupe store raises on every lookup and record. Traffic: one message. Must
    hold: it is shown and acked anyway (at worst a later copy would be shown twice)."""
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            msg = h.accept("bob")
            shown: list[str] = []
            async with DeliveryClient(h.url, h.token("bob"), seen_store=BrokenStore()) as client:
                running = asyncio.create_task(client.run(lambda m: shown.append(m.id)))
                await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            await running
            assert shown == [str(msg.id)]

    run(main())
