"""What the push path reads and writes: its lease, its claim on the message, a row per device
pushed to, and the attempt's one outcome."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, text, update

from delivery.store.attempts import AttemptRow, insert_attempts
from delivery.store.core import Store
from delivery.store.devices import devices_query, disable_device
from delivery.store.records import DeviceRecord, MessageRecord
from delivery.store.tables import MESSAGE_COLUMNS, attempts, messages
from delivery.vocabulary import Channel, State

_local_leases: set[tuple[uuid.UUID, int]] = set()
_local_lock = threading.Lock()


def _lease_key(msg_id: uuid.UUID, attempt: int) -> int:
    digest = hashlib.sha256(f"delivery.push:{msg_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def push_lease(store: Store, msg_id: uuid.UUID, attempt: int) -> Iterator[bool]:
    """Mutual exclusion for one (message, attempt) while its devices are being sent to.

    Yields True if this caller holds it, False if another execution does (the caller then does
    nothing: the holder finishes the attempt or, if its process dies, Celery redelivers its task).

    PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a pooled
    connection; it locks no row (acks and the sweep are never blocked) and is released when the
    connection closes, so a killed worker cannot leave it behind. SQLite (the embedded,
    single-process mode): a process-local set.
    """
    if store.engine.dialect.name == "postgresql":
        key = _lease_key(msg_id, attempt)
        with store.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    token = (msg_id, attempt)
    with _local_lock:
        got = token not in _local_leases
        if got:
            _local_leases.add(token)
    try:
        yield got
    finally:
        if got:
            with _local_lock:
                _local_leases.discard(token)


def claim_for_push(
    store: Store, msg_id: uuid.UUID, attempt: int, deadline: datetime
) -> MessageRecord | None:
    """One statement: if the message is ``dispatched`` on this attempt, move its ack deadline
    (the recovery sweep keeps away while FCM is called) and return it; else None."""
    stmt = (
        update(messages)
        .where(messages.c.id == msg_id, messages.c.state == State.DISPATCHED,
               messages.c.attempts == attempt)
        .values(ack_deadline=deadline)
        .returning(*MESSAGE_COLUMNS)
    )
    with store.engine.begin() as c:
        row = c.execute(stmt).first()
    return None if row is None else MessageRecord(*row)


def push_targets(
    store: Store, msg_id: uuid.UUID, attempt: int, user: str
) -> tuple[dict[str, str], list[DeviceRecord]]:
    """On one connection: the per-device results already recorded for this attempt (device
    ref -> latest result) and the user's active devices."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(attempts.c.conn, attempts.c.result)
            .where(attempts.c.message_id == msg_id, attempts.c.attempt == attempt,
                   attempts.c.channel == Channel.PUSH, attempts.c.conn.is_not(None))
            .order_by(attempts.c.id)
        ).all()
        devices = conn.execute(devices_query(user, include_disabled=False)).all()
    return ({ref: result for ref, result in rows if result is not None},
            [DeviceRecord(*d) for d in devices])


def record_device_results(
    store: Store,
    msg_id: uuid.UUID,
    attempt: int,
    rows: Sequence[tuple[str, str, str | None]],
    *,
    started_at: datetime,
    now: datetime,
    disable: Sequence[tuple[str, str]] = (),
) -> None:
    """One transaction: a finished attempt row per device (ref, result, detail), and the
    devices whose token FCM rejected disabled with the reason."""
    if not rows and not disable:
        return
    with store.engine.begin() as c:
        if rows:
            per_device = [AttemptRow("fcm", ref, result, detail) for ref, result, detail in rows]
            insert_attempts(c, msg_id, attempt, Channel.PUSH, per_device,
                            started_at=started_at, finished_at=now)
        for token, reason in disable:
            disable_device(c, token, reason[:64], now)


def extend_deadline(store: Store, msg_id: uuid.UUID, attempt: int, deadline: datetime) -> bool:
    """CAS: still ``dispatched`` on this attempt -> move its ack deadline. False if it moved on."""
    return store.transition(
        msg_id, [State.DISPATCHED], State.DISPATCHED, expect_attempts=attempt,
        ack_deadline=deadline,
    )


def finish_push(
    store: Store,
    msg_id: uuid.UUID,
    attempt: int,
    *,
    pushed: bool,
    now: datetime,
    result: str,
    detail: str | None,
    last_error: str | None = None,
) -> bool:
    """The attempt's one outcome, atomically: CAS ``dispatched``/``attempts == attempt`` to
    ``pushed`` (``pushed_at``) or ``pending`` (``last_error``), clearing the ack deadline, and
    close the attempt's summary row (the one routing opened with no connection, else a new
    one). False when another process decided first; then nothing is written."""
    values: dict[str, Any] = {"ack_deadline": None}
    if pushed:
        values["pushed_at"] = now
    else:
        values["last_error"] = last_error
    to_state = State.PUSHED if pushed else State.PENDING
    with store.engine.begin() as c:
        if not store.transition(msg_id, [State.DISPATCHED], to_state, expect_attempts=attempt,
                                conn=c, **values):
            return False
        closed = c.execute(
            update(attempts)
            .where(and_(attempts.c.message_id == msg_id, attempts.c.attempt == attempt,
                        attempts.c.channel == Channel.PUSH, attempts.c.conn.is_(None),
                        attempts.c.finished_at.is_(None)))
            .values(finished_at=now, result=result, detail=detail)
        ).rowcount
        if not closed:
            insert_attempts(c, msg_id, attempt, Channel.PUSH,
                            [AttemptRow(result=result, detail=detail)],
                            started_at=now, finished_at=now)
    return True
