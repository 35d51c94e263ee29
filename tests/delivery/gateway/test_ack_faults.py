"""The gateway under faults of what it writes to and listens on: a database outage while
acks arrive, an ack write that was lost, and a node channel whose Redis restarts while the
clients stay connected."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from delivery.channels import RedisChannels
from delivery.gateway import Gateway, GatewayConfig
from delivery.models import State
from delivery.runtime import Runtime
from delivery.settings import Settings
from delivery.store import Store
from tests.delivery.gateway.conftest import (
    SECRET,
    WORKER,
    gateway_harness,
    presence_nodes,
    recv_messages,
    run,
)
from workers.devkit.services import PrivateRedis, allow_connections, refuse_connections


def test_an_ack_batch_that_fails_is_retried_until_recorded(
    own_pg: tuple[str, Store],
) -> None:
    """Fault: the database refuses connections while a client acks. Must hold: the ack is
    kept and recorded once the database is back (before: logged and dropped)."""
    url, store = own_pg

    async def main() -> None:
        async with gateway_harness(store, GatewayConfig(replay_tail_s=0,
                                                        ack_retry_max_s=0.3)) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob", {"text": "hello"})
            h.deliver(msg, [w["conn"]])
            (frame,) = await recv_messages(ws, 1)
            refuse_connections(url)
            try:
                await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
                await h.wait_for(lambda: h.gateway.stats["ack_retries"] >= 2, timeout=15)
            finally:
                allow_connections(url)
            await h.wait_db(
                lambda: store.get(msg.id).state == State.DELIVERED,  # type: ignore[union-attr]
                timeout=15)
            await ws.close()

    run(main())


def test_a_resent_copy_of_an_acked_message_is_acked_again(sqlite_store: Store) -> None:
    """Fault: the store lost this connection's ack (the message is in flight again). Must
    hold: the re-sent copy is not swallowed by the gateway's recently-acked set; the ack is
    written again, so the message ends delivered while the client stays connected."""

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob", {"text": "once"})
            h.deliver(msg, [w["conn"]])
            (frame,) = await recv_messages(ws, 1)
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
            await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            # The ack's write is undone: as if its batch had been lost.
            assert sqlite_store.transition(msg.id, [State.DELIVERED], State.DISPATCHED)
            h.deliver(msg, [w["conn"]])  # routing re-sends (attempt 2)
            await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            await ws.close()

    run(main())


def test_a_node_channel_back_from_a_redis_restart_replays_what_was_missed(
    sqlite_store: Store, tmp_path: Path,
) -> None:
    """Fault: the gateway's Redis (node channel) is down for a second while its client stays
    connected; meanwhile routing found no gateway subscribed and left a message pending.
    Must hold: once the channel is back the gateway replays it to the open connection
    (before: nothing replays to a connection that stays open; the message stayed pending)."""
    redis_server = PrivateRedis(str(tmp_path), appendonly=False)
    redis_server.start()
    prefix = f"gwfault-{uuid.uuid4().hex[:6]}"

    async def main() -> None:
        from tests.delivery.gateway.conftest import Harness, PresenceEvents

        runtime = Runtime(settings=Settings(secret=SECRET), store=sqlite_store)
        channels = RedisChannels(redis_server.url, prefix)
        with presence_nodes("gw1", WORKER) as (presence, replica):
            gw = Gateway("gw1", runtime, GatewayConfig(replay_tail_s=0), presence=presence,
                         channels=channels)
            h = Harness(gw, sqlite_store, None, presence, replica, runtime,  # type: ignore[arg-type]
                        PresenceEvents(presence), PresenceEvents(replica))
            await gw.start("127.0.0.1", 0)
            try:
                ws, _ = await h.client("bob")
                redis_server.restart(down_s=1.0)
                msg = h.accept("bob", {"text": "while the channel was down"})
                assert sqlite_store.transition(msg.id, [State.ACCEPTED], State.PENDING)
                (frame,) = await recv_messages(ws, 1, timeout=20)
                assert frame["id"] == str(msg.id)
                await ws.close()
            finally:
                await gw.stop()

    try:
        run(main())
    finally:
        redis_server.stop()


def test_an_owed_notice_replays_to_a_connection_presence_did_not_show(
    sqlite_store: Store,
) -> None:
    """Fault: a worker's presence view is stale (delayed or cut link) and it left a message
    pending for a user who is in fact connected here. Must hold: routing's owed notice on the
    broadcast channel makes this gateway replay it to the open connection at once."""
    from delivery.channels import BROADCAST
    from delivery.gateway.protocol import owed_frame

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, _ = await h.client("bob")
            msg = h.accept("bob", {"text": "presence said offline"})
            assert sqlite_store.transition(msg.id, [State.ACCEPTED], State.PENDING)
            h.channels.publish(BROADCAST, owed_frame("bob"))
            h.channels.publish(BROADCAST, owed_frame("nobody-here"))  # ignored
            (frame,) = await recv_messages(ws, 1)
            assert frame["id"] == str(msg.id)
            await ws.close()

    run(main())
