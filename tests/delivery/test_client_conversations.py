"""The Python client's conversation side at the wire: messages presented in seq order (held
while ``prev`` is missing, released at the bound, a late one still shown), receipts handed over
and acked once, read marks sent (and sent again after a reconnect).

The peer is a scripted WebSocket server speaking the gateway's protocol, so that frames come
in exactly the order a test needs (out of order, duplicated, missing); the real gateway's side
of conversations is tested with it in tests/e2e."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from delivery.client import DeliveryClient, Message, Receipt
from tests.delivery.gateway.conftest import run


class Peer:
    """Welcomes each connection, then sends what the test queues; records what clients send."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.conns: list[ServerConnection] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello"
        self.conns.append(ws)
        await ws.send(json.dumps({"type": "welcome", "conn": f"gw.{len(self.conns)}",
                                  "user": "bob"}))
        with contextlib.suppress(Exception):
            async for raw in ws:
                self.received.append(json.loads(raw))

    async def send(self, *frames: dict[str, Any]) -> None:
        for frame in frames:
            await self.conns[-1].send(json.dumps(frame))

    def sent_by_client(self, ftype: str) -> list[dict[str, Any]]:
        return [f for f in self.received if f["type"] == ftype]

    async def until(self, cond: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    async with serve(p.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        p.url = f"ws://127.0.0.1:{port}/ws"
        yield p


def msg(seq: int, prev: int, conversation: str = "team") -> dict[str, Any]:
    mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{conversation}/{seq}"))
    return {"type": "message", "id": mid, "from": "alice", "body": {"n": seq},
            "sent_at": "2024-06-01T10:00:00+00:00", "conversation": conversation, "seq": seq,
            "prev": prev, "message": mid}


def test_a_message_waits_for_its_prev_then_both_come_in_order_and_are_acked_so() -> None:
    async def main() -> None:
        async with peer() as p, DeliveryClient(p.url, "t") as client:
            await p.send(msg(1, 0))
            assert (await client.receive(5)).seq == 1
            await p.send(msg(7, 3), msg(9, 7), msg(3, 1))
            got = [await client.receive(5) for _ in range(3)]
            assert [(m.seq, m.late) for m in got] == [(3, False), (7, False), (9, False)]
            assert got[0].conversation == "team" and got[0].body == {"n": 3}
            await p.until(lambda: len(p.sent_by_client("ack")) == 4)
            del p.received[:1]
            # Nothing was acked before it was handed over: acks follow the seq order.
            assert [a["id"] for a in p.sent_by_client("ack")] == [m.id for m in got]
            assert client.stats.held == 2 and client.stats.gaps_skipped == 0

    run(main())


def test_a_new_client_waits_for_prev_unless_told_what_was_shown_before() -> None:
    async def main() -> None:
        async with peer() as p:
            # A live frame overtakes the replay of an older one: still shown in order.
            async with DeliveryClient(p.url, "t") as client:
                await p.send(msg(12, 10), msg(10, 0))
                got = [await client.receive(5), await client.receive(5)]
                assert [(m.seq, m.late) for m in got] == [(10, False), (12, False)]
            # The application showed up to 10 in an earlier run: 12 is shown at once, and a
            # replayed 9 it had not shown comes late.
            client = DeliveryClient(p.url, "t")
            client.resume_conversation("team", 10)
            async with client:
                await p.send(msg(12, 10), msg(9, 0))
                got = [await client.receive(5), await client.receive(5)]
                assert [(m.seq, m.late) for m in got] == [(12, False), (9, True)]
                assert client.stats.held == 0

    run(main())


def test_the_order_continues_after_a_restart_on_the_same_dedupe_file(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "seen.sqlite3"
        async with peer() as p:
            async with DeliveryClient(p.url, "t", dedupe_path=path) as client:
                await p.send(msg(1, 0), msg(3, 1))
                assert [(await client.receive(5)).seq for _ in range(2)] == [1, 3]
            async with DeliveryClient(p.url, "t", dedupe_path=path) as client:
                await p.send(msg(6, 3))  # its prev was shown in the first run: no wait
                m = await client.receive(5)
                assert (m.seq, m.late) == (6, False) and client.stats.held == 0

    run(main())


def test_a_message_whose_handler_failed_is_handed_over_again_not_acked_unseen() -> None:
    async def main() -> None:
        async with peer() as p, DeliveryClient(p.url, "t") as client:
            calls: list[int] = []

            def handler(m: Message) -> None:
                calls.append(m.seq or 0)
                if len(calls) == 1:
                    raise RuntimeError("the application could not show it")

            await p.send(msg(1, 0))
            with pytest.raises(RuntimeError):
                await client.run(handler)
            await p.send(msg(1, 0))  # the gateway delivers it again
            runner = asyncio.create_task(client.run(handler))
            await p.until(lambda: len(calls) == 2)
            await p.until(lambda: len(p.sent_by_client("ack")) == 1)
            runner.cancel()
            assert calls == [1, 1]

    run(main())


def test_a_held_message_survives_a_dropped_connection_and_the_replay_completes_it() -> None:
    """Fault: the connection drops while a message waits for its prev. Must hold: after the
    reconnect the replay brings the missing one and a copy of the held one; both are handed
    over once, in order, and acked on the new connection."""
    async def main() -> None:
        async with peer() as p:
            client = DeliveryClient(p.url, "t", backoff_initial_s=0.01, order_wait_s=60)
            await client.connect()
            try:
                await p.send(msg(1, 0))
                assert (await client.receive(5)).seq == 1
                await p.send(msg(4, 2))  # 2 is still on its way
                await p.until(lambda: client.stats.held == 1)
                await p.conns[-1].close(1011, "test")
                await p.until(lambda: len(p.conns) == 2 and client.connected)
                await p.send(msg(2, 1), msg(4, 2))  # the replay, oldest first
                got = [await client.receive(5), await client.receive(5)]
                assert [(m.seq, m.late) for m in got] == [(2, False), (4, False)]
                await p.until(lambda: len(p.sent_by_client("ack")) == 3)
                assert [a["id"] for a in p.sent_by_client("ack")][1:] == [m.id for m in got]
                assert client.stats.gaps_skipped == 0
            finally:
                await client.close()

    run(main())


def test_at_the_bound_the_gap_is_skipped_and_the_missing_one_still_comes_late() -> None:
    async def main() -> None:
        async with peer() as p, DeliveryClient(p.url, "t", order_wait_s=0.2) as client:
            await p.send(msg(1, 0))
            assert (await client.receive(5)).seq == 1
            await p.send(msg(4, 2), msg(5, 4))  # 2 is missing
            later = [await client.receive(5), await client.receive(5)]
            assert [(m.seq, m.late) for m in later] == [(4, False), (5, False)]
            assert client.stats.gaps_skipped == 1
            await p.send(msg(2, 1), msg(2, 1))  # arrives after all, twice
            late = await client.receive(5)
            assert (late.seq, late.late) == (2, True)
            await p.send(msg(6, 5))
            assert (await client.receive(5)).seq == 6  # the copy of 2 was not handed over
            every = {msg(n, 0)["id"] for n in (1, 2, 4, 5, 6)}
            await p.until(lambda: {a["id"] for a in p.sent_by_client("ack")} == every)

    run(main())


def test_frames_without_a_conversation_are_handed_over_at_once() -> None:
    async def main() -> None:
        async with peer() as p, DeliveryClient(p.url, "t") as client:
            old = {k: v for k, v in msg(9, 5).items()
                   if k not in ("conversation", "seq", "prev", "message")}
            await p.send(old)
            m = await client.receive(5)
            assert m.id == old["id"] and m.conversation is None and m.seq is None

    run(main())


def receipt(status: str, user: str = "carol", rid: str | None = None) -> dict[str, Any]:
    return {"type": "receipt", "id": rid or str(uuid.uuid4()), "message": "m-1",
            "conversation": "team", "seq": 3, "status": status, "user": user}


def test_receipts_go_to_the_handler_once_and_are_acked_after_it() -> None:
    async def main() -> None:
        seen: list[Receipt] = []

        async def on_receipt(r: Receipt) -> None:
            seen.append(r)

        async with peer() as p, DeliveryClient(p.url, "t", on_receipt=on_receipt):
            first = receipt("delivered")
            await p.send(first, receipt("read"))
            await p.until(lambda: len(p.sent_by_client("ack")) == 2)
            assert [(r.status, r.user, r.message, r.conversation) for r in seen] == [
                ("delivered", "carol", "m-1", "team"), ("read", "carol", "m-1", "team")]
            await p.send(first)  # a replay: acked again, not handed over again
            await p.until(lambda: len(p.sent_by_client("ack")) == 3)
            assert len(seen) == 2
            assert p.sent_by_client("ack")[-1]["id"] == first["id"]

    run(main())


def test_a_failing_receipt_handler_leaves_the_receipt_unacked() -> None:
    async def main() -> None:
        calls = []

        def on_receipt(r: Receipt) -> None:
            calls.append(r.id)
            raise RuntimeError("the application could not store it")

        async with peer() as p, DeliveryClient(p.url, "t", on_receipt=on_receipt) as client:
            await p.send(receipt("delivered"))
            await p.until(lambda: calls != [])
            await p.send(msg(1, 0))  # a frame after it is still handled
            await client.receive(5)
            await p.until(lambda: len(p.sent_by_client("ack")) == 1)
            assert p.sent_by_client("ack")[0]["id"] != calls[0]

    run(main())


def test_without_a_handler_receipts_are_acked_and_queued() -> None:
    async def main() -> None:
        async with peer() as p, DeliveryClient(p.url, "t") as client:
            coalesced = {"type": "receipt", "id": str(uuid.uuid4()), "message": "m-2",
                         "conversation": "town-hall", "seq": 17, "status": "delivered",
                         "count": 250, "of": 499}
            await p.send(coalesced)
            r = await client.receive_receipt(5)
            assert (r.status, r.user, r.frame["count"], r.frame["of"]) == (
                "delivered", None, 250, 499)
            await p.until(lambda: [a["id"] for a in p.sent_by_client("ack")] == [r.id])

    run(main())


def test_read_marks_are_sent_and_sent_again_after_a_reconnect() -> None:
    async def main() -> None:
        async with peer() as p:
            client = DeliveryClient(p.url, "t", backoff_initial_s=0.01)
            await client.connect()
            try:
                assert await client.mark_read("team", 3) is True
                await p.until(lambda: len(p.sent_by_client("read")) == 1)
                assert p.sent_by_client("read") == [
                    {"type": "read", "conversation": "team", "seq": 3}]
                # The connection drops: that mark may have been lost with it.
                await p.conns[-1].close(1011, "test")
                await p.until(lambda: len(p.conns) == 2 and client.connected)
                await p.until(lambda: len(p.sent_by_client("read")) == 2)
                assert p.sent_by_client("read")[-1]["seq"] == 3
                for bad in (0, -1, True):
                    try:
                        await client.mark_read("team", bad)
                    except ValueError:
                        continue
                    raise AssertionError(f"seq {bad!r} accepted")
            finally:
                await client.close()

    run(main())


def test_a_mark_made_while_disconnected_is_sent_after_the_next_welcome() -> None:
    async def main() -> None:
        async with peer() as p:
            client = DeliveryClient(p.url, "t", backoff_initial_s=0.5)
            await client.connect()
            try:
                await p.conns[-1].close(1011, "test")
                await p.until(lambda: not client.connected)
                assert await client.mark_read("team", 8) is False
                await p.until(lambda: len(p.sent_by_client("read")) == 1)
                assert p.sent_by_client("read")[0]["seq"] == 8
            finally:
                await client.close()

    run(main())
