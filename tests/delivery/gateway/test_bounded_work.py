"""Bounded work per user on a gateway: a connection limit per user (oldest closed with 4008),
and a frame whose connection closes is kept, redirected a bounded number of times, or nacked -
never redirected once per remaining connection."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from delivery.gateway import GatewayConfig
from delivery.gateway import protocol as p
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, recv_messages, run


def test_connections_beyond_the_limit_close_the_oldest_with_4008(sqlite_store: Store) -> None:
    # The fault: no limit; one user held 2,000 sockets. Traffic: 5 connections, limit 3.
    async def main() -> None:
        cfg = GatewayConfig(replay_tail_s=0, max_conns_per_user=3)
        async with gateway_harness(sqlite_store, cfg) as h:
            clients = [await h.client("mallory") for _ in range(5)]
            other, _ = await h.client("ursula")  # another user is not counted
            for ws, _w in clients[:2]:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == p.CLOSE_TOO_MANY_CONNECTIONS
            alive = {w["conn"] for _, w in clients[2:]}
            assert set(h.gateway.by_user["mallory"]) == alive
            await h.wait_presence("mallory", alive)
            assert h.gateway.stats["evicted"] == 2 and "ursula" in h.gateway.by_user
            for ws, _ in clients[2:]:
                await ws.close()
            await other.close()

    run(main())


def test_closing_connections_one_by_one_keeps_the_frame_where_it_is(sqlite_store: Store) -> None:
    # The fault: N never-acking connections closing one by one redirected every frame to the
    # remaining ones each time (N² attempt rows). Traffic: 8 connections get one frame, never
    # ack, close one by one. What must hold: one row per target, each closed as nacked; no
    # redirect rows; one nack to routing, when the last one closes.
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            clients = [await h.client("mallory") for _ in range(8)]
            conns = [w["conn"] for _, w in clients]
            msg = h.accept("mallory")
            h.deliver(msg, conns)
            for ws, _ in clients:
                await recv_messages(ws, 1)
            for ws, _ in clients:
                await ws.close()
            await h.wait_for(lambda: len(h.nacks) == 1)
            await h.wait_db(lambda: all(r.finished_at is not None
                                        for r in sqlite_store.attempts_of(msg.id)))
            rows = sqlite_store.attempts_of(msg.id)
            assert len(rows) == len(conns)
            assert {r.result for r in rows} == {"nacked"}
            assert h.gateway.stats["redirects"] == 0

    run(main())


def test_a_redirected_frame_carries_its_hop_count(sqlite_store: Store) -> None:
    # The budget itself is decide_reroute's (tests/delivery/routing/test_policy.py); here: a
    # redirect counts against the frame it moves, so the budget holds across connections.
    async def main() -> None:
        async with gateway_harness(sqlite_store, GatewayConfig(replay_tail_s=0)) as h:
            a, wa = await h.client("bob")
            b, wb = await h.client("bob")
            await a.close()
            await h.wait_for(lambda: wa["conn"] not in h.gateway.conns)
            msg = h.accept("bob")
            h.deliver(msg, [wa["conn"]])  # stale presence: the frame is for the gone one
            await recv_messages(b, 1)
            live = h.gateway.conns[wb["conn"]].in_flight[str(msg.id)]
            assert live is not None and live.hops == 1
            assert h.gateway.stats["redirects"] == 1
            await b.close()  # nobody else here: back to routing
            await h.wait_for(lambda: len(h.nacks) == 1)
            assert h.nacks[0]["nacked"] == [wb["conn"]]

    run(main())
