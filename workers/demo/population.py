"""Who the demo plays and what it records: the plan, the simulated users (their clients, what
each was shown, the receipts their clients got) and the run's bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from delivery.client import DeliveryClient, Message, Receipt
from delivery.gateway.tokens import issue_token
from workers.demo.stack import Stack


@dataclass(frozen=True)
class Plan:
    """What the demo does: ``offline`` of the ``users`` are never online during traffic."""

    messages: int = 2000
    users: int = 40
    offline: int = 8
    rate: float = 100.0  # messages offered per second
    race_every: int = 50  # force the seed's race every N messages, at most once a second
    seed: int = 1
    group_sizes: tuple[int, ...] = (5, 8, 25)  # members of each group conversation
    group_messages: int = 200  # sent to the groups after the direct messages

    @property
    def names(self) -> list[str]:
        return [f"user-{i:03d}" for i in range(self.users)]

    @property
    def online_names(self) -> list[str]:
        return self.names[: self.users - self.offline]

    @property
    def offline_names(self) -> list[str]:
        return self.names[self.users - self.offline:]


@dataclass
class Population:
    """Simulated users: their live clients, what each was shown and when."""

    stack: Stack
    secret: str
    rng: random.Random
    clients: dict[str, DeliveryClient] = field(default_factory=dict)
    shown_at: dict[str, float] = field(default_factory=dict)
    wire_duplicates: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Conversations: the highest seq each user was shown (an app keeps it, so a new client
    # continues the order), the group seqs shown in order shown (late ones flagged), and the
    # receipts the senders' clients got (status -> message -> users, or the best count).
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    shown_seqs: dict[tuple[str, str], list[tuple[int, bool]]] = field(default_factory=dict)
    receipts: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    receipt_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    receipt_frames: Counter[str] = field(default_factory=Counter)

    async def connect(self, user: str, gateway: str | None = None) -> DeliveryClient:
        gateway = gateway or self.rng.choice(self.stack.gateway_names)
        client = DeliveryClient(self.stack.url(gateway), issue_token(user, self.secret, 3600),
                                reconnect=False, on_receipt=self._on_receipt)
        for (who, conversation), seq in self.last_seq.items():
            if who == user:
                client.resume_conversation(conversation, seq)
        await client.connect()
        self.clients[user] = client
        task = asyncio.create_task(self._drain(client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return client

    async def _drain(self, client: DeliveryClient) -> None:
        with contextlib.suppress(Exception):
            async for m in client:
                if m.id in self.shown_at:
                    self.wire_duplicates += 1  # a replay of a frame another connection showed
                else:
                    self.shown_at[m.id] = time.monotonic()
                    await self._shown_in_conversation(client, m)

    async def _shown_in_conversation(self, client: DeliveryClient, m: Message) -> None:
        if m.conversation is None or m.seq is None or client.user is None:
            return
        key = (client.user, m.conversation)
        self.last_seq[key] = max(m.seq, self.last_seq.get(key, 0))
        if not m.conversation.startswith("dm:"):  # a group: receipts go to its senders
            self.shown_seqs.setdefault(key, []).append((m.seq, m.late))
            await client.mark_read(m.conversation, m.seq)  # the conversation is on screen

    def _on_receipt(self, r: Receipt) -> None:
        self.receipt_frames[r.status] += 1
        if r.message is None:
            return
        if r.user is not None:
            self.receipts.setdefault(r.status, {}).setdefault(r.message, set()).add(r.user)
        count = r.frame.get("count")
        if isinstance(count, int):
            best = self.receipt_counts.setdefault(r.status, {})
            best[r.message] = max(best.get(r.message, 0), count)

    async def disconnect(self, user: str) -> None:
        client = self.clients.pop(user, None)
        if client is not None:
            await client.close()

    async def close_all(self) -> None:
        for user in list(self.clients):
            await self.disconnect(user)


@dataclass
class Run:
    """What the traffic did: each message id -> recipient, send time, recipient online."""

    started: float = field(default_factory=time.monotonic)
    sent: dict[str, tuple[str, float, bool]] = field(default_factory=dict)
    races: int = 0
    reconnects: int = 0
    # Set by the drain: states when traffic settled, and what was shown before the replay.
    settled: Counter[str] = field(default_factory=Counter)
    shown_during_traffic: set[str] = field(default_factory=set)
    # Group messages: message id -> (sender, conversation, recipients), and each recipient's
    # delivery id -> (message id, recipient); the groups as (conversation, members).
    groups: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    deliveries: dict[str, tuple[str, str]] = field(default_factory=dict)
    conversations: list[tuple[str, int]] = field(default_factory=list)
