"""What a gateway records about the frames it sent: acks (in bulk), nacks and redirects.

They run in a thread executor (the store is synchronous). Every write is idempotent enough for
at-least-once: finishing an attempt row only touches rows still open.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Connection

from delivery.store.attempts import AttemptRow, close_attempts, insert_attempts
from delivery.store.conversations import delivered_receipts
from delivery.store.core import Store
from delivery.store.tables import attempts, messages
from delivery.vocabulary import UNACKED, Channel, Result, State


def nack_attempts(
    store: Store,
    msg_id: uuid.UUID,
    attempt: int,
    conns: Sequence[str],
    *,
    now: datetime,
    detail: str,
) -> None:
    """Close the open attempt rows of ``conns`` (this attempt) as nacked."""
    with store.engine.begin() as c:
        for conn_id in conns:
            close_attempts(c, msg_id, attempt, Result.NACKED, now=now, conn_id=conn_id,
                           detail=detail)


def redirect_attempt(
    store: Store,
    msg_id: uuid.UUID,
    attempt: int,
    *,
    from_conns: Sequence[str],
    to_conns: Sequence[str],
    node: str,
    now: datetime,
) -> None:
    """The frame for ``from_conns`` (gone) goes to ``to_conns`` (same user, same node) instead.

    The gone connections' rows are closed as nacked ("redirected to ..."), and the new ones get
    an open row with the same attempt number, so the ack closes them like any other.
    """
    detail = "redirected to " + ", ".join(to_conns)
    moved = "redirected from " + ", ".join(from_conns)
    with store.engine.begin() as c:
        for conn_id in from_conns:
            close_attempts(c, msg_id, attempt, Result.NACKED, now=now, conn_id=conn_id,
                           detail=detail)
        insert_attempts(c, msg_id, attempt, Channel.WS,
                        [AttemptRow(node, conn_id, detail=moved) for conn_id in to_conns],
                        started_at=now)


class AckOutcome(NamedTuple):
    won: list[bool]  # per ack, whether it recorded the delivery
    owed: set[str]  # users owed new receipts (senders of the messages delivered)


# How long a receipt is kept replayable when no setting is given (the message TTL's default).
RECEIPT_TTL_S = 7 * 24 * 3600.0


def record_acks_bulk(
    store: Store, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime
) -> list[bool]:
    """:func:`record_acks`, the outcome per ack only."""
    return record_acks(store, acks, now).won


def record_acks(
    store: Store, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime, *,
    receipt_ttl_s: float = RECEIPT_TTL_S, direct_receipts: bool = False,
) -> AckOutcome:
    """Record a batch of acks ``(message id, user, connection)``: each message is delivered
    once, by the first ack in the batch from its recipient while it is unacked; the acking
    connection's open rows of the current attempt close as acked, the others as superseded.
    Returns, per ack, whether it won.

    A fixed number of statements per batch: acks arrive in batches of hundreds on a busy
    gateway; building three statements per ack costs ~1 ms of CPU each (SQLAlchemy), which
    would cap a gateway near 1,000 acks/s. Here:
    one SELECT reads the batch's messages and picks the first valid ack per message (recipient
    matches, still unacked); one compare-and-set UPDATE per message (by ``seq``, ``state IN
    unacked``), sent as a single executemany, records the outcome; when its row count shows
    that another process won a race, a SELECT finds which ones we won (``delivered_at`` is this
    batch's timestamp and ``delivered_conn`` ours); one more executemany closes the winners'
    attempt rows (the acking connection's "acked", the others "superseded").

    On PostgreSQL the whole batch is one statement instead (:data:`_PG_ACKS`): there the cost is
    per statement, not per row (batches of 500 on a 439k-message store: 116 us per ack with the
    executemany path, 36 us with the one set-based statement).

    In the same transaction, the acks of group messages store their senders' ``delivered``
    receipts (``delivery.store.conversations.delivered_receipts``): an ack is never recorded
    without its receipt. One more SELECT per batch.
    """
    results = [False] * len(acks)
    if not acks:
        return AckOutcome(results, set())
    with store.engine.begin() as c:
        if c.dialect.name == "postgresql":
            _pg_acks(c, acks, now, results)
        else:
            for start in range(0, len(acks), 500):
                _bulk_chunk(c, acks, start, min(len(acks), start + 500), now, results)
        won = [a[0] for a, w in zip(acks, results, strict=True) if w]
        owed = delivered_receipts(c, won, now=now, ttl_s=receipt_ttl_s,
                                  upsert=store._upsert, direct=direct_receipts)
    return AckOutcome(results, owed)


_UNACKED_SQL = ", ".join(f"'{s}'" for s in UNACKED)


class _Raw:
    """Driver-level SQL for the ack path, per dialect (built once).

    SQLAlchemy's per-row parameter processing costs more than the statements themselves at
    hundreds of acks per batch, so the statements go to the DBAPI's ``executemany`` with
    parameters converted by the columns' own bind processors.
    """

    def __init__(self, c: Connection) -> None:
        dialect = c.dialect
        ph = "?" if dialect.paramstyle == "qmark" else "%s"
        self.ph = ph
        self.uuid = messages.c.id.type.bind_processor(dialect) or (lambda v: v)
        self.time = messages.c.delivered_at.type.bind_processor(dialect) or (lambda v: v)
        self.ack_msg = (
            f"UPDATE {messages.name} SET state = '{State.DELIVERED}', delivered_at = {ph},"
            f" ack_deadline = NULL, delivered_conn = {ph}"
            f" WHERE seq = {ph} AND state IN ({_UNACKED_SQL})"
        )
        self.ack_attempts = (
            f"UPDATE {attempts.name} SET finished_at = {ph},"
            f" result = CASE WHEN conn = {ph} THEN '{Result.ACKED}' ELSE '{Result.SUPERSEDED}' END"
            f" WHERE message_id = {ph} AND attempt = {ph} AND finished_at IS NULL"
        )

    def select(self, n: int) -> str:
        marks = ", ".join([self.ph] * n)
        return (f"SELECT id, recipient, attempts, seq FROM {messages.name}"
                f" WHERE id IN ({marks}) AND state IN ({_UNACKED_SQL})")


_raw: dict[str, _Raw] = {}

# One round trip for a batch on PostgreSQL. ``a``: the candidate acks, at most one per (message,
# user) - the first - so at most one matches a message's recipient, and it is the first valid
# ack of that message in the batch. ``lk`` locks the messages still unacked in ``seq`` order
# (one lock order for concurrent gateways: no deadlocks between ack batches); ``won`` is the
# compare-and-set (``state IN unacked`` again: rows changed by a concurrent transaction are
# re-checked); ``att`` closes the winners' attempt rows. Returns the winners' indexes in the batch.
_PG_ACKS = f"""
WITH a AS (
    SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::int[]) AS a(id, usr, conn, ord)
), lk AS (
    SELECT m.id, a.conn, a.ord FROM messages m JOIN a ON m.id = a.id AND m.recipient = a.usr
    WHERE m.state IN ({_UNACKED_SQL}) ORDER BY m.seq FOR UPDATE OF m
), won AS (
    UPDATE messages m SET state = '{State.DELIVERED}', delivered_at = %s, ack_deadline = NULL,
        delivered_conn = lk.conn
    FROM lk WHERE m.id = lk.id AND m.state IN ({_UNACKED_SQL})
    RETURNING m.id, m.attempts, lk.conn, lk.ord
), att AS (
    UPDATE delivery_attempts d SET finished_at = %s,
        result = CASE WHEN d.conn = won.conn THEN '{Result.ACKED}' ELSE '{Result.SUPERSEDED}' END
    FROM won WHERE d.message_id = won.id AND d.attempt = won.attempts AND d.finished_at IS NULL
)
SELECT ord FROM won
"""


def _pg_acks(
    c: Connection, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime,
    results: list[bool],
) -> None:
    first: dict[tuple[uuid.UUID, str], int] = {}
    for i, (mid, user, _) in enumerate(acks):
        first.setdefault((mid, user), i)
    order = list(first.values())
    ids = [acks[i][0] for i in order]
    users = [acks[i][1] for i in order]
    conns = [acks[i][2] for i in order]
    for (i,) in c.exec_driver_sql(_PG_ACKS, (ids, users, conns, order, now, now)).all():
        results[i] = True


def _bulk_chunk(
    c: Connection, acks: Sequence[tuple[uuid.UUID, str, str]], lo: int, hi: int,
    now: datetime, results: list[bool],
) -> None:
    raw = _raw.get(c.dialect.name)
    if raw is None:
        raw = _raw[c.dialect.name] = _Raw(c)
    back: dict[Any, uuid.UUID] = {}
    for i in range(lo, hi):
        mid = acks[i][0]
        back[raw.uuid(mid)] = mid
    keys = list(back)
    rows = c.exec_driver_sql(raw.select(len(keys)), tuple(keys)).all()
    found = {back[r[0]]: (r[1], r[2], r[3]) for r in rows if r[0] in back}
    picked: dict[uuid.UUID, tuple[int, str]] = {}  # message id -> (index in acks, conn)
    for i in range(lo, hi):
        mid, user, conn_id = acks[i]
        if mid not in picked and mid in found and found[mid][0] == user:
            picked[mid] = (i, conn_id)
    if not picked:
        return
    # Rows in table order: half the page writes of a random order on SQLite, and one lock order
    # for concurrent gateways on PostgreSQL (no deadlocks between ack batches).
    chosen = dict(sorted(picked.items(), key=lambda kv: found[kv[0]][2]))
    when = raw.time(now)
    # By ``seq`` (the rowid on SQLite), found by the SELECT: one random probe of the ``id`` index
    # per ack instead of two.
    updated = c.exec_driver_sql(raw.ack_msg, [
        (when, conn_id, found[mid][2]) for mid, (_, conn_id) in chosen.items()
    ]).rowcount
    won = list(chosen)
    if updated != len(chosen):  # lost some races (another ack, an expiry...): which ones?
        mine = c.execute(
            select(messages.c.id, messages.c.delivered_conn, messages.c.delivered_at)
            .where(messages.c.id.in_(won))
        ).all()
        won = [r[0] for r in mine if r[2] == now and r[1] == chosen[r[0]][1]]
    if not won:
        return
    for mid in won:
        results[chosen[mid][0]] = True
    c.exec_driver_sql(raw.ack_attempts, [
        (when, chosen[mid][1], raw.uuid(mid), found[mid][1]) for mid in won
    ])
