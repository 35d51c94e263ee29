"""The durable message store.

Every state change is a conditional update (``UPDATE ... WHERE id = ? AND state IN (...)``)
that reports whether it won, so racing tasks, late acks and the recovery sweep can never give
one message two outcomes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from delivery.models import IN_FLIGHT, UNACKED, DeliveryAttempt, Device, Message, State
from delivery.validation import SendRequest
from delivery.vocabulary import Channel, Result

M = cast(Table, Message.__table__)
A = cast(Table, DeliveryAttempt.__table__)
D = cast(Table, Device.__table__)


def _json_fields(record: Any) -> dict[str, Any]:
    """A record's fields as JSON-friendly values (UUIDs and datetimes as strings)."""
    out: dict[str, Any] = {}
    for name in record.__dataclass_fields__:
        value = getattr(record, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    return out


@dataclass(frozen=True)
class MessageRecord:
    id: uuid.UUID
    seq: int
    sender: str
    recipient: str
    client_msg_id: str | None
    body: Any
    created_at: datetime
    expires_at: datetime
    state: str
    attempts: int
    ack_deadline: datetime | None
    delivered_at: datetime | None
    delivered_conn: str | None
    pushed_at: datetime | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return _json_fields(self)


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    message_id: uuid.UUID
    attempt: int
    channel: str
    node: str | None
    conn: str | None
    started_at: datetime
    finished_at: datetime | None
    result: str | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return _json_fields(self)


@dataclass(frozen=True)
class DeviceRecord:
    id: int
    user_id: str
    token: str
    platform: str
    created_at: datetime
    last_seen_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True)
class Target:
    """One connection a frame goes to in an attempt."""

    node: str
    conn: str


_MSG_COLS = [M.c[name] for name in MessageRecord.__dataclass_fields__]


def _msg(row: Any) -> MessageRecord:
    return MessageRecord(*row)


class Store:
    """Thread-safe (one engine, a connection per call) access to messages, attempts, devices."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        # Built once, values passed as parameters: the compiled form is cached, which halves
        # the CPU of the hot path's insert (a statement with inline values is rebuilt per call).
        # No conflict target: a duplicate hits both unique keys (the id derives from sender and
        # client_msg_id), and concurrent inserts must all fall through to "already stored".
        self._accept_stmt = self._insert().on_conflict_do_nothing().returning(*_MSG_COLS)

    # -- messages ---------------------------------------------------------------------------

    def _insert(self) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(M)
        if self._dialect == "sqlite":
            return sqlite.insert(M)
        raise RuntimeError(f"unsupported database dialect {self._dialect!r}")

    def accept(
        self,
        *,
        message_id: uuid.UUID,
        sender: str,
        recipient: str,
        body: Any,
        client_msg_id: str | None,
        now: datetime,
        ttl_s: float,
        deadline: datetime,
        dispatch_to: Sequence[Target] | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Store a message once. Returns (message, created); a duplicate returns the first one.

        ``deadline`` is when the recovery sweep takes over if routing never happens. With
        ``dispatch_to``, the first WebSocket attempt is claimed in the same transaction (state
        ``dispatched``, attempt 1 with one row per target): the message is still durable before
        any frame leaves, and the hot path costs one commit instead of two.
        """
        values = {
            "id": message_id,
            "sender": sender,
            "recipient": recipient,
            "client_msg_id": client_msg_id,
            "body": body,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
            "state": State.ACCEPTED.value if dispatch_to is None else State.DISPATCHED.value,
            "attempts": 0 if dispatch_to is None else 1,
            "ack_deadline": deadline,
        }
        with self.engine.begin() as conn:
            row = conn.execute(self._accept_stmt, values).first()
            if row is not None:
                if dispatch_to:
                    conn.execute(insert(A), [
                        {"message_id": message_id, "attempt": 1, "channel": Channel.WS,
                         "node": t.node, "conn": t.conn, "started_at": now}
                        for t in dispatch_to
                    ])
                return _msg(row), True
            if client_msg_id is None:
                where = M.c.id == message_id
            else:
                where = and_(M.c.sender == sender, M.c.client_msg_id == client_msg_id)
            existing = conn.execute(select(*_MSG_COLS).where(where)).first()
        if existing is None:  # pragma: no cover - conflict implies the row exists
            raise RuntimeError("insert conflicted but no existing message was found")
        return _msg(existing), False

    def accept_request(
        self,
        req: SendRequest,
        *,
        now: datetime,
        deadline: datetime,
        dispatch_to: Sequence[Target] | None = None,
    ) -> tuple[MessageRecord, bool]:
        """``accept`` for a validated send request (the send task, the router, durable sends)."""
        return self.accept(
            message_id=req.message_id, sender=req.sender, recipient=req.recipient,
            body=req.body, client_msg_id=req.client_msg_id, now=now, ttl_s=req.ttl_s,
            deadline=deadline, dispatch_to=dispatch_to,
        )

    def claim_first_attempt(
        self, msg_id: uuid.UUID, *, targets: Sequence[Target], now: datetime,
        deadline: datetime,
    ) -> MessageRecord | None:
        """Route a message stored ahead of its task (the default send): claim attempt 1 with
        its targets in one transaction — a compare-and-set on ``accepted`` with no attempt
        yet, returning the row, so no separate read is needed. None: not stored here, or
        already routed (a duplicate task, or the sweep got there first)."""
        stmt = (update(M)
                .where(M.c.id == msg_id, M.c.state == State.ACCEPTED.value, M.c.attempts == 0)
                .values(state=State.DISPATCHED.value, attempts=1, ack_deadline=deadline)
                .returning(*_MSG_COLS))
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                return None
            conn.execute(insert(A), [
                {"message_id": msg_id, "attempt": 1, "channel": "ws", "node": t.node,
                 "conn": t.conn, "started_at": now}
                for t in targets
            ])
        return _msg(row)

    def get(self, msg_id: uuid.UUID) -> MessageRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_MSG_COLS).where(M.c.id == msg_id)).first()
        return None if row is None else _msg(row)

    def get_many(self, ids: Iterable[uuid.UUID]) -> list[MessageRecord]:
        ids = list(ids)
        if not ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_MSG_COLS).where(M.c.id.in_(ids))).all()
        return [_msg(r) for r in rows]

    def transition(
        self,
        msg_id: uuid.UUID,
        from_states: Sequence[str],
        to_state: str,
        *,
        expect_attempts: int | None = None,
        conn: Connection | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set on the state (and optionally the attempt count). True if it won."""
        cond = [M.c.id == msg_id, M.c.state.in_(list(from_states))]
        if expect_attempts is not None:
            cond.append(M.c.attempts == expect_attempts)
        stmt = update(M).where(and_(*cond)).values(state=to_state, **values)
        if conn is not None:
            return conn.execute(stmt).rowcount == 1
        with self.engine.begin() as c:
            return c.execute(stmt).rowcount == 1

    def start_attempt(
        self,
        msg: MessageRecord,
        *,
        channel: str,
        targets: Sequence[Target],
        now: datetime,
        deadline: datetime,
        to_state: str = State.DISPATCHED,
    ) -> int | None:
        """Claim the next attempt (CAS on state and attempt count) and record its targets.

        Returns the new attempt number, or None when another process changed the message first.
        """
        attempt = msg.attempts + 1
        with self.engine.begin() as conn:
            won = self.transition(
                msg.id, IN_FLIGHT, to_state, expect_attempts=msg.attempts, conn=conn,
                attempts=attempt, ack_deadline=deadline,
            )
            if not won:
                return None
            rows = [
                {"message_id": msg.id, "attempt": attempt, "channel": channel,
                 "node": t.node, "conn": t.conn, "started_at": now}
                for t in targets
            ] or [{"message_id": msg.id, "attempt": attempt, "channel": channel,
                   "node": None, "conn": None, "started_at": now}]
            conn.execute(insert(A), rows)
        return attempt

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
        cond = [A.c.message_id == msg_id, A.c.attempt == attempt, A.c.finished_at.is_(None)]
        if conn_id is not None:
            cond.append(A.c.conn == conn_id)
        stmt = update(A).where(and_(*cond)).values(finished_at=now, result=result, detail=detail)
        if connection is not None:
            connection.execute(stmt)
            return
        with self.engine.begin() as c:
            c.execute(stmt)

    def add_attempt(
        self,
        msg_id: uuid.UUID,
        attempt: int,
        *,
        channel: str,
        now: datetime,
        result: str,
        node: str | None = None,
        conn_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record a finished attempt row (push results per device, offline decisions)."""
        with self.engine.begin() as c:
            c.execute(insert(A).values(
                message_id=msg_id, attempt=attempt, channel=channel, node=node, conn=conn_id,
                started_at=now, finished_at=now, result=result, detail=detail,
            ))

    def record_ack(self, msg_id: uuid.UUID, user: str, conn_id: str, now: datetime) -> bool:
        """A live connection of ``user`` acked: the message is delivered (once). True if it won."""
        return self.record_acks([(msg_id, user, conn_id)], now)[0]

    def record_acks(
        self, acks: Sequence[tuple[uuid.UUID, str, str]], now: datetime
    ) -> list[bool]:
        """Batch form of ``record_ack`` (one transaction): the gateway batches acks."""
        results: list[bool] = []
        with self.engine.begin() as c:
            for msg_id, user, conn_id in acks:
                row = c.execute(
                    update(M)
                    .where(M.c.id == msg_id, M.c.recipient == user, M.c.state.in_(UNACKED))
                    .values(state=State.DELIVERED.value, delivered_at=now,
                            delivered_conn=conn_id, ack_deadline=None)
                    .returning(M.c.attempts)
                ).first()
                if row is None:
                    results.append(False)
                    continue
                self.finish_attempts(msg_id, row[0], Result.ACKED, now=now, conn_id=conn_id,
                                     connection=c)
                self.finish_attempts(msg_id, row[0], Result.SUPERSEDED, now=now, connection=c)
                results.append(True)
        return results

    def unacked_for(
        self, user: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[MessageRecord]:
        """The user's messages not yet acked, oldest first (replay)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*_MSG_COLS)
                .where(M.c.recipient == user, M.c.state.in_(UNACKED), M.c.seq > after_seq)
                .order_by(M.c.seq)
                .limit(limit)
            ).all()
        return [_msg(r) for r in rows]

    def stalled(self, now: datetime, limit: int) -> list[MessageRecord]:
        """In-flight messages whose ack deadline has passed, oldest first (read only)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*_MSG_COLS)
                .where(M.c.state.in_(IN_FLIGHT), M.c.ack_deadline < now)
                .order_by(M.c.ack_deadline)
                .limit(limit)
            ).all()
        return [_msg(r) for r in rows]

    def claim_stalled(self, limit: int, lease_s: float,
                      now: datetime | None = None) -> list[MessageRecord]:
        """Claim up to ``limit`` in-flight messages whose ack deadline has passed (the
        recovery sweep): each claimed message's deadline moves ``lease_s`` ahead, in one
        committed statement, so no other sweep takes it meanwhile — and if this claimer stalls
        (paused, killed), the claim simply runs out and another sweep takes it.

        No lock outlives the statement; concurrent claimers skip each other's rows
        (``FOR UPDATE SKIP LOCKED``). On PostgreSQL, deadlines are compared on the database's
        clock, so a worker whose clock is off can neither re-dispatch early nor never;
        ``now`` is used only on SQLite (one process: its clock is the only clock).
        """
        pg = self._dialect == "postgresql"
        db_now: Any = func.now() if pg else (now if now is not None else datetime.now(UTC))
        due = (select(M.c.seq)
               .where(M.c.state.in_(IN_FLIGHT), M.c.ack_deadline < db_now)
               .order_by(M.c.ack_deadline).limit(limit))
        if pg:
            due = due.with_for_update(skip_locked=True)
        stmt = (update(M).where(M.c.seq.in_(due.scalar_subquery()))
                .values(ack_deadline=db_now + timedelta(seconds=lease_s))
                .returning(*_MSG_COLS))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return sorted((_msg(r) for r in rows), key=lambda m: m.seq)

    def db_time(self) -> datetime:
        """The database's clock (PostgreSQL), or this process's (SQLite: one process)."""
        if self._dialect != "postgresql":
            return datetime.now(UTC)
        with self.engine.connect() as conn:
            value: datetime = conn.execute(select(func.clock_timestamp())).scalar_one()
        return value.astimezone(UTC)

    def nacked_conns(self, msg_id: uuid.UUID) -> set[str]:
        """Connections a gateway has reported gone for this message (any attempt)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(A.c.conn).where(
                    A.c.message_id == msg_id, A.c.result == Result.NACKED, A.c.conn.is_not(None)
                )
            ).all()
        return {r[0] for r in rows}

    def expire_pending(self, now: datetime, limit: int) -> int:
        """Pending messages past their TTL become ``expired`` (still replayable)."""
        with self.engine.begin() as c:
            ids = select(M.c.seq).where(M.c.state == State.PENDING.value, M.c.expires_at < now)
            return int(c.execute(
                update(M).where(M.c.seq.in_(ids.limit(limit).scalar_subquery()),
                                M.c.state == State.PENDING.value)
                .values(state=State.EXPIRED.value)
            ).rowcount)

    def attempts_of(self, msg_id: uuid.UUID) -> list[AttemptRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*[A.c[n] for n in AttemptRecord.__dataclass_fields__])
                .where(A.c.message_id == msg_id)
                .order_by(A.c.attempt, A.c.id)
            ).all()
        return [AttemptRecord(*r) for r in rows]

    def duplicate_outcomes(self, ids: Iterable[uuid.UUID]) -> dict[str, int]:
        """Audit: messages acked twice, and (message, device) pairs FCM accepted twice."""
        from sqlalchemy import func

        ids = list(ids)
        out = {"acked_twice": 0, "pushed_twice": 0}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                for key, result, cols in (
                        ("acked_twice", Result.ACKED, [A.c.message_id]),
                        ("pushed_twice", Result.FCM_OK, [A.c.message_id, A.c.conn])):
                    dup = (select(*cols).where(A.c.message_id.in_(chunk), A.c.result == result)
                           .group_by(*cols).having(func.count() > 1).subquery())
                    out[key] += int(conn.execute(select(func.count()).select_from(dup)).scalar()
                                    or 0)
        return out

    def count_by_state(self) -> dict[str, int]:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            rows = conn.execute(select(M.c.state, func.count()).group_by(M.c.state)).all()
        return {state: n for state, n in rows}

    def oldest_unacked(self) -> datetime | None:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(M.c.created_at)).where(M.c.state.in_(UNACKED))
            ).scalar()

    # -- devices ------------------------------------------------------------------------------

    def register_device(self, user: str, token: str, platform: str, now: datetime) -> DeviceRecord:
        """Register (or re-activate and re-own) an FCM token for ``user``."""
        ins = (postgresql.insert(D) if self._dialect == "postgresql" else sqlite.insert(D)).values(
            user_id=user, token=token, platform=platform, created_at=now, last_seen_at=now,
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["token"],
            set_={"user_id": user, "platform": platform, "last_seen_at": now,
                  "disabled_at": None, "disabled_reason": None},
        ).returning(*[D.c[n] for n in DeviceRecord.__dataclass_fields__])
        with self.engine.begin() as c:
            row = c.execute(stmt).one()
        return DeviceRecord(*row)

    def active_devices(self, user: str) -> list[DeviceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*[D.c[n] for n in DeviceRecord.__dataclass_fields__])
                .where(D.c.user_id == user, D.c.disabled_at.is_(None))
                .order_by(D.c.id)
            ).all()
        return [DeviceRecord(*r) for r in rows]

    def disable_device(self, token: str, reason: str, now: datetime) -> bool:
        with self.engine.begin() as c:
            return c.execute(
                update(D).where(D.c.token == token, D.c.disabled_at.is_(None))
                .values(disabled_at=now, disabled_reason=reason)
            ).rowcount == 1
