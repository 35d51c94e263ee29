"""Conversations, membership spans and group messages (``conversations``,
``conversation_members``, ``conversation_messages`` and the recipients' ``messages`` rows).

Every write that depends on membership or assigns a seq first updates the conversation's row
(``last_seq``): the row lock orders concurrent senders and membership changes, so seqs are
gap-free, rows are inserted in seq order, and each message sees one membership.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from delivery.conversations import membership, receipts
from delivery.conversations.ids import ConversationError, delivery_id, dm_members
from delivery.conversations.requests import GroupSendRequest
from delivery.store.base import StoreBase
from delivery.store.records import ConversationRecord, MemberRecord, MessageRecord, Target
from delivery.store.tables import (
    CONVERSATION_COLUMNS,
    MEMBER_COLUMNS,
    MESSAGE_COLUMNS,
    attempts,
    conv_messages,
    conversations,
    members,
    messages,
)
from delivery.vocabulary import Channel, ConversationKind, Kind, State

# Where a recipient's first attempt goes, decided inside the storing transaction (None: the
# row stays ``accepted`` and is routed after the commit).
TargetsFor = Callable[[str], Sequence[Target] | None]


class _Duplicate(Exception):
    """Roll the transaction back: the message was stored already (same sender and id)."""


def _lock(c: Connection, conv_id: str, *, bump: bool) -> int:
    """Lock the group conversation's row; returns its ``last_seq`` (incremented if ``bump``)."""
    value = conversations.c.last_seq + 1 if bump else conversations.c.last_seq
    row = c.execute(
        update(conversations)
        .where(conversations.c.id == conv_id, conversations.c.kind == ConversationKind.GROUP)
        .values(last_seq=value).returning(conversations.c.last_seq)
    ).first()
    if row is None:
        raise ConversationError("conversation", f"unknown conversation {conv_id!r}")
    return int(row[0])


def _current(c: Connection, conv_id: str) -> list[str]:
    return list(c.execute(
        select(members.c.user_id)
        .where(members.c.conversation_id == conv_id, members.c.left_seq.is_(None))
    ).scalars())


def last_seqs(c: Connection, conv_id: str, users: Sequence[str]) -> dict[str, int]:
    """Each user's newest seq in the conversation (its next message's ``prev``)."""
    if not users:
        return {}
    rows = c.execute(
        select(messages.c.recipient, func.max(messages.c.conv_seq))
        .where(messages.c.conversation_id == conv_id, messages.c.recipient.in_(list(users)))
        .group_by(messages.c.recipient)
    ).all()
    return {r[0]: int(r[1] or 0) for r in rows}


def store_receipts(c: Connection, items: Sequence[receipts.Receipt], *, sender: Callable[
        [receipts.Receipt], str], now: datetime, ttl_s: float, upsert: Any) -> None:
    """Insert receipt rows (state ``pending``: replayed, never pushed); a receipt stored
    already (same deterministic id) is left as it is."""
    if not items:
        return
    expires = now + timedelta(seconds=ttl_s)
    c.execute(upsert(messages).on_conflict_do_nothing(), [
        {"id": r.id, "sender": sender(r), "recipient": r.to, "client_msg_id": None,
         "body": r.payload, "created_at": now, "expires_at": expires,
         "state": State.PENDING.value, "attempts": 0, "ack_deadline": None,
         "kind": Kind.RECEIPT.value, "conversation_id": r.payload["conversation"],
         "conv_seq": None, "conv_prev": None, "parent": uuid.UUID(r.payload["message"])}
        for r in items
    ])


class ConversationQueries(StoreBase):
    # -- conversations and membership ------------------------------------------------------

    def create_conversation(self, conv_id: str, users: Sequence[str], *, now: datetime,
                            limit: int) -> bool:
        """Create a group conversation with its first members (joined at seq 0). False: it
        exists already with exactly these members (a retried create); with other members,
        :class:`ConversationError`."""
        membership.check_create(users, limit)
        with self.engine.begin() as c:
            created = c.execute(
                self._upsert(conversations).on_conflict_do_nothing()
                .returning(conversations.c.id),
                {"id": conv_id, "kind": ConversationKind.GROUP.value, "last_seq": 0,
                 "created_at": now},
            ).first()
            if created is None:
                _lock(c, conv_id, bump=False)
                if sorted(_current(c, conv_id)) != sorted(users):
                    raise ConversationError("conversation", f"{conv_id!r} exists already")
                return False
            c.execute(insert(members), [
                {"conversation_id": conv_id, "user_id": u, "joined_seq": 0, "left_seq": None,
                 "read_seq": 0, "joined_at": now, "left_at": None} for u in users])
        return True

    def add_members(self, conv_id: str, users: Sequence[str], *, now: datetime,
                    limit: int) -> list[str]:
        """Add members from the next message on; returns those added (not already members)."""
        with self.engine.begin() as c:
            seq = _lock(c, conv_id, bump=False)
            new = membership.check_add(set(_current(c, conv_id)), users, limit)
            if new:
                c.execute(insert(members), [
                    {"conversation_id": conv_id, "user_id": u, "joined_seq": seq,
                     "left_seq": None, "read_seq": seq, "joined_at": now, "left_at": None}
                    for u in new])
        return new

    def remove_members(self, conv_id: str, users: Sequence[str], *, now: datetime) -> list[str]:
        """End the members' spans at the current seq; returns those removed."""
        with self.engine.begin() as c:
            seq = _lock(c, conv_id, bump=False)
            current = set(_current(c, conv_id))
            gone = [u for u in dict.fromkeys(users) if u in current]
            if gone:
                c.execute(update(members).where(
                    members.c.conversation_id == conv_id, members.c.user_id.in_(gone),
                    members.c.left_seq.is_(None)).values(left_seq=seq, left_at=now))
        return gone

    def conversation(self, conv_id: str) -> ConversationRecord | None:
        with self.engine.connect() as c:
            row = c.execute(select(*CONVERSATION_COLUMNS)
                            .where(conversations.c.id == conv_id)).first()
        return None if row is None else ConversationRecord(*row)

    def members_of(self, conv_id: str, *, current: bool = True) -> list[MemberRecord]:
        q = select(*MEMBER_COLUMNS).where(members.c.conversation_id == conv_id)
        if current:
            q = q.where(members.c.left_seq.is_(None))
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(members.c.user_id, members.c.joined_seq)).all()
        return [MemberRecord(*r) for r in rows]

    # -- group messages ----------------------------------------------------------------------

    def accept_group(
        self, req: GroupSendRequest, *, now: datetime, deadline: datetime,
        targets_for: TargetsFor | None = None,
    ) -> tuple[list[MessageRecord], bool]:
        """Store a group message once: the next seq, one row per current member but the
        sender (one multi-row insert), in one transaction. A recipient for whom
        ``targets_for`` gives targets has attempt 1 claimed in the same transaction.
        Returns (recipient rows, created); a duplicate returns the stored rows."""
        try:
            with self.engine.begin() as c:
                seq = _lock(c, req.conversation, bump=True)
                users = membership.recipients(_current(c, req.conversation), req.sender)
                stored = c.execute(
                    self._upsert(conv_messages).on_conflict_do_nothing()
                    .returning(conv_messages.c.id),
                    {"id": req.message_id, "conversation_id": req.conversation, "seq": seq,
                     "sender": req.sender, "client_msg_id": req.client_msg_id,
                     "recipients": len(users), "delivered": 0, "read": 0, "created_at": now},
                ).first()
                if stored is None:
                    raise _Duplicate
                if not users:
                    return [], True
                prevs = last_seqs(c, req.conversation, users)
                expires = now + timedelta(seconds=req.ttl_s)
                rows: list[dict[str, Any]] = []
                claims: list[tuple[uuid.UUID, Sequence[Target]]] = []
                for u in users:
                    targets = targets_for(u) if targets_for is not None else None
                    did = delivery_id(req.message_id, u)
                    if targets:
                        claims.append((did, targets))
                    rows.append({
                        "id": did, "sender": req.sender, "recipient": u, "client_msg_id": None,
                        "body": req.body, "created_at": now, "expires_at": expires,
                        "state": (State.DISPATCHED if targets else State.ACCEPTED).value,
                        "attempts": 1 if targets else 0, "ack_deadline": deadline,
                        "kind": Kind.MESSAGE.value, "conversation_id": req.conversation,
                        "conv_seq": seq, "conv_prev": prevs.get(u, 0),
                        "parent": req.message_id})
                out = c.execute(insert(messages).returning(*MESSAGE_COLUMNS,
                                                           sort_by_parameter_order=True),
                                rows).all()
                _open_attempts(c, claims, now)
        except _Duplicate:
            return self.group_rows(req.message_id), False
        return [MessageRecord(*r) for r in out], True

    def group_rows(self, message_id: uuid.UUID) -> list[MessageRecord]:
        """A group message's recipient rows, by recipient."""
        with self.engine.connect() as c:
            rows = c.execute(
                select(*MESSAGE_COLUMNS)
                .where(messages.c.parent == message_id, messages.c.kind == Kind.MESSAGE.value)
                .order_by(messages.c.recipient)
            ).all()
        return [MessageRecord(*r) for r in rows]

    def group_message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """The group message's own row (seq, sender, counters), or None."""
        with self.engine.connect() as c:
            row = c.execute(select(conv_messages).where(conv_messages.c.id == message_id)
                            ).mappings().first()
        return None if row is None else dict(row)

    def claim_first_attempts(
        self, claims: Sequence[tuple[uuid.UUID, Sequence[Target]]], *, now: datetime,
        deadline: datetime,
    ) -> list[MessageRecord]:
        """Claim attempt 1 of several stored rows at once (a group message stored ahead of
        its task): one compare-and-set UPDATE for all, one insert of their attempt rows. Only
        the rows still ``accepted`` with no attempt are claimed and returned."""
        if not claims:
            return []
        targets = dict(claims)
        with self.engine.begin() as c:
            out = c.execute(
                update(messages)
                .where(messages.c.id.in_(list(targets)), messages.c.state == State.ACCEPTED,
                       messages.c.attempts == 0)
                .values(state=State.DISPATCHED.value, attempts=1, ack_deadline=deadline)
                .returning(*MESSAGE_COLUMNS)
            ).all()
            won = [MessageRecord(*r) for r in out]
            _open_attempts(c, [(m.id, targets[m.id]) for m in won], now)
        return won

    # -- read --------------------------------------------------------------------------------

    def record_read(self, user: str, conv_id: str, seq: int, *, now: datetime,
                    ttl_s: float, direct: bool = False) -> set[str]:
        """``user`` read ``conv_id`` up to ``seq``: store the senders' ``read`` receipts;
        returns the users owed new receipts. A seq not beyond what was read, or a user who
        is not a member, changes nothing. ``direct``: direct conversations too
        (DELIVERY_DIRECT_RECEIPTS)."""
        kinds = [ConversationKind.GROUP.value] + ([ConversationKind.DIRECT.value] if direct
                                                  else [])
        with self.engine.begin() as c:
            conv = c.execute(
                update(conversations)
                .where(conversations.c.id == conv_id, conversations.c.kind.in_(kinds))
                .values(last_seq=conversations.c.last_seq)
                .returning(conversations.c.last_seq, conversations.c.kind)
            ).first()
            if conv is None:
                return set()
            upto = min(seq, int(conv[0]))
            if conv[1] == ConversationKind.DIRECT.value:
                made = _direct_read(c, conv_id, user, upto, now, self._upsert)
                store_receipts(c, made, sender=lambda r: user, now=now, ttl_s=ttl_s,
                               upsert=self._upsert)
                return {r.to for r in made}
            before = _advance_read(c, conv_id, user, upto)
            if before is None:
                return set()
            read = c.execute(
                select(messages.c.parent, messages.c.sender, messages.c.conv_seq)
                .where(messages.c.conversation_id == conv_id, messages.c.recipient == user,
                       messages.c.kind == Kind.MESSAGE.value, messages.c.parent.is_not(None),
                       messages.c.conv_seq > before, messages.c.conv_seq <= upto)
                .order_by(messages.c.conv_seq)
            ).all()
            made = _read_receipts(c, conv_id, user, read)
            store_receipts(c, made, sender=lambda r: user, now=now, ttl_s=ttl_s,
                           upsert=self._upsert)
        return {r.to for r in made}


def _open_attempts(c: Connection, claims: Sequence[tuple[uuid.UUID, Sequence[Target]]],
                   now: datetime) -> None:
    """Attempt 1's open rows for several messages, in one executemany."""
    rows = [{"message_id": mid, "attempt": 1, "channel": Channel.WS.value, "node": t.node,
             "conn": t.conn, "started_at": now, "finished_at": None, "result": None,
             "detail": None} for mid, targets in claims for t in targets]
    if rows:
        c.execute(insert(attempts), rows)


def _read_receipts(c: Connection, conv_id: str, reader: str,
                   read: Sequence[Any]) -> list[receipts.Receipt]:
    """The receipts of ``reader`` reading these group messages (parent, sender, seq): for
    a small group one per sender, naming its newest message read; for a large one the
    milestones each message's read counter crosses."""
    out: list[receipts.Receipt] = []
    newest: dict[str, tuple[uuid.UUID, int]] = {}
    for parent, sender, seq in read:
        if sender == reader:
            continue
        counter = c.execute(
            update(conv_messages).where(conv_messages.c.id == parent)
            .values(read=conv_messages.c.read + 1)
            .returning(conv_messages.c.read, conv_messages.c.recipients)
        ).first()
        if counter is None:
            continue
        after, of = int(counter[0]), int(counter[1])
        if receipts.coalesced(of):
            out += receipts.counted(parent, conv_id, seq, sender, receipts.READ, after - 1,
                                    after, of)
        else:
            newest[sender] = (parent, seq)
    for sender, (parent, seq) in newest.items():
        out.append(receipts.single(parent, conv_id, seq, sender, receipts.READ, reader))
    return out


def _advance_read(c: Connection, conv_id: str, user: str, upto: int) -> int | None:
    """Move ``user``'s read mark in ``conv_id`` up to ``upto``; the mark before, or None when
    ``user`` is no current member or had read that far already (nothing changes)."""
    row = c.execute(
        select(members.c.id, members.c.read_seq)
        .where(members.c.conversation_id == conv_id, members.c.user_id == user,
               members.c.left_seq.is_(None))
    ).first()
    if row is None or row[1] >= upto:
        return None
    c.execute(update(members).where(members.c.id == row[0]).values(read_seq=upto))
    return int(row[1])


def _direct_read(c: Connection, conv_id: str, reader: str, upto: int, now: datetime,
                 upsert: Any) -> list[receipts.Receipt]:
    """``reader`` read the direct conversation up to ``upto``: its read mark lives in a member
    row made on its first read (direct conversations have none otherwise); the other user
    gets one ``read`` receipt naming its newest message read. The caller holds the
    conversation's row lock."""
    if reader not in (dm_members(conv_id) or ()):
        return []  # not one of the two: nothing recorded
    c.execute(upsert(members).on_conflict_do_nothing(), {
        "conversation_id": conv_id, "user_id": reader, "joined_seq": 0, "left_seq": None,
        "read_seq": 0, "joined_at": now, "left_at": None})
    before = _advance_read(c, conv_id, reader, upto)
    if before is None:
        return []
    newest = c.execute(
        select(messages.c.id, messages.c.sender, messages.c.conv_seq)
        .where(messages.c.conversation_id == conv_id, messages.c.recipient == reader,
               messages.c.kind == Kind.MESSAGE.value, messages.c.parent.is_(None),
               messages.c.conv_seq > before, messages.c.conv_seq <= upto)
        .order_by(messages.c.conv_seq.desc()).limit(1)
    ).first()
    if newest is None or newest[1] == reader:
        return []
    return [receipts.single(newest[0], conv_id, int(newest[2]), newest[1], receipts.READ,
                            reader)]


def delivered_receipts(c: Connection, won: Sequence[uuid.UUID], *, now: datetime,
                       ttl_s: float, upsert: Any, direct: bool = False) -> set[str]:
    """Receipts for a batch of recorded acks (in the ack's transaction): the group rows
    among ``won`` give their senders a ``delivered`` receipt (coalesced for large groups);
    with ``direct`` (DELIVERY_DIRECT_RECEIPTS) direct messages give one each.
    Returns the users owed new receipts."""
    if not won:
        return set()
    kind_rows = (messages.c.conversation_id.is_not(None) if direct
                 else messages.c.parent.is_not(None))
    rows = c.execute(
        select(messages.c.parent, messages.c.sender, messages.c.recipient,
               messages.c.conversation_id, messages.c.conv_seq, messages.c.id)
        .where(messages.c.id.in_(list(won)), messages.c.kind == Kind.MESSAGE.value, kind_rows)
    ).all()
    if not rows:
        return set()
    by_parent: dict[uuid.UUID, list[Any]] = {}
    made: list[receipts.Receipt] = []
    for r in rows:
        if r[0] is None:  # a direct message: its own id names it
            if r[1] != r[2]:
                made.append(receipts.single(r[5], r[3], int(r[4]), r[1], receipts.DELIVERED,
                                            r[2]))
        else:
            by_parent.setdefault(r[0], []).append(r)
    for parent in sorted(by_parent):  # one lock order for concurrent gateways
        group = by_parent[parent]
        counter = c.execute(
            update(conv_messages).where(conv_messages.c.id == parent)
            .values(delivered=conv_messages.c.delivered + len(group))
            .returning(conv_messages.c.delivered, conv_messages.c.recipients)
        ).first()
        if counter is None:
            continue
        after, of = int(counter[0]), int(counter[1])
        _, sender, _, conv, seq, _ = group[0]
        if receipts.coalesced(of):
            made += receipts.counted(parent, conv, seq, sender, receipts.DELIVERED,
                                     after - len(group), after, of)
        else:
            made += [receipts.single(parent, conv, seq, sender, receipts.DELIVERED, r[2])
                     for r in group]
    store_receipts(c, made, sender=lambda r: str(r.payload.get("user", r.payload["conversation"]
                                                                  ))[:128],
                   now=now, ttl_s=ttl_s, upsert=upsert)
    return {r.to for r in made}

