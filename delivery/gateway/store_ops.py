"""Store writes that only the gateway makes: attempt rows for nacks and redirects.

They run in a thread executor (the store is synchronous). Every write is idempotent enough for
at-least-once: finishing an attempt row only touches rows still open.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert

from delivery.store import A, Store

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
