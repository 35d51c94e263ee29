"""Queries over many messages: the duplicate-outcome audit, the ages behind the gauges."""

from __future__ import annotations

import uuid
from datetime import datetime

from delivery.clock import utcnow
from delivery.store import Store
from delivery.store.attempts import AttemptRow, insert_attempts
from delivery.vocabulary import State
from tests.delivery.store.helpers import accept


def finished(store: Store, msg_id: uuid.UUID, attempt: int, channel: str, result: str,
             conn: str, now: datetime) -> None:
    with store.engine.begin() as c:
        insert_attempts(c, msg_id, attempt, channel, [AttemptRow(conn=conn, result=result)],
                        started_at=now, finished_at=now)


def test_duplicate_outcome_audit_counts_double_acks_and_double_pushes(store: Store) -> None:
    msg, _ = accept(store)
    clean, _ = accept(store)
    now = utcnow()
    finished(store, msg.id, 1, "push", "fcm:ok", "dev:1", now)
    finished(store, msg.id, 2, "push", "fcm:ok", "dev:1", now)
    finished(store, msg.id, 2, "push", "fcm:ok", "dev:2", now)
    finished(store, clean.id, 1, "ws", "acked", "c1", now)
    assert store.duplicate_outcomes([msg.id, clean.id]) == {"acked_twice": 0, "pushed_twice": 1}
    finished(store, clean.id, 2, "ws", "acked", "c1", now)
    assert store.duplicate_outcomes([msg.id, clean.id])["acked_twice"] == 1


def test_oldest_in_flight_and_oldest_unacked(store: Store) -> None:
    assert store.oldest_in_flight() is None and store.oldest_unacked() is None
    first, _ = accept(store)
    second, _ = accept(store)
    assert store.oldest_in_flight() == first.created_at == store.oldest_unacked()
    assert store.transition(first.id, [State.ACCEPTED], State.PENDING)
    assert store.oldest_in_flight() == second.created_at
    assert store.oldest_unacked() == first.created_at
