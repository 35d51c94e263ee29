"""The reference ack path: one compare-and-set per ack, in the order given, in one transaction.

Obviously right and slow; the store's bulk path (``delivery.store.acks.record_acks_bulk``) must
give the same answers and leave the same rows (tests/delivery/store/test_acks.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update

from delivery.store import Store
from delivery.store.tables import attempts, messages
from delivery.vocabulary import UNACKED, Result, State


def record_acks(
    store: Store, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime
) -> list[bool]:
    """Per ack ``(message id, user, connection)``: the message becomes delivered if ``user`` is
    its recipient and it is still unacked; then the acking connection's open rows of the current
    attempt close as acked and the attempt's other open rows as superseded."""
    results: list[bool] = []
    with store.engine.begin() as c:
        for msg_id, user, conn_id in acks:
            row = c.execute(
                update(messages)
                .where(messages.c.id == msg_id, messages.c.recipient == user,
                       messages.c.state.in_(UNACKED))
                .values(state=State.DELIVERED.value, delivered_at=now,
                        delivered_conn=conn_id, ack_deadline=None)
                .returning(messages.c.attempts)
            ).first()
            if row is None:
                results.append(False)
                continue
            open_rows = [attempts.c.message_id == msg_id, attempts.c.attempt == row[0],
                         attempts.c.finished_at.is_(None)]
            c.execute(update(attempts).where(*open_rows, attempts.c.conn == conn_id)
                      .values(finished_at=now, result=Result.ACKED, detail=None))
            c.execute(update(attempts).where(*open_rows)
                      .values(finished_at=now, result=Result.SUPERSEDED, detail=None))
            results.append(True)
    return results


def record_ack(store: Store, msg_id: uuid.UUID, user: str, conn_id: str, now: datetime) -> bool:
    return record_acks(store, [(msg_id, user, conn_id)], now)[0]
