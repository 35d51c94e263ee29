"""Membership by seq (pure rules) and the store against a model (hypothesis state machine on
SQLite): seqs gap-free, recipients are the members at the message's seq but its sender,
``prev`` is each recipient's previous seq, bad requests change nothing."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import timedelta
from functools import cache

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from delivery import migrate
from delivery.clock import utcnow
from delivery.conversations import membership
from delivery.conversations.ids import ConversationError
from delivery.conversations.requests import validate_group_send
from delivery.db import make_engine
from delivery.store import Store

USERS = ["a", "b", "c", "d", "e"]
LIMIT = 4


def test_a_span_receives_the_seqs_after_its_join_up_to_its_leave() -> None:
    span = membership.Span(joined_seq=3, left_seq=6)
    assert [s for s in range(1, 10) if membership.receives(span, s)] == [4, 5, 6]
    assert membership.receives(membership.Span(0, None), 1)


def test_recipients_are_the_members_but_the_sender_who_must_be_one() -> None:
    assert membership.recipients({"a", "b", "c"}, "b") == ["a", "c"]
    with pytest.raises(ConversationError, match="not a member"):
        membership.recipients({"a"}, "z")


def test_adding_beyond_the_limit_adds_nobody() -> None:
    assert membership.check_add({"a"}, ["a", "b"], 2) == ["b"]
    with pytest.raises(ConversationError, match="MAX_CONVERSATION_MEMBERS"):
        membership.check_add({"a", "b"}, ["c"], 2)


@cache
def _migrated() -> str:
    """A migrated SQLite file, made once; each example works on a copy."""
    path = f"{tempfile.mkdtemp()}/template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


class ConversationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        path = f"{self.dir}/m.db"
        shutil.copy(_migrated(), path)
        url = f"sqlite:///{path}"
        self.engine = make_engine(url)
        self.store = Store(self.engine)
        self.members: set[str] = {"a", "b"}
        self.store.create_conversation("g", sorted(self.members), now=utcnow(), limit=LIMIT)
        self.seq = 0
        self.last: dict[str, int] = {}  # user -> last seq it was a recipient of
        self.sent: dict[uuid.UUID, set[str]] = {}

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(users=st.lists(st.sampled_from(USERS), min_size=1, max_size=3))
    def add(self, users: list[str]) -> None:
        new = [u for u in dict.fromkeys(users) if u not in self.members]
        try:
            added = self.store.add_members("g", users, now=utcnow(), limit=LIMIT)
        except ConversationError:
            assert len(self.members) + len(new) > LIMIT
            return
        assert added == new
        self.members |= set(new)

    @rule(users=st.lists(st.sampled_from(USERS), min_size=1, max_size=2))
    def remove(self, users: list[str]) -> None:
        gone = self.store.remove_members("g", users, now=utcnow())
        assert set(gone) == set(users) & self.members
        self.members -= set(gone)

    @rule(sender=st.sampled_from(USERS))
    def send(self, sender: str) -> None:
        req = validate_group_send(sender, "g", "x", uuid.uuid4().hex, max_body_bytes=100,
                                  default_ttl_s=60)
        now = utcnow()
        try:
            rows, created = self.store.accept_group(req, now=now,
                                                    deadline=now + timedelta(seconds=1))
        except ConversationError:
            assert sender not in self.members
            return
        assert created
        self.seq += 1
        assert {m.recipient for m in rows} == self.members - {sender}
        for m in rows:
            assert (m.conv_seq, m.conv_prev) == (self.seq, self.last.get(m.recipient, 0))
            self.last[m.recipient] = self.seq
        self.sent[req.message_id] = self.members - {sender}

    @invariant()
    def seq_and_members_match(self) -> None:
        conv = self.store.conversation("g")
        assert conv is not None and conv.last_seq == self.seq
        assert {m.user_id for m in self.store.members_of("g")} == self.members


TestConversationModel = ConversationModel.TestCase
TestConversationModel.settings = settings(max_examples=25, stateful_step_count=25,
                                          deadline=None)
