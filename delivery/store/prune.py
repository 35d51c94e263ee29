"""Attempt rows pruned once a message has its outcome: what ``delivery inspect`` needs stays.

Routing writes one attempt row per target connection per attempt (plus redirects and push
results). With the bounds of the routing policy and the gateway that is at most a few dozen
rows per message, but a message that went through many connections keeps them forever. Once a
message is out of routing's hands (``delivered``, ``pushed``, ``pending``, ``expired``) and has
more than ``2 * keep + 1`` rows, the middle ones are replaced by one summary row
(channel ``summary``, result ``pruned``, detail ``"N rows pruned: nacked 40, superseded 12"``).

Always kept: the first and last ``keep`` rows (how it started, how it ended), every open row (a
late ack still closes it), the ``acked`` row and every ``fcm:ok`` row (the audit of duplicate
outcomes counts them).

Callers: ``delivery prune`` (until nothing is left), and the recovery sweep through
``delivery.routing.prune.maybe_prune`` (at most once per ``every_s`` per process).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from delivery.clock import utcnow
from delivery.store.attempts import AttemptRow, insert_attempts
from delivery.store.core import Store
from delivery.store.tables import attempts, messages
from delivery.vocabulary import IN_FLIGHT

SUMMARY_CHANNEL = "summary"
PRUNED = "pruned"
DEFAULT_KEEP = 5


@dataclass(frozen=True)
class Row:
    id: int
    attempt: int
    result: str | None
    finished: bool


@dataclass(frozen=True)
class Plan:
    delete_ids: tuple[int, ...]
    summary_attempt: int
    summary: str


def plan_prune(rows: Sequence[Row], keep: int) -> Plan | None:
    """Pure: which rows of one message to delete (``rows`` in (attempt, id) order); None when
    there is nothing worth pruning."""
    if len(rows) <= 2 * keep + 1:
        return None
    middle = rows[keep:len(rows) - keep]
    gone = [r for r in middle if r.finished and r.result != "acked"
            and not (r.result or "").startswith("fcm:ok") and r.result != PRUNED]
    if len(gone) < 2:  # one row replaced by a summary row saves nothing
        return None
    counts = Counter(r.result or "open" for r in gone)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return Plan(tuple(r.id for r in gone), gone[-1].attempt,
                f"{len(gone)} rows pruned: {detail}")


def prune_attempts(store: Store, *, keep: int = DEFAULT_KEEP, batch: int = 200,
                   now: datetime | None = None) -> int:
    """Prune up to ``batch`` settled messages; returns how many rows were deleted."""
    now = now or utcnow()
    settled = ~messages.c.state.in_(list(IN_FLIGHT))
    with store.engine.connect() as c:
        ids = [r[0] for r in c.execute(
            select(attempts.c.message_id)
            .join(messages, messages.c.id == attempts.c.message_id).where(settled)
            .group_by(attempts.c.message_id).having(func.count() > 2 * keep + 1).limit(batch)
        ).all()]
    deleted = 0
    for mid in ids:
        deleted += _prune_one(store, mid, keep, now)
    return deleted


def _prune_one(store: Store, mid: uuid.UUID, keep: int, now: datetime) -> int:
    with store.engine.begin() as c:
        # Several workers' sweeps prune: the message row's lock makes them take turns, so a
        # message gets one summary row.
        c.execute(select(messages.c.seq).where(messages.c.id == mid).with_for_update()).first()
        rows = [Row(r[0], r[1], r[2], r[3] is not None) for r in c.execute(
            select(attempts.c.id, attempts.c.attempt, attempts.c.result, attempts.c.finished_at)
            .where(attempts.c.message_id == mid).order_by(attempts.c.attempt, attempts.c.id)
        ).all()]
        plan = plan_prune(rows, keep)
        if plan is None:
            return 0
        n = c.execute(delete(attempts).where(attempts.c.id.in_(plan.delete_ids))).rowcount
        if not n:
            return 0
        insert_attempts(c, mid, plan.summary_attempt, SUMMARY_CHANNEL,
                        [AttemptRow(result=PRUNED, detail=plan.summary)],
                        started_at=now, finished_at=now)
    return int(n)

