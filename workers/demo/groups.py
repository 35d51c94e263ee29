"""The demo's group conversations: create them (online and offline members mixed), send to
them from online members, wait for the senders' receipts, and count per recipient."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from delivery.api import create_conversation
from delivery.conversations.ids import delivery_id
from workers.demo.population import Plan, Population, Run
from workers.demo.result import GroupResult
from workers.demo.stack import Stack

RECEIPT_SINGLE_MAX = 20  # docs/protocol.md: larger groups get coalesced (count/of) receipts


async def group_traffic(stack: Stack, pop: Population, plan: Plan, run: Run) -> None:
    """Create the groups and send ``plan.group_messages`` round robin over them, each from
    one of its members who is online (their client collects the receipts)."""
    names, offline = plan.names, plan.offline_names
    groups: list[tuple[str, list[str]]] = []
    for i, size in enumerate(plan.group_sizes):
        size = min(size, len(names))
        n_off = min(len(offline), size // 4)
        members = pop.rng.sample(offline, n_off) + pop.rng.sample(
            plan.online_names, min(size - n_off, len(plan.online_names)))
        if len(members) < 2:
            continue
        conv = f"demo-{plan.seed}-group-{i}"
        await asyncio.to_thread(create_conversation, conv, members, store=stack.store)
        groups.append((conv, members))
        run.conversations.append((conv, len(members)))
    if not groups:
        return
    for i in range(plan.group_messages):
        conv, members = groups[i % len(groups)]
        sender = pop.rng.choice([u for u in members if u in pop.clients] or members)
        msg_id = await asyncio.to_thread(
            stack.send_group, sender, conv, {"text": f"group message {i}", "n": i},
            f"demo-{plan.seed}-g{i}")
        recipients = tuple(u for u in members if u != sender)
        run.groups[msg_id] = (sender, conv, recipients)
        for user in recipients:
            run.deliveries[str(delivery_id(uuid.UUID(msg_id), user))] = (msg_id, user)
        await asyncio.sleep(1 / plan.rate)


async def settle_receipts(pop: Population, run: Run, timeout: float = 10.0) -> None:
    """Wait (bounded) until every group message's sender has its delivered receipts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and receipts_missing(pop, run):
        await asyncio.sleep(0.1)


def receipts_missing(pop: Population, run: Run) -> int:
    """Group messages whose sender was not told (yet) that every recipient has it."""
    delivered = pop.receipts.get("delivered", {})
    counts = pop.receipt_counts.get("delivered", {})
    missing = 0
    for msg_id, (_, _, recipients) in run.groups.items():
        if len(recipients) > RECEIPT_SINGLE_MAX:
            missing += counts.get(msg_id, 0) < len(recipients)
        else:
            missing += not delivered.get(msg_id, set()) >= set(recipients)
    return missing


async def group_result(stack: Stack, pop: Population, run: Run) -> GroupResult | None:
    if not run.groups:
        return None

    def read() -> Counter[str]:
        return Counter(m.state for m in stack.store.get_many(
            uuid.UUID(d) for d in run.deliveries))

    states = await asyncio.to_thread(read)
    lost = [d for d in run.deliveries if d not in pop.shown_at]
    out_of_order = 0
    for seqs in pop.shown_seqs.values():
        top = 0
        for seq, late in seqs:
            if not late:
                out_of_order += seq <= top
                top = max(top, seq)
    read_told = set(pop.receipts.get("read", {})) | set(pop.receipt_counts.get("read", {}))
    return GroupResult(
        conversations=len(run.conversations),
        members=[size for _, size in run.conversations],
        messages=len(run.groups),
        recipient_deliveries=len(run.deliveries),
        shown=len(run.deliveries) - len(lost),
        lost=len(lost),
        lost_ids=lost[:10],
        shown_late=sum(late for seqs in pop.shown_seqs.values() for _, late in seqs),
        out_of_order=out_of_order,
        final_states=dict(states),
        receipt_frames=dict(pop.receipt_frames),
        messages_without_all_delivered_receipts=receipts_missing(pop, run),
        messages_with_read_receipts=len(read_told & set(run.groups)),
    )
