"""Attempt rows (``delivery_attempts``): one row per connection or device an attempt went to.

Every attempt row is written by :func:`insert_attempts` and closed by :func:`close_attempts`
(or, for acks, by the bulk ack path in ``acks``). Closing only touches rows still open, so a
retried close is harmless (at-least-once callers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from delivery.store.base import StoreBase
from delivery.store.records import AttemptRecord
from delivery.store.tables import ATTEMPT_COLUMNS, attempts
from delivery.vocabulary import Result


class AttemptRow(NamedTuple):
    """Where one attempt row went and, for a row written finished, how it ended."""

    node: str | None = None
    conn: str | None = None
    result: str | None = None
    detail: str | None = None


# An attempt that went to no connection (a push attempt's summary row, an offline decision).
NOWHERE = (AttemptRow(),)


def insert_attempts(
    c: Connection,
    msg_id: uuid.UUID,
    attempt: int,
    channel: str,
    rows: Iterable[AttemptRow],
    *,
    started_at: datetime,
    finished_at: datetime | None = None,
) -> None:
    """Insert the rows of one attempt (open unless ``finished_at``), in one executemany."""
    c.execute(insert(attempts), [
        {"message_id": msg_id, "attempt": attempt, "channel": channel, "node": r.node,
         "conn": r.conn, "started_at": started_at, "finished_at": finished_at,
         "result": r.result, "detail": r.detail}
        for r in rows
    ])


def insert_attempt_rows(
    c: Connection,
    rows: Iterable[tuple[uuid.UUID, int, str, AttemptRow]],
    *,
    started_at: datetime,
) -> None:
    """Open attempt rows of several messages ((message, attempt, channel, row)), in one
    executemany: one multi-row INSERT on PostgreSQL (SQLAlchemy's insertmanyvalues)."""
    c.execute(insert(attempts), [
        {"message_id": msg_id, "attempt": attempt, "channel": channel, "node": r.node,
         "conn": r.conn, "started_at": started_at, "finished_at": None, "result": r.result,
         "detail": r.detail}
        for msg_id, attempt, channel, r in rows
    ])


def close_attempts(
    c: Connection,
    msg_id: uuid.UUID,
    attempt: int,
    result: str,
    *,
    now: datetime,
    conn_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Close the open rows of ``attempt`` (one connection's, or all) with ``result``."""
    cond = [attempts.c.message_id == msg_id, attempts.c.attempt == attempt,
            attempts.c.finished_at.is_(None)]
    if conn_id is not None:
        cond.append(attempts.c.conn == conn_id)
    c.execute(update(attempts).where(and_(*cond))
              .values(finished_at=now, result=result, detail=detail))


class AttemptQueries(StoreBase):
    def finish_attempts(
        self,
        msg_id: uuid.UUID,
        attempt: int,
        result: str,
        *,
        now: datetime,
        conn_id: str | None = None,
        detail: str | None = None,
        connection: Connection | None = None,
    ) -> None:
        """Close the open attempt rows of ``attempt`` (one connection's, or all) with a result."""
        if connection is not None:
            close_attempts(connection, msg_id, attempt, result, now=now, conn_id=conn_id,
                           detail=detail)
            return
        with self.engine.begin() as c:
            close_attempts(c, msg_id, attempt, result, now=now, conn_id=conn_id, detail=detail)

    def nacked_conns(self, msg_id: uuid.UUID) -> set[str]:
        """Connections a gateway has reported gone for this message (any attempt)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(attempts.c.conn).where(
                    attempts.c.message_id == msg_id, attempts.c.result == Result.NACKED,
                    attempts.c.conn.is_not(None),
                )
            ).all()
        return {r[0] for r in rows}

    def attempts_of(self, msg_id: uuid.UUID) -> list[AttemptRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*ATTEMPT_COLUMNS)
                .where(attempts.c.message_id == msg_id)
                .order_by(attempts.c.attempt, attempts.c.id)
            ).all()
        return [AttemptRecord(*r) for r in rows]

