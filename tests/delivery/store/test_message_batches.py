"""A batch of direct messages stored in one transaction (``accept_dispatched_many``, the
worker's batch path for sends the producer did not store): the same rows, seqs and ``prev``
as storing them one by one, on SQLite and PostgreSQL, and under concurrent batches."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.clock import utcnow
from delivery.store import MessageRecord, Store
from delivery.store.records import Target
from delivery.validation import SendRequest, message_id_for

USERS = ["a", "b", "c"]


def _req(prefix: str, sender: str, recipient: str, cmid: str) -> SendRequest:
    sender, recipient = f"{prefix}{sender}", f"{prefix}{recipient}"
    return SendRequest(message_id=message_id_for(sender, cmid), sender=sender,
                       recipient=recipient, body={"t": cmid}, client_msg_id=cmid, ttl_s=60)


def _batch(store: Store, reqs: list[SendRequest]) -> list[MessageRecord]:
    now = utcnow()
    return store.accept_dispatched_many([(r, [Target("gw", f"c-{r.recipient}")]) for r in reqs],
                                        now=now, deadline=now + timedelta(seconds=2))


def _one(store: Store, r: SendRequest) -> MessageRecord:
    now = utcnow()
    msg, _ = store.accept_request(r, now=now, deadline=now + timedelta(seconds=2),
                                  dispatch_to=[Target("gw", f"c-{r.recipient}")])
    return msg


pairs = st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(USERS)).filter(
    lambda p: p[0] != p[1]), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=pairs, batch=pairs)
def test_a_batch_gives_the_seqs_and_prevs_of_one_by_one_storing(
        store: Store, before: list[tuple[str, str]], batch: list[tuple[str, str]]) -> None:
    """Two fresh sets of users: one sends ``before`` then ``batch`` one by one, the other
    sends ``before`` one by one then ``batch`` as one batch; every message must get the same
    (seq, prev), attempt 1 dispatched, one attempt row."""
    one, many = f"o{uuid.uuid4().hex[:8]}-", f"m{uuid.uuid4().hex[:8]}-"
    for i, (s, r) in enumerate(before):
        _one(store, _req(one, s, r, f"p{i}"))
        _one(store, _req(many, s, r, f"p{i}"))
    expected = [_one(store, _req(one, s, r, f"b{i}")) for i, (s, r) in enumerate(batch)]
    reqs = [_req(many, s, r, f"b{i}") for i, (s, r) in enumerate(batch)]
    got = _batch(store, reqs)
    assert [m.id for m in got] == [r.message_id for r in reqs]  # the order given
    assert [(m.conv_seq, m.conv_prev) for m in got] == [
        (m.conv_seq, m.conv_prev) for m in expected]
    for m in got:
        assert (m.state, m.attempts) == ("dispatched", 1)
        assert [(a.attempt, a.conn) for a in store.attempts_of(m.id)] == [
            (1, f"c-{m.recipient}")]


def test_messages_already_stored_are_left_out_and_take_no_seq(store: Store) -> None:
    p = f"d{uuid.uuid4().hex[:8]}-"
    stored = _one(store, _req(p, "a", "b", "1"))
    got = _batch(store, [_req(p, "a", "b", "1"), _req(p, "a", "b", "2")])
    assert [m.client_msg_id for m in got] == ["2"]
    assert got[0].conv_seq == stored.conv_seq + 1
    assert _batch(store, [_req(p, "a", "b", "1")]) == []  # nothing new: nothing done


def test_concurrent_batches_on_overlapping_conversations_get_gap_free_seqs(
        pg_store: Store) -> None:
    """Four threads store batches over the same three conversations at once (PostgreSQL: real
    row locks, taken in one order, so no batch waits on another in turn)."""
    store = pg_store
    p = f"x{uuid.uuid4().hex[:8]}-"
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for n in range(8):
                _batch(store, [_req(p, s, r, f"{t}-{n}-{s}{r}")
                               for s, r in (("a", "b"), ("b", "c"), ("c", "a"), ("b", "a"))])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = [m for u in USERS for m in store.unacked_for(f"{p}{u}", limit=1000)]
    assert len(rows) == 4 * 8 * 4
    by_conv: dict[str, list[int]] = {}
    for m in rows:
        by_conv.setdefault(m.conversation_id or "", []).append(m.conv_seq or 0)
    for seqs in by_conv.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    for u in USERS:
        mine = store.unacked_for(f"{p}{u}", limit=1000)
        for conv in {m.conversation_id for m in mine}:
            chain = [m for m in mine if m.conversation_id == conv]
            assert [m.conv_prev for m in chain] == [0, *[m.conv_seq for m in chain][:-1]]
