"""Store queries the push path needs beyond ``delivery.store.Store`` (same tables)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, text, update

from delivery.models import State
from delivery.store import A, D, DeviceRecord, M, MessageRecord, Store
from delivery.vocabulary import Channel

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


_MSG_COLS = [M.c[n] for n in MessageRecord.__dataclass_fields__]
_DEV_COLS = [D.c[n] for n in DeviceRecord.__dataclass_fields__]


def claim_for_push(
    store: Store, msg_id: uuid.UUID, attempt: int, deadline: datetime
) -> MessageRecord | None:
    """One statement: if the message is ``dispatched`` on this attempt, move its ack deadline
    (the recovery sweep keeps away while FCM is called) and return it; else None."""
    stmt = (
        update(M)
        .where(M.c.id == msg_id, M.c.state == State.DISPATCHED, M.c.attempts == attempt)
        .values(ack_deadline=deadline)
        .returning(*_MSG_COLS)
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
            select(A.c.conn, A.c.result)
            .where(A.c.message_id == msg_id, A.c.attempt == attempt, A.c.channel == Channel.PUSH,
                   A.c.conn.is_not(None))
            .order_by(A.c.id)
        ).all()
        devices = conn.execute(
            select(*_DEV_COLS)
            .where(D.c.user_id == user, D.c.disabled_at.is_(None))
            .order_by(D.c.id)
        ).all()
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
            c.execute(insert(A), [
                {"message_id": msg_id, "attempt": attempt, "channel": Channel.PUSH, "node": "fcm",
                 "conn": ref, "started_at": started_at, "finished_at": now, "result": result,
                 "detail": detail}
                for ref, result, detail in rows
            ])
        for token, reason in disable:
            c.execute(
                update(D).where(D.c.token == token, D.c.disabled_at.is_(None))
                .values(disabled_at=now, disabled_reason=reason[:64])
            )


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
            update(A)
            .where(and_(A.c.message_id == msg_id, A.c.attempt == attempt,
                        A.c.channel == Channel.PUSH, A.c.conn.is_(None), A.c.finished_at.is_(None)))
            .values(finished_at=now, result=result, detail=detail)
        ).rowcount
        if not closed:
            c.execute(insert(A).values(
                message_id=msg_id, attempt=attempt, channel=Channel.PUSH, node=None, conn=None,
                started_at=now, finished_at=now, result=result, detail=detail,
            ))
    return True


# -- devices ------------------------------------------------------------------------------------

def devices_of(store: Store, user: str, *, include_disabled: bool = True) -> list[DeviceRecord]:
    q = select(*_DEV_COLS).where(D.c.user_id == user).order_by(D.c.id)
    if not include_disabled:
        q = q.where(D.c.disabled_at.is_(None))
    with store.engine.connect() as conn:
        return [DeviceRecord(*r) for r in conn.execute(q).all()]


def remove_device(store: Store, token: str) -> bool:
    """Delete a device row (the user logged out on it). True if it existed."""
    with store.engine.begin() as c:
        return bool(c.execute(delete(D).where(D.c.token == token)).rowcount)
