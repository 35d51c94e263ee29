"""The demo's phases on a running stack, in order: connect the clients, traffic with the seed's
race forced, drain (settle, then every user reconnects and receives what it has not acked),
collect the result. ``drive`` runs them all."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

from delivery.clock import utcnow
from delivery.settings import Settings
from delivery.stats import nearest_rank
from delivery.store import Store
from delivery.vocabulary import IN_FLIGHT, State
from workers.demo.groups import group_result, group_traffic, settle_receipts
from workers.demo.population import Plan, Population, Run
from workers.demo.report import end_progress, show_progress
from workers.demo.result import Result
from workers.demo.stack import Stack


async def drive(stack: Stack, settings: Settings, plan: Plan, *,
                progress: bool) -> Result:
    """Every phase on a started stack; the result the report renders."""
    rng = random.Random(plan.seed)
    pop = await connect_clients(stack, settings, plan, rng)
    run = await traffic(stack, pop, plan, rng, progress=progress)
    await group_traffic(stack, pop, plan, run)
    await drain(stack, settings, plan, pop, run, progress=progress)
    return await collect(stack, pop, run)


async def connect_clients(stack: Stack, settings: Settings, plan: Plan,
                          rng: random.Random) -> Population:
    """Half of the offline users get a phone; every online user connects; presence settles."""
    now = utcnow()
    for i, user in enumerate(plan.offline_names):
        if i % 2 == 0:
            await asyncio.to_thread(stack.store.register_device, user, f"fcm-{user}",
                                    "android", now)
    pop = Population(stack, settings.effective_secret, rng)
    for user in plan.online_names:
        await pop.connect(user)
    await asyncio.sleep(max(0.5, settings.presence_heartbeat_s * 3))  # let presence converge
    return pop


async def traffic(stack: Stack, pop: Population, plan: Plan, rng: random.Random, *,
                  progress: bool) -> Run:
    """Send ``plan.messages`` at ``plan.rate``, forcing the seed's race and some churn."""
    names, online_names = plan.names, plan.online_names
    run = Run()
    last_race = 0.0
    last_print = 0.0
    for i in range(plan.messages):
        recipient = rng.choice(names)
        # Races at least a second apart, so one hold heals before the next (overlapping holds
        # would keep the worker's view stale for good, a different scenario from the seed's).
        if (plan.race_every and i % plan.race_every == plan.race_every - 1 and online_names
                and time.monotonic() - last_race >= 1.0):
            last_race = time.monotonic()
            recipient = rng.choice(online_names)
            await force_race(stack, pop, recipient, rng)
            run.races += 1
        elif rng.random() < 0.01 and online_names:
            churner = rng.choice(online_names)
            await pop.disconnect(churner)
            await pop.connect(churner)
            run.reconnects += 1
        msg_id = stack.send("demo-sender", recipient, {"text": f"message {i}", "n": i},
                            f"demo-{plan.seed}-{i}")
        run.sent[msg_id] = (recipient, time.monotonic(), recipient in pop.clients)
        await asyncio.sleep(1 / plan.rate)
        if progress and time.monotonic() - last_print > 0.25:
            last_print = time.monotonic()
            show_progress(i + 1, plan.messages, len(pop.shown_at), run.started)
    return run


async def force_race(stack: Stack, pop: Population, user: str, rng: random.Random) -> None:
    """The seed's race: the worker's view lags while ``user`` reconnects (the caller then
    sends to them at once)."""
    stack.hold_presence(0.6)
    await pop.disconnect(user)
    await pop.connect(user, rng.choice(stack.gateway_names))


async def drain(stack: Stack, settings: Settings, plan: Plan, pop: Population, run: Run, *,
                progress: bool) -> None:
    """Let routing finish (ack deadlines, re-checks, pushes), then every user reconnects and
    receives what it has not acked, until the store agrees every message was delivered."""
    settle_deadline = time.monotonic() + settings.ack_timeout_s * (settings.max_attempts + 2) + 5
    while time.monotonic() < settle_deadline:
        states = await outcomes(stack.store, run)
        if sum(states.get(s, 0) for s in IN_FLIGHT) == 0:
            break
        if progress:
            show_progress(plan.messages, plan.messages, len(pop.shown_at), run.started,
                          " settling")
        await asyncio.sleep(0.25)
    run.settled = await outcomes(stack.store, run)
    run.shown_during_traffic = {m for m in run.sent if m in pop.shown_at}
    await pop.close_all()
    for user in plan.names:
        await pop.connect(user)
    final_deadline = time.monotonic() + 15
    while time.monotonic() < final_deadline and any(
            m not in pop.shown_at for m in (*run.sent, *run.deliveries)):
        await asyncio.sleep(0.1)
    # Every shown message was acked by its client; wait (bounded) until the store agrees.
    ack_deadline = time.monotonic() + 20
    while time.monotonic() < ack_deadline:
        states = await outcomes(stack.store, run)
        if sum(n for s, n in states.items() if s != State.DELIVERED) == 0:
            break
        await asyncio.sleep(0.2)
    await settle_receipts(pop, run)  # the last acks' and reads' receipts reach their senders
    await pop.close_all()
    if progress:
        end_progress()


async def collect(stack: Stack, pop: Population, run: Run) -> Result:
    """The result: outcomes when traffic settled, losses, duplicates, latency, final states."""
    settled = run.settled
    lost = [m for m in run.sent if m not in pop.shown_at]
    latencies = sorted((pop.shown_at[m] - t) * 1000 for m, (_, t, online) in run.sent.items()
                       if online and m in run.shown_during_traffic)
    final_states = dict(await outcomes(stack.store, run))
    duplicates = await asyncio.to_thread(
        stack.store.duplicate_outcomes, [uuid.UUID(m) for m in run.sent])
    return Result(
        messages=len(run.sent),
        delivered_ws=settled.get(State.DELIVERED, 0),
        pushed=settled.get(State.PUSHED, 0),
        pending=settled.get(State.PENDING, 0),
        expired=settled.get(State.EXPIRED, 0),
        in_flight_at_end=sum(settled.get(s, 0) for s in IN_FLIGHT),
        replayed_in_final_phase=len(run.sent) - len(run.shown_during_traffic),
        lost=len(lost),
        lost_ids=lost[:10],
        duplicate_frames=pop.wire_duplicates,
        duplicate_outcomes=duplicates["acked_twice"],
        duplicate_pushes=duplicates["pushed_twice"],
        forced_races=run.races,
        reconnects=run.reconnects,
        final_states=final_states,
        latency_ms=percentiles(latencies),
        elapsed_s=round(time.monotonic() - run.started, 2),
        groups=await group_result(stack, pop, run),
    )


async def outcomes(store: Store, run: Run) -> Counter[str]:
    """How many of the run's messages are in each state now."""
    def read() -> Counter[str]:
        counts: Counter[str] = Counter()
        for msg in store.get_many(uuid.UUID(m) for m in run.sent):
            counts[msg.state] += 1
        return counts

    return await asyncio.to_thread(read)


def percentiles(ascending: list[float]) -> dict[str, float]:
    if not ascending:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}

    def pick(q: float) -> float:
        return round(nearest_rank(ascending, q), 2)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ascending[-1], 2)}
