"""Conversations in the store (SQLite and PostgreSQL): seqs, membership by seq, group rows,
receipts on acks and reads, and bad input storing nothing."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from delivery.clock import utcnow
from delivery.conversations import receipts
from delivery.conversations.ids import ConversationError, delivery_id, dm_conversation_id
from delivery.conversations.requests import GroupSendRequest, validate_group_send
from delivery.store import MessageRecord, Store
from delivery.store.acks import record_acks

LIMIT = 100


def req(sender: str, conv: str, text: str, cmid: str | None = None) -> GroupSendRequest:
    return validate_group_send(sender, conv, {"text": text}, cmid or uuid.uuid4().hex,
                               max_body_bytes=4096, default_ttl_s=60)


def send(store: Store, sender: str, conv: str, text: str = "x",
         cmid: str | None = None) -> list[MessageRecord]:
    now = utcnow()
    rows, _ = store.accept_group(req(sender, conv, text, cmid), now=now,
                                 deadline=now + timedelta(seconds=2))
    return rows


def dm(store: Store, sender: str, recipient: str, cmid: str) -> MessageRecord:
    now = utcnow()
    msg, _ = store.accept(message_id=uuid.uuid4(), sender=sender, recipient=recipient,
                          body={"t": cmid}, client_msg_id=cmid, now=now, ttl_s=60,
                          deadline=now)
    return msg


def test_direct_messages_take_the_next_seq_of_their_pair_and_name_the_recipients_previous(
        store: Store) -> None:
    a = dm(store, "alice", "bob", "1")
    b = dm(store, "bob", "alice", "2")
    c = dm(store, "alice", "bob", "3")
    assert a.conversation_id == dm_conversation_id("bob", "alice") == "dm:alice:bob"
    assert [(m.conv_seq, m.conv_prev) for m in (a, b, c)] == [(1, 0), (2, 0), (3, 1)]
    assert dm(store, "alice", "bob", "3").id == c.id  # a duplicate takes no seq
    assert dm(store, "alice", "bob", "4").conv_seq == 4


def test_dm_ids_escape_separators() -> None:
    assert dm_conversation_id("a:b", "c") != dm_conversation_id("a", "b:c")
    assert dm_conversation_id("a:b", "c") == "dm:a%3Ab:c"


def test_a_group_message_is_one_row_per_member_but_the_sender_with_the_next_seq(
        store: Store) -> None:
    now = utcnow()
    assert store.create_conversation("team", ["alice", "bob", "carol"], now=now, limit=LIMIT)
    first = send(store, "alice", "team", "1", cmid="m1")
    assert sorted(m.recipient for m in first) == ["bob", "carol"]
    assert {(m.conv_seq, m.conv_prev, m.sender) for m in first} == {(1, 0, "alice")}
    parent = first[0].parent
    assert parent is not None and all(m.parent == parent for m in first)
    assert {m.id for m in first} == {delivery_id(parent, u) for u in ("bob", "carol")}
    second = send(store, "bob", "team", "2")
    assert {(m.recipient, m.conv_seq, m.conv_prev) for m in second} == {
        ("alice", 2, 0), ("carol", 2, 1)}
    again = send(store, "alice", "team", "1", cmid="m1")  # a retry: stored once, no seq
    assert {m.id for m in again} == {m.id for m in first}
    assert store.conversation("team").last_seq == 2  # type: ignore[union-attr]


def test_membership_is_respected_by_seq(store: Store) -> None:
    now = utcnow()
    store.create_conversation("team", ["alice", "bob"], now=now, limit=LIMIT)
    send(store, "alice", "team")  # 1: bob
    assert store.add_members("team", ["carol", "bob"], now=now, limit=LIMIT) == ["carol"]
    rows2 = send(store, "alice", "team")  # 2: bob, carol
    assert store.remove_members("team", ["bob", "dave"], now=now) == ["bob"]
    rows3 = send(store, "alice", "team")  # 3: carol
    assert sorted(m.recipient for m in rows2) == ["bob", "carol"]
    assert [(m.recipient, m.conv_prev) for m in rows3] == [("carol", 2)]
    with pytest.raises(ConversationError, match="not a member"):
        send(store, "bob", "team")
    assert store.conversation("team").last_seq == 3  # type: ignore[union-attr]
    assert [m.user_id for m in store.members_of("team")] == ["alice", "carol"]


def test_bad_requests_store_nothing(store: Store) -> None:
    now = utcnow()
    with pytest.raises(ConversationError, match="unknown conversation"):
        send(store, "alice", "nope")
    with pytest.raises(ConversationError, match="DELIVERY_MAX_CONVERSATION_MEMBERS"):
        store.create_conversation("big", [f"u{i}" for i in range(4)], now=now, limit=3)
    assert store.conversation("big") is None
    store.create_conversation("team", ["a", "b", "c"], now=now, limit=3)
    with pytest.raises(ConversationError, match="DELIVERY_MAX_CONVERSATION_MEMBERS"):
        store.add_members("team", ["d"], now=now, limit=3)
    assert len(store.members_of("team")) == 3
    with pytest.raises(ConversationError, match="exists already"):
        store.create_conversation("team", ["a", "z"], now=now, limit=3)
    assert not store.create_conversation("team", ["c", "b", "a"], now=now, limit=3)
    with pytest.raises(ConversationError, match="reserved"):
        validate_group_send("a", "dm:a:b", "x", max_body_bytes=10, default_ttl_s=1)
    assert store.count_by_state() == {}


def test_concurrent_senders_get_gap_free_seqs_and_consistent_prev(pg_store: Store) -> None:
    """Four threads send to one conversation at once (PostgreSQL: real row locks)."""
    store = pg_store
    users = ["u0", "u1", "u2", "u3"]
    store.create_conversation("race", users, now=utcnow(), limit=LIMIT)

    def sender(u: str) -> None:
        for _ in range(10):
            send(store, u, "race")

    threads = [threading.Thread(target=sender, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [m for u in users for m in store.unacked_for(u, limit=1000)]
    assert sorted({m.conv_seq for m in rows}) == list(range(1, 41))
    for u in users:
        mine = store.unacked_for(u, limit=1000)  # store order = seq order
        seqs = [m.conv_seq for m in mine]
        assert seqs == sorted(seqs)
        assert [m.conv_prev for m in mine] == [0, *seqs[:-1]]


def _receipts(store: Store, user: str) -> list[dict[str, object]]:
    return [m.body for m in store.unacked_for(user, limit=1000) if m.kind == "receipt"]


def test_acks_of_a_small_group_give_the_sender_one_delivered_receipt_per_recipient(
        store: Store) -> None:
    now = utcnow()
    store.create_conversation("team", ["alice", "bob", "carol"], now=now, limit=LIMIT)
    rows = send(store, "alice", "team", cmid="m")
    out = record_acks(store, [(m.id, m.recipient, "c1") for m in rows], now)
    assert out.won == [True, True] and out.owed == {"alice"}
    got = _receipts(store, "alice")
    assert sorted((r["user"], r["status"], r["seq"]) for r in got) == [  # type: ignore[type-var]
        ("bob", "delivered", 1), ("carol", "delivered", 1)]
    assert all(r["message"] == str(rows[0].parent) for r in got)
    again = record_acks(store, [(rows[0].id, rows[0].recipient, "c1")], now)
    assert again == ([False], set())  # an ack already recorded makes no receipt
    assert len(_receipts(store, "alice")) == 2


def test_a_large_group_coalesces_delivered_receipts_at_milestones(store: Store) -> None:
    now = utcnow()
    users = ["alice", *(f"m{i:02d}" for i in range(40))]
    store.create_conversation("town", users, now=now, limit=LIMIT)
    rows = send(store, "alice", "town")
    for i in range(0, 40, 3):  # acks in batches of 3
        record_acks(store, [(m.id, m.recipient, "c") for m in rows[i:i + 3]], now)
    got = _receipts(store, "alice")
    assert len(got) == len(receipts.milestones(40)) == 5
    assert sorted(r["count"] for r in got) == [3, 12, 21, 30, 40]  # type: ignore[type-var]
    assert {r["of"] for r in got} == {40}


def test_read_up_to_a_seq_gives_each_sender_one_read_receipt(store: Store) -> None:
    now = utcnow()
    store.create_conversation("team", ["alice", "bob", "carol"], now=now, limit=LIMIT)
    send(store, "alice", "team")  # 1
    last_alice = send(store, "alice", "team")  # 2
    send(store, "bob", "team")  # 3
    send(store, "carol", "team")  # 4: carol's own, no receipt to herself
    owed = store.record_read("carol", "team", 4, now=now, ttl_s=60)
    assert owed == {"alice", "bob"}
    got = [r for r in _receipts(store, "alice") if r["status"] == "read"]
    assert [(r["user"], r["seq"], r["message"]) for r in got] == [
        ("carol", 2, str(last_alice[0].parent))]
    assert store.record_read("carol", "team", 3, now=now, ttl_s=60) == set()  # not beyond
    assert store.record_read("dave", "team", 4, now=now, ttl_s=60) == set()  # not a member
    assert store.record_read("carol", "nope", 4, now=now, ttl_s=60) == set()


def test_direct_messages_give_no_receipts_unless_turned_on(store: Store) -> None:
    """DELIVERY_DIRECT_RECEIPTS=0 (the default): an ack or a read of a direct message
    writes nothing more (the direct hot path stays one write per ack)."""
    now = utcnow()
    m = dm(store, "alice", "bob", "off-1")
    assert record_acks(store, [(m.id, "bob", "c1")], now) == ([True], set())
    assert store.record_read("bob", m.conversation_id or "", 1, now=now, ttl_s=60) == set()
    assert _receipts(store, "alice") == []


def test_direct_receipts_delivered_on_ack_and_read_up_to_a_seq(store: Store) -> None:
    """DELIVERY_DIRECT_RECEIPTS=1: each acked direct message gives its sender one
    ``delivered`` receipt naming it; a read up to a seq gives one ``read`` receipt naming the
    newest message read; the reader's own messages and a repeated read give none."""
    now = utcnow()
    m1 = dm(store, "alice", "bob", "on-1")
    m2 = dm(store, "alice", "bob", "on-2")
    own = dm(store, "bob", "alice", "on-3")  # seq 3: bob's own
    conv = m1.conversation_id or ""
    out = record_acks(store, [(m1.id, "bob", "c1"), (m2.id, "bob", "c1")], now,
                      direct_receipts=True)
    assert out == ([True, True], {"alice"})
    got = _receipts(store, "alice")
    assert sorted((r["message"], r["status"], r["user"], r["seq"]) for r in got) == sorted([
        (str(m1.id), "delivered", "bob", 1), (str(m2.id), "delivered", "bob", 2)])
    assert all(r["conversation"] == conv for r in got)
    assert store.record_read("bob", conv, 3, now=now, ttl_s=60, direct=True) == {"alice"}
    read = [r for r in _receipts(store, "alice") if r["status"] == "read"]
    assert [(r["message"], r["user"], r["seq"]) for r in read] == [(str(m2.id), "bob", 2)]
    assert store.record_read("bob", conv, 3, now=now, ttl_s=60, direct=True) == set()
    assert _receipts(store, "bob") == []  # nothing to bob for his own message
    assert own.conv_seq == 3
    assert store.record_read("carol", conv, 3, now=now, ttl_s=60, direct=True) == set()
    assert [m.user_id for m in store.members_of(conv)] == ["bob"]  # carol is not one of the two
