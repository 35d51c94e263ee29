"""``delivery demo``: the whole pipeline with simulated clients, the seed's race forced on
purpose, a live progress line and a final report. Exit status 0 only when nothing was lost.

After the direct messages, group conversations (``--group-sizes``, default 5, 8 and 25
members, online and offline members mixed) get ``--group-messages`` messages from online
members: every member's client shows them in seq order and marks them read, and each sender's
client collects the delivery and read receipts. Lost is counted per recipient.

Embedded (default): one process — SQLite, the in-process broker and presence network, two
gateways, a worker, the FCM stub. With DELIVERY_REDIS_URL and DELIVERY_DATABASE_URL set: the
same demo against Redis and PostgreSQL, with gateways, workers and the FCM stub as separate
processes (the roles an operator runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from delivery.api import create_conversation
from delivery.client import DeliveryClient, Message, Receipt
from delivery.clock import utcnow
from delivery.conversations.ids import delivery_id
from delivery.gateway.tokens import issue_token
from delivery.settings import Settings, get_settings
from delivery.stats import nearest_rank
from delivery.store import Store
from delivery.vocabulary import State


class Stack(Protocol):
    """What the demo needs from the embedded stack or the process cluster."""

    @property
    def store(self) -> Store: ...
    @property
    def gateway_names(self) -> tuple[str, ...]: ...

    def url(self, gateway: str) -> str: ...
    def hold_presence(self, seconds: float) -> None: ...
    def send(self, sender: str, recipient: str, body: Any, client_msg_id: str) -> str: ...
    def send_group(self, sender: str, conversation: str, body: Any,
                   client_msg_id: str) -> str: ...


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
    # Group conversations: seqs each member was shown, in the order shown (late ones flagged),
    # and the receipts each sender's clients got (status -> message -> users or best count).
    shown_seqs: dict[tuple[str, str], list[tuple[int, bool]]] = field(default_factory=dict)
    receipts: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    receipt_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    receipt_frames: Counter[str] = field(default_factory=Counter)
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)  # shown, per conversation

    async def connect(self, user: str, gateway: str | None = None) -> DeliveryClient:
        gateway = gateway or self.rng.choice(self.stack.gateway_names)
        client = DeliveryClient(self.stack.url(gateway), issue_token(user, self.secret, 3600),
                                reconnect=False, on_receipt=self._on_receipt)
        # What this user was shown before, as an app keeps it: order continues from there.
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
                    if m.conversation is not None and m.seq is not None and client.user:
                        key = (client.user, m.conversation)
                        self.last_seq[key] = max(m.seq, self.last_seq.get(key, 0))
                    if m.conversation is not None and not m.conversation.startswith("dm:"):
                        await self._shown_in_group(client, m)

    async def _shown_in_group(self, client: DeliveryClient, m: Message) -> None:
        assert m.conversation is not None and m.seq is not None and client.user is not None
        self.shown_seqs.setdefault((client.user, m.conversation), []).append((m.seq, m.late))
        await client.mark_read(m.conversation, m.seq)  # the conversation is open on screen

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
    sent: dict[str, tuple[str, float, bool]] = field(default_factory=dict)  # id -> user, t, online
    races: int = 0
    reconnects: int = 0
    # Group messages: message id -> (sender, conversation, recipients), and each recipient's
    # delivery id -> (message id, recipient).
    groups: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    deliveries: dict[str, tuple[str, str]] = field(default_factory=dict)


async def drive(stack: Stack, settings: Settings, *, messages: int, users: int, offline: int,
                rate: float, race_every: int, seed: int, progress: bool,
                group_sizes: tuple[int, ...] = (), group_messages: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [f"user-{i:03d}" for i in range(users)]
    online_names, offline_names = names[: users - offline], names[users - offline:]
    now = utcnow()
    for i, user in enumerate(offline_names):  # half of the offline users have a phone
        if i % 2 == 0:
            await asyncio.to_thread(stack.store.register_device, user, f"fcm-{user}",
                                    "android", now)
    pop = Population(stack, settings.effective_secret, rng)
    for user in online_names:
        await pop.connect(user)
    await asyncio.sleep(max(0.5, settings.presence_heartbeat_s * 3))  # let presence converge
    run = Run()
    started = time.monotonic()
    last_race = 0.0
    last_print = 0.0
    for i in range(messages):
        recipient = rng.choice(names)
        # Races at least a second apart, so one hold heals before the next (overlapping holds
        # would keep the worker's view stale for good, a different scenario from the seed's).
        if (race_every and i % race_every == race_every - 1 and online_names
                and time.monotonic() - last_race >= 1.0):
            last_race = time.monotonic()
            # The seed's race: the worker's view lags while the user reconnects, then a
            # message is sent to them at once.
            recipient = rng.choice(online_names)
            stack.hold_presence(0.6)
            await pop.disconnect(recipient)
            await pop.connect(recipient, rng.choice(stack.gateway_names))
            run.races += 1
        elif rng.random() < 0.01 and online_names:
            churner = rng.choice(online_names)
            await pop.disconnect(churner)
            await pop.connect(churner)
            run.reconnects += 1
        msg_id = stack.send("demo-sender", recipient, {"text": f"message {i}", "n": i},
                            f"demo-{seed}-{i}")
        run.sent[msg_id] = (recipient, time.monotonic(), recipient in pop.clients)
        await asyncio.sleep(1 / rate)
        if progress and time.monotonic() - last_print > 0.25:
            last_print = time.monotonic()
            _progress(i + 1, messages, len(pop.shown_at), started)
    group_info = await _group_traffic(stack, pop, run, names, online_names, offline_names,
                                      group_sizes, group_messages, rate, seed)
    # Let routing finish: ack deadlines, re-checks and pushes settle.
    settle_deadline = time.monotonic() + settings.ack_timeout_s * (settings.max_attempts + 2) + 5
    while time.monotonic() < settle_deadline:
        states = await _outcomes(stack.store, run)
        if states.get(State.ACCEPTED, 0) + states.get(State.DISPATCHED, 0) == 0:
            break
        if progress:
            _progress(messages, messages, len(pop.shown_at), started, " settling")
        await asyncio.sleep(0.25)
    outcomes = await _outcomes(stack.store, run)
    shown_during_traffic = {m for m in run.sent if m in pop.shown_at}
    # Final phase: every user reconnects once and receives what it has not acked.
    await pop.close_all()
    for user in names:
        await pop.connect(user)
    final_deadline = time.monotonic() + 15
    while time.monotonic() < final_deadline and any(
            m not in pop.shown_at for m in (*run.sent, *run.deliveries)):
        await asyncio.sleep(0.1)
    # Every shown message was acked by its client; wait (bounded) until the store agrees.
    ack_deadline = time.monotonic() + 20
    while time.monotonic() < ack_deadline:
        states = await _outcomes(stack.store, run)
        if sum(n for s, n in states.items() if s != State.DELIVERED) == 0:
            break
        await asyncio.sleep(0.2)
    # Receipts of the last reads are replayed to the senders on this connection too.
    await _settle_receipts(pop, run)
    await pop.close_all()
    if progress:
        print(file=sys.stderr)
    lost = [m for m in run.sent if m not in pop.shown_at]
    latencies = sorted((pop.shown_at[m] - t) * 1000 for m, (_, t, online) in run.sent.items()
                       if online and m in shown_during_traffic)
    final_states = dict(await _outcomes(stack.store, run))
    duplicates = await asyncio.to_thread(
        stack.store.duplicate_outcomes, [uuid.UUID(m) for m in run.sent])
    return {
        "messages": len(run.sent),
        "delivered_ws": outcomes.get(State.DELIVERED, 0),
        "pushed": outcomes.get(State.PUSHED, 0),
        "pending": outcomes.get(State.PENDING, 0),
        "expired": outcomes.get(State.EXPIRED, 0),
        "in_flight_at_end": outcomes.get(State.ACCEPTED, 0) + outcomes.get(State.DISPATCHED, 0),
        "replayed_in_final_phase": len(run.sent) - len(shown_during_traffic),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "duplicate_frames": pop.wire_duplicates,
        "duplicate_outcomes": duplicates["acked_twice"],
        "duplicate_pushes": duplicates["pushed_twice"],
        "forced_races": run.races,
        "reconnects": run.reconnects,
        "final_states": final_states,
        "latency_ms": _percentiles(latencies),
        "groups": await _group_report(stack, pop, run, group_info),
        "elapsed_s": round(time.monotonic() - started, 2),
    }


async def _group_traffic(stack: Stack, pop: Population, run: Run, names: list[str],
                         online: list[str], offline: list[str], sizes: tuple[int, ...],
                         count: int, rate: float, seed: int) -> list[tuple[str, int]]:
    """Create the groups (online and offline members mixed) and send ``count`` messages from
    online members, round robin over the groups. Returns (conversation, size) per group."""
    groups: list[tuple[str, list[str]]] = []
    for i, size in enumerate(sizes):
        size = min(size, len(names))
        if size < 2 or not online:
            continue
        n_off = min(len(offline), size // 4)
        members = pop.rng.sample(offline, n_off) + pop.rng.sample(
            [u for u in names if u not in offline], min(size - n_off, len(names) - len(offline)))
        if len(members) < 2:
            continue
        conv = f"demo-{seed}-group-{i}"
        await asyncio.to_thread(create_conversation, conv, members, store=stack.store)
        groups.append((conv, members))
    if not groups:
        return []
    for i in range(count):
        conv, members = groups[i % len(groups)]
        senders = [u for u in members if u in pop.clients] or members
        sender = pop.rng.choice(senders)
        msg_id = await asyncio.to_thread(
            stack.send_group, sender, conv, {"text": f"group message {i}", "n": i},
            f"demo-{seed}-g{i}")
        recipients = tuple(u for u in members if u != sender)
        run.groups[msg_id] = (sender, conv, recipients)
        for user in recipients:
            run.deliveries[str(delivery_id(uuid.UUID(msg_id), user))] = (msg_id, user)
        await asyncio.sleep(1 / rate)
    return [(conv, len(members)) for conv, members in groups]


async def _settle_receipts(pop: Population, run: Run, timeout: float = 10.0) -> None:
    """Wait (bounded) until every group sender has its delivered receipts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _receipts_missing(pop, run):
        await asyncio.sleep(0.1)


def _receipts_missing(pop: Population, run: Run) -> int:
    delivered = pop.receipts.get("delivered", {})
    counts = pop.receipt_counts.get("delivered", {})
    missing = 0
    for msg_id, (_, _, recipients) in run.groups.items():
        if len(recipients) > RECEIPT_SINGLE_MAX:
            missing += counts.get(msg_id, 0) < len(recipients)
        else:
            missing += not delivered.get(msg_id, set()) >= set(recipients)
    return missing


RECEIPT_SINGLE_MAX = 20  # docs/protocol.md: larger groups get coalesced receipts


async def _group_report(stack: Stack, pop: Population, run: Run,
                        groups: list[tuple[str, int]]) -> dict[str, Any]:
    def read() -> Counter[str]:
        return Counter(m.state for m in stack.store.get_many(
            uuid.UUID(d) for d in run.deliveries))

    states = await asyncio.to_thread(read)
    lost = [d for d in run.deliveries if d not in pop.shown_at]
    out_of_order = 0  # shown in order (not flagged late) yet below one shown before it
    for seqs in pop.shown_seqs.values():
        top = 0
        for seq, late in seqs:
            if not late:
                out_of_order += seq <= top
                top = max(top, seq)
    return {
        "conversations": len(groups),
        "members": [size for _, size in groups],
        "messages": len(run.groups),
        "recipient_deliveries": len(run.deliveries),
        "shown": len(run.deliveries) - len(lost),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "shown_late": sum(late for seqs in pop.shown_seqs.values() for _, late in seqs),
        "out_of_order": out_of_order,
        "final_states": dict(states),
        "receipt_frames": dict(pop.receipt_frames),
        "messages_without_all_delivered_receipts": _receipts_missing(pop, run),
        "messages_with_read_receipts": len(set(pop.receipts.get("read", {}))
                                           | set(pop.receipt_counts.get("read", {}))),
    }


async def _outcomes(store: Store, run: Run) -> Counter[str]:
    def read() -> Counter[str]:
        counts: Counter[str] = Counter()
        for msg in store.get_many(uuid.UUID(m) for m in run.sent):
            counts[msg.state] += 1
        return counts

    return await asyncio.to_thread(read)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}

    def pick(q: float) -> float:
        return round(nearest_rank(values, q), 2)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(values[-1], 2)}


def _progress(done: int, total: int, shown: int, started: float, extra: str = "") -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] sent {done}/{total}  shown {shown}  "
          f"{rate:.0f} msg/s{extra}   ", end="", file=sys.stderr, flush=True)


def report(result: dict[str, Any], mode: str) -> str:
    lat = result["latency_ms"]
    lines = [
        f"delivery demo — {mode}",
        f"  messages sent               {result['messages']}",
        f"  delivered over WebSocket    {result['delivered_ws']}",
        f"  pushed (FCM accepted)       {result['pushed']}",
        f"  pending (no device)         {result['pending']}",
        f"  expired                     {result['expired']}",
        f"  replayed on reconnect       {result['replayed_in_final_phase']}",
        f"  LOST                        {result['lost']}",
        f"  seed races forced           {result['forced_races']} "
        f"(plus {result['reconnects']} ordinary reconnects)",
        f"  duplicate frames (deduped)  {result['duplicate_frames']}",
        f"  messages acked twice        {result['duplicate_outcomes']}",
        f"  devices pushed twice        {result['duplicate_pushes']}",
        f"  send→display latency        p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
        f"max {lat['max']} ms",
        f"  final states in the store   {result['final_states']}",
    ]
    g = result.get("groups") or {}
    if g.get("messages"):
        lines += [
            f"  group conversations         {g['conversations']} "
            f"({', '.join(map(str, g['members']))} members)",
            f"  group messages sent         {g['messages']} "
            f"({g['recipient_deliveries']} recipient deliveries)",
            f"  shown to their recipients   {g['shown']} (in seq order; "
            f"{g['shown_late']} late after a gap, {g['out_of_order']} out of order)",
            f"  LOST per recipient          {g['lost']}",
            f"  receipts to the senders     {g['receipt_frames']}",
            f"  senders missing a delivered {g['messages_without_all_delivered_receipts']}",
            f"  messages with read receipts {g['messages_with_read_receipts']}",
            f"  group final states          {g['final_states']}",
        ]
    lines.append(f"  elapsed                     {result['elapsed_s']} s")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages to send")
    parser.add_argument("--users", type=int, default=40, help="simulated users")
    parser.add_argument("--offline", type=int, default=8, help="users never online in traffic")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="messages per second offered (the embedded stack sustains ~130)")
    parser.add_argument("--race-every", type=int, default=50,
                        help="force the seed's race every N messages, at most once a second "
                        "(0: never)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the schedule")
    parser.add_argument("--group-sizes", default="5,8,25",
                        help="members of each group conversation, comma-separated ('' : none)")
    parser.add_argument("--group-messages", type=int, default=None,
                        help="messages sent to the groups (default: --messages / 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.users < 1 or not 0 <= args.offline < args.users or args.messages < 1:
        parser.error("need --messages >= 1, --users >= 1 and 0 <= --offline < --users")
    try:
        args.group_sizes = tuple(int(x) for x in args.group_sizes.split(",") if x.strip())
    except ValueError:
        parser.error("--group-sizes: comma-separated integers")
    if args.group_messages is None:
        args.group_messages = args.messages // 10 if args.group_sizes else 0
    if args.group_messages < 0 or any(n < 2 for n in args.group_sizes):
        parser.error("need --group-messages >= 0 and groups of at least 2 members")
    settings = get_settings()
    distributed = bool(settings.redis_url and settings.database_url and not settings.embedded)
    if distributed:
        result, mode = _distributed(settings, args)
    else:
        result, mode = asyncio.run(_embedded(settings, args))
    print(json.dumps(result, indent=2) if args.json else report(result, mode))
    ok = (result["lost"] == 0 and result["duplicate_outcomes"] == 0
          and result["groups"].get("lost", 0) == 0 and result["groups"].get("out_of_order", 0) == 0)
    return 0 if ok and result["duplicate_pushes"] == 0 else 1


def _distributed(settings: Settings, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from workers.demo_cluster import cluster_stack

    with cluster_stack(settings) as (stack, mode):
        result = asyncio.run(drive(
            stack, settings, messages=args.messages, users=args.users,
            offline=args.offline, rate=args.rate, race_every=args.race_every,
            seed=args.seed, progress=True, group_sizes=args.group_sizes,
            group_messages=args.group_messages,
        ))
    return result, mode


async def _embedded(settings: Settings, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import dataclasses
    import logging

    from workers.embedded import EmbeddedStack

    logging.basicConfig(level=logging.WARNING)
    if not settings.database_url:  # a fresh database each run, so the report is this run's
        settings = dataclasses.replace(settings, data_dir=tempfile.mkdtemp(prefix="demo-"))
    print("starting the embedded pipeline (SQLite, in-process broker and presence, "
          "2 gateways, 1 worker, FCM stub)...", file=sys.stderr)
    async with EmbeddedStack(settings) as stack:
        print(f"gateways: {', '.join(stack.url(g) for g in stack.gateway_names)}",
              file=sys.stderr)
        result = await drive(stack, stack.settings, messages=args.messages, users=args.users,
                             offline=args.offline, rate=args.rate, race_every=args.race_every,
                             seed=args.seed, progress=True, group_sizes=args.group_sizes,
                             group_messages=args.group_messages)
    return result, "embedded: SQLite, in-process broker and presence, 2 gateways, 1 worker"
