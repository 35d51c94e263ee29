"""What a gateway records about the frames it sent: acks (in bulk), nacks and redirects.

They run in a thread executor (the store is synchronous). Every write is idempotent enough for
at-least-once: finishing an attempt row only touches rows still open.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.engine import Connection

from delivery.store.attempts import AttemptRow, close_attempts, insert_attempts
from delivery.store.conversations import delivered_receipts
from delivery.store.core import Store
from delivery.store.tables import attempts, messages
from delivery.vocabulary import UNACKED, Channel, Kind, Result, State


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

    A fixed number of statements per batch, whatever its size, with the batch passed as one
    parameter (the ack path's cost is per statement and per Python object, not per row in the
    database): on PostgreSQL one statement (:data:`_PG_ACKS`, the batch as arrays); on SQLite
    three (:class:`_SqliteAcks`, the batch as one JSON text read with ``json_each``): the
    compare-and-set ``UPDATE`` of the messages, the ``UPDATE`` closing the winners' attempt rows,
    and one ``SELECT`` that answers which acks won in one row. Few statements matter twice in the
    gateway: each one is a Python -> driver round trip, and each row a driver hands back is a
    GIL release and re-acquire in the executor thread, which waits for the event loop's thread
    to let go of the GIL (up to the 5 ms switch interval) when the loop is busy.

    Only the first ack per (message, user) is a candidate (at most one per message then
    matches its recipient: the first valid ack of that message in the batch).

    In the same transaction, the acks of group messages (and of direct conversation messages
    with ``direct_receipts``) store their senders' ``delivered`` receipts
    (``delivery.store.conversations.delivered_receipts``): an ack is never recorded without its
    receipt. The statements above say which winners need one; batches with none (every direct
    message without ``direct_receipts``) skip that step.
    """
    results = [False] * len(acks)
    if not acks:
        return AckOutcome(results, set())
    first: dict[tuple[uuid.UUID, str], int] = {}
    for i, (mid, user, _) in enumerate(acks):
        first.setdefault((mid, user), i)
    order = list(first.values())
    with store.engine.begin() as c:
        if c.dialect.name == "postgresql":
            receipt_ids = _pg_acks(c, acks, order, now, results, direct_receipts)
        else:
            receipt_ids = _sqlite_acks(c, acks, order, now, results, direct_receipts)
        owed = (delivered_receipts(c, receipt_ids, now=now, ttl_s=receipt_ttl_s,
                                   upsert=store._upsert, direct=direct_receipts)
                if receipt_ids else set())
    return AckOutcome(results, owed)


_UNACKED_SQL = ", ".join(f"'{s}'" for s in UNACKED)
# A won ack whose message gets its sender a ``delivered`` receipt (delivered_receipts picks
# the same rows): a group recipient's row, or with direct receipts any conversation message.
# ``{d}``: the direct-receipts flag as a bound parameter.
_NEEDS_RECEIPT = (f"(m.kind = '{Kind.MESSAGE.value}' AND (m.parent IS NOT NULL"
                  " OR ({d} AND m.conversation_id IS NOT NULL)))")

# One round trip for a batch on PostgreSQL. ``a``: the candidate acks, at most one per (message,
# user) - the first - so at most one matches a message's recipient, and it is the first valid
# ack of that message in the batch. ``lk`` locks the messages still unacked in ``seq`` order
# (one lock order for concurrent gateways: no deadlocks between ack batches); ``won`` is the
# compare-and-set (``state IN unacked`` again: rows changed by a concurrent transaction are
# re-checked); ``att`` closes the winners' attempt rows. Returns the winners' indexes in the
# batch and whether each one owes its sender a receipt.
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
    RETURNING m.id, m.attempts, lk.conn, lk.ord, {_NEEDS_RECEIPT.format(d="%s")} AS owes
), att AS (
    UPDATE delivery_attempts d SET finished_at = %s,
        result = CASE WHEN d.conn = won.conn THEN '{Result.ACKED}' ELSE '{Result.SUPERSEDED}' END
    FROM won WHERE d.message_id = won.id AND d.attempt = won.attempts AND d.finished_at IS NULL
)
SELECT ord, owes FROM won
"""


def _pg_acks(
    c: Connection, acks: Sequence[tuple[uuid.UUID, str, str]], order: list[int],
    now: datetime, results: list[bool], direct: bool,
) -> list[uuid.UUID]:
    ids = [acks[i][0] for i in order]
    users = [acks[i][1] for i in order]
    conns = [acks[i][2] for i in order]
    owed: list[uuid.UUID] = []
    for i, owes in c.exec_driver_sql(_PG_ACKS, (ids, users, conns, order, now, direct, now)):
        results[i] = True
        if owes:
            owed.append(acks[i][0])
    return owed


class _SqliteAcks:
    """The SQLite statements of a batch (built once). The batch is one parameter, a JSON array
    of ``[id hex, user, conn]`` (the candidates, in batch order: ``key`` is a candidate's index).

    1. ``msg``: the compare-and-set - the candidate's message, if its recipient and still
       unacked, becomes delivered by that connection at this batch's time. The first write of
       the transaction: from here on the batch holds SQLite's write lock, so what follows sees
       exactly what it wrote.
    2. ``att``: the winners' open rows of the current attempt close (acked / superseded). A
       winner is a candidate whose message now carries this batch's time and connection.
    3. ``won``: one row - the winners' and the receipt-owing winners' candidate indexes, as
       comma-separated lists.
    """

    def __init__(self, c: Connection) -> None:
        self.time = messages.c.delivered_at.type.bind_processor(c.dialect) or (lambda v: v)
        cand = ("SELECT key AS k, json_extract(value, '$[0]') AS id,"
                " json_extract(value, '$[1]') AS usr, json_extract(value, '$[2]') AS conn"
                " FROM json_each(?)")
        winner = ("JOIN messages AS m ON m.id = a.id AND m.recipient = a.usr"
                  " AND m.delivered_at = ? AND m.delivered_conn = a.conn"
                  f" AND m.state = '{State.DELIVERED}'")
        self.msg = (
            f"UPDATE messages SET state = '{State.DELIVERED}', delivered_at = ?,"
            f" ack_deadline = NULL, delivered_conn = a.conn FROM ({cand}) AS a"
            " WHERE messages.id = a.id AND messages.recipient = a.usr"
            f" AND messages.state IN ({_UNACKED_SQL})"
        )
        self.att = (
            f"UPDATE {attempts.name} AS d SET finished_at = ?,"
            f" result = CASE WHEN d.conn = w.conn THEN '{Result.ACKED}'"
            f" ELSE '{Result.SUPERSEDED}' END"
            f" FROM (SELECT m.id AS id, m.attempts AS attempt, a.conn AS conn FROM ({cand}) AS a"
            f" {winner}) AS w"
            " WHERE d.message_id = w.id AND d.attempt = w.attempt AND d.finished_at IS NULL"
        )
        self.won = (
            f"SELECT group_concat(a.k),"
            f" group_concat(CASE WHEN {_NEEDS_RECEIPT.format(d='?')} THEN a.k END)"
            f" FROM ({cand}) AS a {winner}"
        )


_sqlite: list[_SqliteAcks] = []


def _sqlite_acks(
    c: Connection, acks: Sequence[tuple[uuid.UUID, str, str]], order: list[int],
    now: datetime, results: list[bool], direct: bool,
) -> list[uuid.UUID]:
    if not _sqlite:
        _sqlite.append(_SqliteAcks(c))
    sql = _sqlite[0]
    when = sql.time(now)
    batch = json.dumps([[acks[i][0].hex, acks[i][1], acks[i][2]] for i in order])
    if not c.exec_driver_sql(sql.msg, (when, batch)).rowcount:
        return []
    c.exec_driver_sql(sql.att, (when, batch, when))
    row = c.exec_driver_sql(sql.won, (direct, batch, when)).one()
    for k in (row[0] or "").split(","):
        results[order[int(k)]] = True
    return [acks[order[int(k)]][0] for k in (row[1] or "").split(",") if k]
