"""Steady traffic as a chat application makes it: a producer calling ``send_message`` with its
default arguments, and WebSocket clients (one per user) that reconnect and are restarted.

An id counts as *given* only when ``send_message`` returned it; an exception means the message
was not accepted (the application knows, and may retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.soak.checker import Given, Shown
from delivery.api import send_message
from delivery.client import DeliveryClient, Message
from delivery.gateway.tokens import issue_token

log = logging.getLogger("bench.soak")
Clock = Callable[[], float]


@dataclass
class Traffic:
    run_id: str
    gateway_urls: Sequence[str]
    secret: str
    users: int
    rate: float
    clock: Clock = time.monotonic
    churn_s: float = 5.0
    given: dict[str, Given] = field(default_factory=dict)
    shown: list[Shown] = field(default_factory=list)
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    clients: dict[str, DeliveryClient] = field(default_factory=dict)
    restarts: int = 0
    _instances: itertools.count[int] = field(default_factory=itertools.count)
    _drains: set[asyncio.Task[None]] = field(default_factory=set)
    dedupe_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="soak-seen-"))

    @property
    def user_ids(self) -> list[str]:
        return [f"soak-{self.run_id}-u{i:02d}" for i in range(self.users)]

    def _url_for(self, index: int) -> str:
        return self.gateway_urls[index % len(self.gateway_urls)]

    # -- clients ------------------------------------------------------------------------------

    async def open_client(self, index: int) -> None:
        user = self.user_ids[index]
        # Each user's seen ids live in a file that outlives a client instance (an app restart
        # keeps its dedupe store, as a real app given ``dedupe_path`` does).
        c = DeliveryClient(self._url_for(index), issue_token(user, self.secret, 24 * 3600),
                           backoff_initial_s=0.1, backoff_max_s=1.0,
                           dedupe_path=os.path.join(self.dedupe_dir, f"{user}.sqlite3"))
        self.clients[user] = c
        instance = next(self._instances)
        task = asyncio.create_task(self._drain(user, c, instance))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)
        # A gateway that is down right now: the client keeps trying on its own.
        with contextlib.suppress(TimeoutError, OSError):
            await c.connect(timeout=10.0)

    async def _drain(self, user: str, c: DeliveryClient, instance: int) -> None:
        def show(m: Message) -> None:  # the handler "shows" it; then the client records + acks
            self.shown.append(Shown(m.id, user, self.clock(), instance))

        with contextlib.suppress(Exception):
            await c.run(show)

    async def connect_all(self) -> None:
        await asyncio.gather(*(self.open_client(i) for i in range(self.users)))

    async def churn(self, stop: asyncio.Event) -> None:
        """Restart one client every ``churn_s`` (an app restart or a page reload)."""
        for i in itertools.cycle(range(self.users)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.churn_s)
            if stop.is_set():
                return
            await self.clients[self.user_ids[i]].close()
            self.restarts += 1
            await self.open_client(i)

    def connected_users(self) -> frozenset[str]:
        return frozenset(u for u, c in self.clients.items() if c.connected)

    async def wait_all_connected(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        while self.clock() < deadline and len(self.connected_users()) < self.users:
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()),
                             return_exceptions=True)
        shutil.rmtree(self.dedupe_dir, ignore_errors=True)

    # -- the producer -------------------------------------------------------------------------

    def _send_one(self, n: int) -> str | Exception:
        """Runs in a thread (the send blocks); the loop records the outcome."""
        user = self.user_ids[n % self.users]
        try:
            # Default arguments, as the README shows a chat application calling it.
            return send_message(f"soak-{self.run_id}-sender", user, {"n": n},
                                client_msg_id=f"{self.run_id}-{n}")
        except Exception as exc:  # any error means "not accepted"
            return exc

    def _record(self, n: int, result: str | Exception) -> None:
        if isinstance(result, Exception):
            self.refused += 1
            key = type(result).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
        else:
            self.given[result] = Given(self.user_ids[n % self.users], self.clock())

    async def produce(self, minimum: int, stop: asyncio.Event) -> int:
        """Send at ``rate`` until ``stop`` is set and at least ``minimum`` were tried."""
        n = 0
        base = self.clock()
        while n < minimum or not stop.is_set():
            self._record(n, await asyncio.to_thread(self._send_one, n))
            n += 1
            due = base + n / self.rate
            now = self.clock()
            if now - due > 1.0:  # fell behind (a blocked send): do not burst to catch up
                base, due = now - n / self.rate, now
            await asyncio.sleep(max(0.0, due - now))
        return n

    def missing(self) -> int:
        seen = {s.msg_id for s in self.shown}
        return sum(1 for m in self.given if m not in seen)
