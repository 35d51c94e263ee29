"""Attempt rows: written by one helper, closed only while open, nacks found by connection."""

from __future__ import annotations

from datetime import timedelta

from delivery.clock import utcnow
from delivery.store import Store
from delivery.store.attempts import NOWHERE, AttemptRow, insert_attempts
from tests.delivery.store.helpers import accept


def test_rows_are_written_open_or_finished_and_closed_once(store: Store) -> None:
    msg, _ = accept(store)
    now = utcnow()
    later = now + timedelta(seconds=1)
    with store.engine.begin() as c:
        insert_attempts(c, msg.id, 1, "ws", [AttemptRow("gw", "c1"), AttemptRow("gw", "c2")],
                        started_at=now)
        insert_attempts(c, msg.id, 2, "push", [AttemptRow("fcm", "dev:1", "fcm:ok", "sent")],
                        started_at=now, finished_at=later)
        insert_attempts(c, msg.id, 2, "push", NOWHERE, started_at=now)
    store.finish_attempts(msg.id, 1, "nacked", now=later, conn_id="c1", detail="gone")
    store.finish_attempts(msg.id, 1, "timeout", now=later)  # only c2 is still open
    store.finish_attempts(msg.id, 1, "superseded", now=later)  # nothing open: no change
    rows = [(a.attempt, a.channel, a.node, a.conn, a.result, a.detail, a.finished_at is not None)
            for a in store.attempts_of(msg.id)]
    assert rows == [(1, "ws", "gw", "c1", "nacked", "gone", True),
                    (1, "ws", "gw", "c2", "timeout", None, True),
                    (2, "push", "fcm", "dev:1", "fcm:ok", "sent", True),
                    (2, "push", None, None, None, None, False)]
    assert store.nacked_conns(msg.id) == {"c1"}
