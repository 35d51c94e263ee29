"""Steady traffic to online clients, and the checks every failure test ends with."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from celery import Celery

from delivery.api import SendNotAccepted, send_message
from delivery.client import DeliveryClient
from delivery.clock import utcnow
from delivery.push.stub import FcmStub
from delivery.store import Store
from tests.e2e.conftest import token
from workers.devkit.cluster import LocalCluster

USERS = 12


class Traffic:
    """USERS online clients (half of them with a push device) receiving a steady stream."""

    def __init__(self, cluster: LocalCluster, app: Celery, store: Store,
                 with_devices: bool = True, durable: bool | None = None) -> None:
        self.cluster, self.app, self.store = cluster, app, store
        self.with_devices = with_devices
        self.durable = durable
        self.users = [f"crash-{uuid.uuid4().hex[:6]}-{i}" for i in range(USERS)]
        self.clients: dict[str, DeliveryClient] = {}
        self.received: dict[str, Counter[str]] = {u: Counter() for u in self.users}
        self.sent: dict[str, str] = {}
        self.refused = 0  # sends that raised: never accepted, so never owed
        self.shown_at: dict[str, float] = {}  # message id -> monotonic time first shown

    async def connect(self) -> None:
        for i, u in enumerate(self.users):
            if self.with_devices and i % 2 == 0:
                self.store.register_device(u, f"tok-{u}", "android", utcnow())
            node = "gw-a" if i % 2 == 0 else "gw-b"
            c = DeliveryClient(self.cluster.gateways[node].url, token(u, self.cluster.env),
                               backoff_initial_s=0.05, backoff_max_s=0.5)
            await c.connect()
            self.clients[u] = c
            asyncio.get_running_loop().create_task(self._drain(u, c))

    async def _drain(self, u: str, c: DeliveryClient) -> None:
        async for m in c:
            self.received[u][m.id] += 1
            self.shown_at.setdefault(m.id, time.monotonic())

    async def send(self, n: int, rate: float) -> None:
        for i in range(n):
            u = self.users[i % USERS]
            try:
                msg_id = send_message("alice", u, {"text": f"m{i}"},
                                      client_msg_id=uuid.uuid4().hex, app=self.app,
                                      durable=self.durable,
                                      store=self.store if self.durable is not False else None)
            except SendNotAccepted:
                self.refused += 1
            else:
                self.sent[msg_id] = u
            await asyncio.sleep(1 / rate)

    async def run_with(
        self, n: int, rate: float, disrupt: Callable[[], Awaitable[None]],
        after_sending: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Connect, send ``n`` messages at ``rate``, ``disrupt`` one second in, optionally
        repair once sending is done, then wait for every message to be shown."""
        await self.connect()
        sending = asyncio.create_task(self.send(n, rate))
        await asyncio.sleep(1.0)
        await disrupt()
        await sending
        if after_sending is not None:
            await after_sending()
        await self.settle(40)
        await self.close()

    async def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.received[u][m] >= 1 for m, u in self.sent.items()):
                return
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

    def check(self, stub: FcmStub) -> None:
        missing = [m for m, u in self.sent.items() if self.received[u][m] == 0]
        states: Counter[str] = Counter()
        for m in self.sent:
            msg = self.store.get(uuid.UUID(m))
            assert msg is not None, f"message {m} was never stored"
            states[msg.state] += 1
            acked = [a for a in self.store.attempts_of(msg.id) if a.result == "acked"]
            assert len(acked) <= 1, f"{m} has two outcomes: {acked}"
        assert not missing, f"{len(missing)} messages never shown; states {states}"
        pushes = Counter(r["body"]["message"]["data"]["message_id"] for r in stub.requests
                         if r["answer"] == "OK")
        assert all(n == 1 for n in pushes.values()), f"pushed twice: {pushes.most_common(3)}"
        # Every message shown on a client is acked: the store must agree.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and states.get("delivered", 0) < len(self.sent):
            time.sleep(0.2)
            states = Counter(self.store.get(uuid.UUID(m)).state for m in self.sent)  # type: ignore[union-attr]
        assert states == {"delivered": len(self.sent)}, states
