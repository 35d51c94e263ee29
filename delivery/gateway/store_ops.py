"""Store writes that only the gateway makes: attempt rows for nacks and redirects.

They run in a thread executor (the store is synchronous). Every write is idempotent enough for
at-least-once: finishing an attempt row only touches rows still open.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, case, insert, literal_column, select, update
from sqlalchemy.engine import Connection

from delivery.models import UNACKED, State
from delivery.store import A, M, Store

CHANNEL_WS = "ws"
RESULT_NACKED = "nacked"


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
            store.finish_attempts(
                msg_id, attempt, RESULT_NACKED, now=now, conn_id=conn_id, detail=detail,
                connection=c,
            )


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
    with store.engine.begin() as c:
        for conn_id in from_conns:
            store.finish_attempts(
                msg_id, attempt, RESULT_NACKED, now=now, conn_id=conn_id, detail=detail,
                connection=c,
            )
        c.execute(insert(A), [
            {"message_id": msg_id, "attempt": attempt, "channel": CHANNEL_WS, "node": node,
             "conn": conn_id, "started_at": now, "finished_at": None, "result": None,
             "detail": "redirected from " + ", ".join(from_conns)}
            for conn_id in to_conns
        ])


def record_acks_bulk(
    store: Store, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime
) -> list[bool]:
    """Same outcome as :meth:`Store.record_acks`, with a fixed number of statements per batch.

    Acks arrive in batches of hundreds on a busy gateway; building three statements per ack
    costs ~1 ms of CPU each (SQLAlchemy), which would cap a gateway near 1,000 acks/s. Here:
    one SELECT reads the batch's messages and picks the first valid ack per message (recipient
    matches, still unacked); one compare-and-set UPDATE per message (``state IN unacked``), sent
    as a single executemany, records the outcome; when its row count shows that another process
    won a race, a SELECT finds which ones we won (``delivered_at`` is this batch's timestamp and
    ``delivered_conn`` ours); one more executemany closes the winners' attempt rows (the acking
    connection's "acked", the others "superseded").
    """
    results = [False] * len(acks)
    if not acks:
        return results
    with store.engine.begin() as c:
        for start in range(0, len(acks), 500):
            _bulk_chunk(c, acks, start, min(len(acks), start + 500), now, results)
    return results


# executemany cannot expand IN lists: the states are inlined as SQL literals (constants).
_UNACKED_INLINE = M.c.state.in_([literal_column(f"'{s}'") for s in UNACKED])
_ACK_MSG = (
    update(M)
    .where(M.c.id == bindparam("mid"), _UNACKED_INLINE)
    .values(state=State.DELIVERED.value, delivered_at=bindparam("b_now"), ack_deadline=None,
            delivered_conn=bindparam("b_conn"))
)
_ACK_ATTEMPTS = (
    update(A)
    .where(A.c.message_id == bindparam("mid"), A.c.attempt == bindparam("att"),
           A.c.finished_at.is_(None))
    .values(finished_at=bindparam("b_now"),
            result=case((A.c.conn == bindparam("b_conn"), "acked"), else_="superseded"))
)


def _bulk_chunk(
    c: Connection, acks: Sequence[tuple[uuid.UUID, str, str]], lo: int, hi: int,
    now: datetime, results: list[bool],
) -> None:
    ids = list({acks[i][0] for i in range(lo, hi)})
    rows = c.execute(
        select(M.c.id, M.c.recipient, M.c.attempts)
        .where(M.c.id.in_(ids), M.c.state.in_(UNACKED))
    ).all()
    found = {r[0]: (r[1], r[2]) for r in rows}
    chosen: dict[uuid.UUID, tuple[int, str]] = {}  # message id -> (index in acks, conn)
    for i in range(lo, hi):
        mid, user, conn_id = acks[i]
        if mid not in chosen and mid in found and found[mid][0] == user:
            chosen[mid] = (i, conn_id)
    if not chosen:
        return
    params = [{"mid": mid, "b_conn": conn_id, "b_now": now} for mid, (_, conn_id) in chosen.items()]
    updated = c.execute(_ACK_MSG, params).rowcount
    won = list(chosen)
    if updated != len(chosen):  # lost some races (another ack, an expiry...): which ones?
        mine = c.execute(
            select(M.c.id, M.c.delivered_conn, M.c.delivered_at).where(M.c.id.in_(won))
        ).all()
        won = [r[0] for r in mine if r[2] == now and r[1] == chosen[r[0]][1]]
    if not won:
        return
    for mid in won:
        results[chosen[mid][0]] = True
    c.execute(_ACK_ATTEMPTS, [
        {"mid": mid, "att": found[mid][1], "b_conn": chosen[mid][1], "b_now": now} for mid in won
    ])
