"""Message rows (``messages``): storing, routing claims, replay and the recovery sweep.

Every state change is a conditional update (``UPDATE ... WHERE id = ? AND state IN (...)``)
that reports whether it won, so racing tasks, late acks and the recovery sweep can never give
one message two outcomes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, and_, bindparam, func, select, update
from sqlalchemy.engine import Connection

from delivery.conversations.ids import dm_conversation_id
from delivery.store.attempts import NOWHERE, AttemptRow, insert_attempt_rows, insert_attempts
from delivery.store.base import StoreBase
from delivery.store.records import MessageRecord, Target
from delivery.store.tables import MESSAGE_COLUMNS, conversations, messages
from delivery.validation import SendRequest
from delivery.vocabulary import IN_FLIGHT, UNACKED, Channel, ConversationKind, State


class _Duplicate(Exception):
    """Roll the transaction back (and with it the seq taken): the message is stored already."""


def _rows(targets: Sequence[Target]) -> list[AttemptRow]:
    return [AttemptRow(t.node, t.conn) for t in targets]


class MessageQueries(StoreBase):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Built once, values passed as parameters: the compiled form is cached, which halves
        # the CPU of the hot path's insert (a statement with inline values is rebuilt per call).
        # No conflict target: a duplicate hits both unique keys (the id derives from sender and
        # client_msg_id), and concurrent inserts must all fall through to "already stored".
        # The recipient's previous seq in the conversation (its next message's ``prev``).
        prev = (select(func.coalesce(func.max(messages.c.conv_seq), 0))
                .where(messages.c.conversation_id == bindparam("p_conv"),
                       messages.c.recipient == bindparam("p_rcp"))
                .scalar_subquery())
        self._accept_stmt = (self._upsert(messages).values(conv_prev=prev)
                             .on_conflict_do_nothing().returning(*MESSAGE_COLUMNS))
        # A direct conversation's seq: created at 1 by its first message, then incremented;
        # the row lock orders concurrent sends between the same two users.
        up = self._upsert(conversations)
        self._dm_seq_stmt = (up.on_conflict_do_update(
            index_elements=[conversations.c.id],
            set_={"last_seq": conversations.c.last_seq + 1})
            .returning(conversations.c.last_seq))
        # Batches (accept_dispatched_many): every conversation of a batch takes its k seqs in
        # one multi-row upsert (each row names its k), and the messages go in one multi-row
        # insert; a message after another to the same recipient in the same batch gets its
        # ``prev`` as a parameter (a statement does not see its own rows).
        many = self._upsert(conversations)
        self._dm_seq_many_stmt = (many.on_conflict_do_update(
            index_elements=[conversations.c.id],
            set_={"last_seq": conversations.c.last_seq + many.excluded.last_seq})
            .returning(conversations.c.id, conversations.c.last_seq))
        self._accept_many_stmt = (
            self._upsert(messages)
            .values(conv_prev=func.coalesce(bindparam("p_prev", type_=Integer), prev))
            .on_conflict_do_nothing().returning(*MESSAGE_COLUMNS))
        self._existing_stmt = select(messages.c.id).where(
            messages.c.id.in_(bindparam("ids", expanding=True)))

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
        conv = dm_conversation_id(sender, recipient)
        try:
            with self.engine.begin() as conn:
                values["conv_seq"] = conn.execute(self._dm_seq_stmt, {
                    "id": conv, "kind": ConversationKind.DIRECT.value, "last_seq": 1,
                    "created_at": now}).scalar_one()
                values.update(conversation_id=conv, p_conv=conv, p_rcp=recipient)
                row = conn.execute(self._accept_stmt, values).first()
                if row is None:
                    raise _Duplicate
                if dispatch_to:
                    insert_attempts(conn, message_id, 1, Channel.WS, _rows(dispatch_to),
                                    started_at=now)
                return MessageRecord(*row), True
        except _Duplicate:
            pass
        if client_msg_id is None:
            where = messages.c.id == message_id
        else:
            where = and_(messages.c.sender == sender, messages.c.client_msg_id == client_msg_id)
        with self.engine.connect() as conn:
            existing = conn.execute(select(*MESSAGE_COLUMNS).where(where)).first()
        if existing is None:  # pragma: no cover - conflict implies the row exists
            raise RuntimeError("insert conflicted but no existing message was found")
        return MessageRecord(*existing), False

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
        stmt = (update(messages)
                .where(messages.c.id == msg_id, messages.c.state == State.ACCEPTED.value,
                       messages.c.attempts == 0)
                .values(state=State.DISPATCHED.value, attempts=1, ack_deadline=deadline)
                .returning(*MESSAGE_COLUMNS))
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                return None
            insert_attempts(conn, msg_id, 1, Channel.WS, _rows(targets), started_at=now)
        return MessageRecord(*row)

    def accept_dispatched_many(
        self, items: Sequence[tuple[SendRequest, Sequence[Target]]], *, now: datetime,
        deadline: datetime,
    ) -> list[MessageRecord]:
        """``accept_request(..., dispatch_to=targets)`` for a batch of direct messages, in one
        transaction and one commit (group commit) and a fixed number of statements whatever
        the batch's size: which are stored already, every conversation's seqs (one upsert),
        every message (one insert), every attempt row (one insert). Returns the messages
        this call created, in the order given. Messages already stored are left out (the
        caller handles each alone, as ``accept`` would); a duplicate stored concurrently by
        another process rolls the whole batch back (no seq is taken) and returns nothing, so
        each message is then handled alone."""
        if not items:
            return []
        rows: list[MessageRecord] = []
        try:
            with self.engine.begin() as conn:
                existing = {r[0] for r in conn.execute(
                    self._existing_stmt, {"ids": [req.message_id for req, _ in items]})}
                todo = [(req, ts) for req, ts in items if req.message_id not in existing]
                if not todo:
                    return []
                convs = [dm_conversation_id(req.sender, req.recipient) for req, _ in todo]
                # Conversations in one order: two batches never wait on each other's rows in
                # turn (a multi-row upsert locks its rows in the order of its values).
                counts = Counter(convs)
                last = dict(conn.execute(self._dm_seq_many_stmt, [
                    {"id": conv, "kind": ConversationKind.DIRECT.value, "last_seq": k,
                     "created_at": now} for conv, k in sorted(counts.items())]).all())
                next_seq = {conv: last[conv] - k + 1 for conv, k in counts.items()}
                prev: dict[tuple[str, str], int] = {}
                params = []
                for (req, _), conv in zip(todo, convs, strict=True):
                    seq = next_seq[conv]
                    next_seq[conv] = seq + 1
                    params.append({
                        "id": req.message_id, "sender": req.sender,
                        "recipient": req.recipient, "client_msg_id": req.client_msg_id,
                        "body": req.body, "created_at": now,
                        "expires_at": now + timedelta(seconds=req.ttl_s),
                        "state": State.DISPATCHED.value, "attempts": 1,
                        "ack_deadline": deadline, "conv_seq": seq, "conversation_id": conv,
                        "p_prev": prev.get((conv, req.recipient)), "p_conv": conv,
                        "p_rcp": req.recipient})
                    prev[(conv, req.recipient)] = seq
                rows = [MessageRecord(*r) for r in conn.execute(self._accept_many_stmt, params)]
                if len(rows) != len(todo):
                    raise _Duplicate
                targets = {req.message_id: ts for req, ts in todo}
                insert_attempt_rows(conn, [(m.id, 1, Channel.WS, r)
                                           for m in rows for r in _rows(targets[m.id])],
                                    started_at=now)
        except _Duplicate:
            return []
        order = {req.message_id: i for i, (req, _) in enumerate(items)}
        return sorted(rows, key=lambda m: order[m.id])

    def get(self, msg_id: uuid.UUID) -> MessageRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*MESSAGE_COLUMNS).where(messages.c.id == msg_id)).first()
        return None if row is None else MessageRecord(*row)

    def get_many(self, ids: Iterable[uuid.UUID]) -> list[MessageRecord]:
        ids = list(ids)
        if not ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(*MESSAGE_COLUMNS).where(messages.c.id.in_(ids))).all()
        return [MessageRecord(*r) for r in rows]

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
        cond = [messages.c.id == msg_id, messages.c.state.in_(list(from_states))]
        if expect_attempts is not None:
            cond.append(messages.c.attempts == expect_attempts)
        stmt = update(messages).where(and_(*cond)).values(state=to_state, **values)
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
            insert_attempts(conn, msg.id, attempt, channel, _rows(targets) or NOWHERE,
                            started_at=now)
        return attempt

    def unacked_for(
        self, user: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[MessageRecord]:
        """The user's messages not yet acked, oldest first (replay)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*MESSAGE_COLUMNS)
                .where(messages.c.recipient == user, messages.c.state.in_(UNACKED),
                       messages.c.seq > after_seq)
                .order_by(messages.c.seq)
                .limit(limit)
            ).all()
        return [MessageRecord(*r) for r in rows]

    def stalled(self, now: datetime, limit: int) -> list[MessageRecord]:
        """In-flight messages whose ack deadline has passed, oldest first (read only)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*MESSAGE_COLUMNS)
                .where(messages.c.state.in_(IN_FLIGHT), messages.c.ack_deadline < now)
                .order_by(messages.c.ack_deadline)
                .limit(limit)
            ).all()
        return [MessageRecord(*r) for r in rows]

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
        due = (select(messages.c.seq)
               .where(messages.c.state.in_(IN_FLIGHT), messages.c.ack_deadline < db_now)
               .order_by(messages.c.ack_deadline).limit(limit))
        if pg:
            due = due.with_for_update(skip_locked=True)
        stmt = (update(messages).where(messages.c.seq.in_(due.scalar_subquery()))
                .values(ack_deadline=db_now + timedelta(seconds=lease_s))
                .returning(*MESSAGE_COLUMNS))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return sorted((MessageRecord(*r) for r in rows), key=lambda m: m.seq)

    def db_time(self) -> datetime:
        """The database's clock (PostgreSQL), or this process's (SQLite: one process)."""
        if self._dialect != "postgresql":
            return datetime.now(UTC)
        with self.engine.connect() as conn:
            value: datetime = conn.execute(select(func.clock_timestamp())).scalar_one()
        return value.astimezone(UTC)

    def expire_pending(self, now: datetime, limit: int) -> int:
        """Pending messages past their TTL become ``expired`` (still replayable)."""
        with self.engine.begin() as c:
            ids = select(messages.c.seq).where(messages.c.state == State.PENDING.value,
                                               messages.c.expires_at < now)
            return int(c.execute(
                update(messages).where(messages.c.seq.in_(ids.limit(limit).scalar_subquery()),
                                       messages.c.state == State.PENDING.value)
                .values(state=State.EXPIRED.value)
            ).rowcount)
