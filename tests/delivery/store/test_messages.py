"""Message rows: stored once, compare-and-set transitions and attempt claims, replay, sweep."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from delivery.clock import utcnow
from delivery.models import State
from delivery.store import Store, Target
from tests.delivery.store.helpers import accept
from tests.support.acks import ack


def test_accept_stores_once_per_client_msg_id(store: Store) -> None:
    first, created = accept(store, cmid="c1")
    again, created_again = accept(store, cmid="c1", body={"text": "changed"})
    assert created and not created_again
    assert again.id == first.id and again.body == {"text": "hi"}
    assert first.state == State.ACCEPTED and first.attempts == 0
    other, created_other = accept(store, cmid="c1", sender="carol")
    assert created_other and other.id != first.id


def test_concurrent_duplicates_leave_one_row(store: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: accept(store, cmid="dup"), range(32)))
    assert sum(created for _, created in results) == 1
    assert len({m.id for m, _ in results}) == 1
    assert store.count_by_state() == {"accepted": 1}


def test_transition_is_compare_and_set(store: Store) -> None:
    msg, _ = accept(store)
    assert store.transition(msg.id, [State.ACCEPTED], State.PENDING)
    assert not store.transition(msg.id, [State.ACCEPTED], State.PUSHED)
    assert store.get(msg.id).state == State.PENDING  # type: ignore[union-attr]


def test_start_attempt_wins_once(store: Store) -> None:
    msg, _ = accept(store)
    now = utcnow()
    targets = [Target("gw-a", "c1"), Target("gw-b", "c2")]
    first = store.start_attempt(msg, channel="ws", targets=targets, now=now,
                                deadline=now + timedelta(seconds=1))
    second = store.start_attempt(msg, channel="ws", targets=targets, now=now,
                                 deadline=now + timedelta(seconds=1))
    assert first == 1 and second is None
    rows = store.attempts_of(msg.id)
    assert [(r.attempt, r.node, r.conn, r.result) for r in rows] == [
        (1, "gw-a", "c1", None), (1, "gw-b", "c2", None)]


def test_unacked_replay_is_oldest_first_and_paged(store: Store) -> None:
    ids = [accept(store, recipient="dave")[0].id for _ in range(5)]
    accept(store, recipient="erin")
    ack(store, ids[1], "dave", "c", utcnow())
    page1 = store.unacked_for("dave", limit=2)
    page2 = store.unacked_for("dave", after_seq=page1[-1].seq, limit=10)
    assert [m.id for m in page1 + page2] == [ids[0], ids[2], ids[3], ids[4]]


def test_stalled_finds_passed_deadlines_only(store: Store) -> None:
    late, _ = accept(store, deadline_s=-1)
    accept(store, deadline_s=60)
    done, _ = accept(store, deadline_s=-1)
    ack(store, done.id, "bob", "c", utcnow())
    assert [m.id for m in store.stalled(utcnow(), limit=10)] == [late.id]


def test_unknown_message_is_none(store: Store) -> None:
    assert store.get(uuid.uuid4()) is None
