"""Helpers for gateway tests: an in-process gateway on a real socket, with a store, real presence
(the gateway's :class:`~presence.runtime.PresenceNode` and a second node on the same in-process
network, standing for a worker's replica) and a routing side that stores messages and publishes
``deliver`` frames like routing does."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from delivery.channels import MemoryChannels
from delivery.clock import utcnow
from delivery.gateway import Gateway, GatewayConfig, issue_token
from delivery.runtime import Runtime
from delivery.settings import Settings
from delivery.store import MessageRecord, Store, Target
from presence.runtime import MemoryNetwork, Presence, PresenceConfig, PresenceNode
from tests.support.waiting import until
from workers.devkit.services import RUN_SECRET

SECRET = RUN_SECRET  # random per run
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


# Fast timers: a change reaches the other node within a few milliseconds.
PRESENCE_CONFIG = PresenceConfig(heartbeat_s=0.02, down_s=0.5, purge_s=2.0, batch_s=0.001)
WORKER = "worker-replica"


class PresenceEvents:
    """Every join and leave a presence node reports (its ``subscribe`` callback)."""

    def __init__(self, node: PresenceNode) -> None:
        self.log: list[tuple[str, str, str]] = []  # ("join" | "leave", user, conn)
        node.subscribe(self._on_diff)

    def _on_diff(self, joins: list[Presence], leaves: list[Presence]) -> None:
        self.log.extend(("leave", p.key, p.conn) for p in leaves)
        self.log.extend(("join", p.key, p.conn) for p in joins)


@contextmanager
def presence_nodes(*names: str) -> Iterator[list[PresenceNode]]:
    """Started presence nodes on one in-process network; stopped (gracefully) afterwards."""
    net = MemoryNetwork()
    nodes = [PresenceNode(name, net, PRESENCE_CONFIG) for name in names]
    for node in nodes:
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@dataclass
class Harness:
    gateway: Gateway
    store: Store
    channels: MemoryChannels
    presence: PresenceNode  # the gateway's own replica
    replica: PresenceNode  # another node of the cluster (a worker's replica)
    runtime: Runtime
    gw_events: PresenceEvents
    worker_events: PresenceEvents
    nacks: list[dict[str, Any]] = field(default_factory=list)
    acks: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    def token(self, user: str, ttl: float = 600) -> str:
        return issue_token(user, SECRET, ttl)

    def accept(self, recipient: str, body: Any = "hi", sender: str = "alice") -> MessageRecord:
        now = utcnow()
        msg, _ = self.store.accept(
            message_id=uuid.uuid4(), sender=sender, recipient=recipient, body=body,
            client_msg_id=None, now=now, ttl_s=3600, deadline=now + timedelta(seconds=60))
        return msg

    def deliver(self, msg: MessageRecord, conns: list[str], node: str | None = None) -> int:
        """Like routing: claim an attempt with these targets, publish the frame to the node."""
        node = node or self.gateway.node
        current = self.store.get(msg.id)
        assert current is not None
        now = utcnow()
        attempt = self.store.start_attempt(
            current, channel="ws", targets=[Target(node, c) for c in conns], now=now,
            deadline=now + timedelta(seconds=60))
        assert attempt is not None
        self.channels.publish(node, {
            "type": "deliver", "id": str(msg.id), "user": msg.recipient, "from": msg.sender,
            "body": msg.body, "sent_at": msg.created_at.isoformat(), "seq": msg.seq,
            "conns": conns, "attempt": attempt})
        return attempt

    async def client(self, user: str, **kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
        """A raw socket that said hello; returns it and the welcome frame."""
        ws = await connect(self.url, compression=None, **kw)
        await ws.send(json.dumps({"type": "hello", "token": self.token(user)}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome", welcome
        return ws, welcome

    def conns_seen(self, user: str, node: PresenceNode | None = None) -> set[str]:
        """Connections of ``user`` that a presence node lists (default: the worker's)."""
        return {p.conn for p in (node or self.replica).list(user)}

    def seen_everywhere(self, user: str, conns: set[str]) -> bool:
        return (self.conns_seen(user, self.presence) == conns
                and self.conns_seen(user, self.replica) == conns)

    async def wait_presence(self, user: str, conns: set[str], timeout: float = 5.0) -> None:
        """Until the gateway's node and the worker's replica both list exactly ``conns``."""
        try:
            await self.wait_for(lambda: self.seen_everywhere(user, conns), timeout)
        except TimeoutError:
            raise AssertionError(
                f"presence of {user!r}: gateway node {self.conns_seen(user, self.presence)}, "
                f"worker {self.conns_seen(user)}, want {conns}") from None

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        await until(cond, timeout)

    async def wait_db(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(cond):
            if loop.time() > deadline:
                raise TimeoutError("condition not met")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def gateway_harness(
    store: Store, config: GatewayConfig | None = None, node: str = "gw1",
    settings: Settings | None = None,
) -> AsyncIterator[Harness]:
    settings = settings or Settings(secret=SECRET)
    runtime = Runtime(settings=settings, store=store)
    channels = MemoryChannels()
    with presence_nodes(node, WORKER) as (presence, replica):
        gw = Gateway(node, runtime, config or GatewayConfig(replay_tail_s=0),
                     presence=presence, channels=channels)
        h = Harness(gw, store, channels, presence, replica, runtime,
                    PresenceEvents(presence), PresenceEvents(replica))
        runtime.hooks.nack_handler = lambda **kw: h.nacks.append(kw)
        runtime.hooks.on_ack = lambda m, c, w: h.acks.append((m, c, w))
        await gw.start("127.0.0.1", 0)
        try:
            # Routing decides "wait" until the worker's replica has synced with the gateway's:
            # a test that routes at once would race it.
            await h.wait_for(lambda: replica.synced and presence.synced)
            yield h
        finally:
            await gw.stop()


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def recv_messages(ws: ClientConnection, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        f = await recv_json(ws, timeout)
        if f["type"] == "message":
            out.append(f)
    return out
