"""A group message through a real gateway (real sockets, real presence, the store on SQLite and
PostgreSQL): one PUBLISH per node, frames with their place, receipts to the sender, acked and
replayed like messages, and read receipts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection

from delivery.clock import utcnow
from delivery.conversations.requests import validate_group_send
from delivery.routing.policy import PolicyConfig
from delivery.routing.router import Router
from delivery.store import Store
from tests.delivery.gateway.conftest import Harness, gateway_harness, recv_json, run


def ack(frame: dict[str, Any]) -> str:
    return json.dumps({"type": "ack", "id": frame["id"]})


def _router(h: Harness) -> Router:
    return Router(h.store, h.replica, h.channels,
                  PolicyConfig(ack_timeout_s=5.0, max_attempts=2, retry_backoff_s=0.1,
                               offline_grace_s=0.2),
                  enqueue_push=lambda m, a: None, schedule_recheck=lambda m, a, d, r: None)


async def _next(ws: ClientConnection, ftype: str) -> dict[str, Any]:
    while True:
        f = await recv_json(ws)
        if f["type"] == ftype:
            return f


def test_a_group_message_reaches_each_member_and_its_receipts_reach_the_sender(
        store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(store) as h:
            published: list[dict[str, Any]] = []
            h.channels.subscribe(h.gateway.node, published.append)
            store.create_conversation("team", ["alice", "bob", "carol"], now=utcnow(),
                                      limit=10)
            alice, _ = await h.client("alice")
            bob, wb = await h.client("bob")
            carol, wc = await h.client("carol")
            await h.wait_presence("bob", {wb["conn"]})
            await h.wait_presence("carol", {wc["conn"]})
            req = validate_group_send("alice", "team", {"text": "hi all"}, "m1",
                                      max_body_bytes=4096, default_ttl_s=600)
            await asyncio.to_thread(_router(h).accept_and_route_group, req)
            got_b, got_c = await _next(bob, "message"), await _next(carol, "message")
            assert [f["type"] for f in published] == ["deliver_batch"]  # one PUBLISH
            for got in (got_b, got_c):
                assert (got["conversation"], got["seq"], got["prev"], got["message"],
                        got["from"], got["body"]) == (
                    "team", 1, 0, str(req.message_id), "alice", {"text": "hi all"})
            assert got_b["id"] != got_c["id"]
            await bob.send(ack(got_b))
            r1 = await _next(alice, "receipt")
            assert (r1["status"], r1["user"], r1["message"], r1["seq"]) == (
                "delivered", "bob", str(req.message_id), 1)
            await alice.send(ack(r1))
            # carol acks and reads while alice is away: replayed on her next connection
            await h.wait_db(lambda: h.store.count_by_state().get("delivered") == 2)
            await alice.close()
            await carol.send(ack(got_c))
            await carol.send('{"type":"read","conversation":"team","seq":1}')
            await h.wait_db(lambda: h.store.count_by_state().get("pending") == 2)
            alice, _ = await h.client("alice")
            later = [await _next(alice, "receipt"), await _next(alice, "receipt")]
            assert sorted((r["status"], r["user"]) for r in later) == [
                ("delivered", "carol"), ("read", "carol")]
            for r in later:
                await alice.send(ack(r))
            await h.wait_db(lambda: h.store.count_by_state() == {"delivered": 5})
            for ws in (alice, bob, carol):
                await ws.close()

    run(main())


def test_a_read_frame_with_bad_fields_gets_an_error_and_changes_nothing(store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(store) as h:
            ws, _ = await h.client("bob")
            for bad in ('{"type":"read","conversation":"team"}',
                        '{"type":"read","conversation":"team","seq":0}',
                        '{"type":"read","conversation":"","seq":1}',
                        '{"type":"read","conversation":"t","seq":true}'):
                await ws.send(bad)
                err = await recv_json(ws)
                assert (err["type"], err["code"], err["ref"]) == ("error", "invalid_frame",
                                                                  "read")
            await ws.send('{"type":"read","conversation":"nope","seq":3}')  # no error
            await ws.send('{"type":"ping"}')
            assert (await recv_json(ws))["type"] == "pong"
            await ws.close()

    run(main())


def test_direct_receipts_reach_the_sender_when_turned_on(store: Store) -> None:
    """DELIVERY_DIRECT_RECEIPTS=1: bob acks alice's direct message, then reads it; alice's
    connection receives a ``delivered`` and a ``read`` receipt naming the message."""
    from delivery.settings import Settings
    from delivery.validation import validate_send
    from tests.delivery.gateway.conftest import SECRET

    async def main() -> None:
        async with gateway_harness(store, settings=Settings(secret=SECRET,
                                                            direct_receipts=1)) as h:
            alice, _ = await h.client("alice")
            bob, wb = await h.client("bob")
            await h.wait_presence("bob", {wb["conn"]})
            req = validate_send("alice", "bob", {"text": "hi"}, "d1", max_body_bytes=4096,
                                default_ttl_s=600)
            msg = await asyncio.to_thread(_router(h).accept_and_route, req)
            got = await _next(bob, "message")
            assert (got["id"], got["message"], got["seq"]) == (str(msg.id), str(msg.id), 1)
            await bob.send(ack(got))
            r1 = await _next(alice, "receipt")
            assert (r1["status"], r1["user"], r1["message"], r1["conversation"]) == (
                "delivered", "bob", str(msg.id), got["conversation"])
            await alice.send(ack(r1))
            await bob.send(json.dumps({"type": "read", "conversation": got["conversation"],
                                       "seq": 1}))
            r2 = await _next(alice, "receipt")
            assert (r2["status"], r2["user"], r2["message"]) == ("read", "bob", str(msg.id))
            await alice.send(ack(r2))
            for ws in (alice, bob):
                await ws.close()

    run(main())
