"""Read-only queries over many messages: counts and ages for ``delivery status`` and the
metrics gauges, and the audit of duplicate outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select

from delivery.store.base import StoreBase
from delivery.store.tables import attempts, messages
from delivery.vocabulary import IN_FLIGHT, UNACKED, Result


class MetricQueries(StoreBase):
    def ping(self) -> None:
        """One round trip to the database (health probes); raises when it does not answer."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def count_by_state(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(messages.c.state, func.count()).group_by(messages.c.state)).all()
        return {state: n for state, n in rows}

    def oldest_unacked(self) -> datetime | None:
        with self.engine.connect() as conn:
            result: datetime | None = conn.execute(
                select(func.min(messages.c.created_at)).where(messages.c.state.in_(UNACKED))
            ).scalar()
        return result

    def oldest_in_flight(self) -> datetime | None:
        """Creation time of the oldest message routing still owns (uses the deadline index)."""
        with self.engine.connect() as conn:
            result: datetime | None = conn.execute(
                select(func.min(messages.c.created_at))
                .where(messages.c.state.in_(list(IN_FLIGHT)))
            ).scalar()
        return result

    def duplicate_outcomes(self, ids: Iterable[uuid.UUID]) -> dict[str, int]:
        """Audit: messages acked twice, and (message, device) pairs FCM accepted twice."""
        ids = list(ids)
        out = {"acked_twice": 0, "pushed_twice": 0}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                for key, result, cols in (
                        ("acked_twice", Result.ACKED, [attempts.c.message_id]),
                        ("pushed_twice", Result.FCM_OK,
                         [attempts.c.message_id, attempts.c.conn])):
                    dup = (select(*cols)
                           .where(attempts.c.message_id.in_(chunk), attempts.c.result == result)
                           .group_by(*cols).having(func.count() > 1).subquery())
                    out[key] += int(conn.execute(select(func.count()).select_from(dup)).scalar()
                                    or 0)
        return out
