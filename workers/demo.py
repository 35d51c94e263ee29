"""``delivery demo``: the whole pipeline with simulated clients, the seed's race forced on
purpose, a live progress line and a final report. Exit status 0 only when nothing was lost.

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

from delivery.client import DeliveryClient
from delivery.clock import utcnow
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

    async def connect(self, user: str, gateway: str | None = None) -> DeliveryClient:
        gateway = gateway or self.rng.choice(self.stack.gateway_names)
        client = DeliveryClient(self.stack.url(gateway), issue_token(user, self.secret, 3600),
                                reconnect=False)
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


async def drive(stack: Stack, settings: Settings, *, messages: int, users: int, offline: int,
                rate: float, race_every: int, seed: int, progress: bool) -> dict[str, Any]:
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
    while time.monotonic() < final_deadline and any(m not in pop.shown_at for m in run.sent):
        await asyncio.sleep(0.1)
    # Every shown message was acked by its client; wait (bounded) until the store agrees.
    ack_deadline = time.monotonic() + 20
    while time.monotonic() < ack_deadline:
        states = await _outcomes(stack.store, run)
        if sum(n for s, n in states.items() if s != State.DELIVERED) == 0:
            break
        await asyncio.sleep(0.2)
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
        "elapsed_s": round(time.monotonic() - started, 2),
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
        f"  elapsed                     {result['elapsed_s']} s",
    ]
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.users < 1 or not 0 <= args.offline < args.users or args.messages < 1:
        parser.error("need --messages >= 1, --users >= 1 and 0 <= --offline < --users")
    settings = get_settings()
    distributed = bool(settings.redis_url and settings.database_url and not settings.embedded)
    if distributed:
        result, mode = _distributed(settings, args)
    else:
        result, mode = asyncio.run(_embedded(settings, args))
    print(json.dumps(result, indent=2) if args.json else report(result, mode))
    ok = result["lost"] == 0 and result["duplicate_outcomes"] == 0
    return 0 if ok and result["duplicate_pushes"] == 0 else 1


def _distributed(settings: Settings, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from workers.demo_cluster import cluster_stack

    with cluster_stack(settings) as (stack, mode):
        result = asyncio.run(drive(
            stack, settings, messages=args.messages, users=args.users,
            offline=args.offline, rate=args.rate, race_every=args.race_every,
            seed=args.seed, progress=True,
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
                             seed=args.seed, progress=True)
    return result, "embedded: SQLite, in-process broker and presence, 2 gateways, 1 worker"
