import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from delivery.clock import utcnow
from delivery.models import State
from delivery.store import Store, Target
from delivery.validation import message_id_for


def accept(store: Store, recipient: str = "bob", cmid: str | None = None, sender: str = "alice",
           body: object = None, deadline_s: float = 5.0):  # type: ignore[no-untyped-def]
    now = utcnow()
    return store.accept(
        message_id=message_id_for(sender, cmid), sender=sender, recipient=recipient,
        body=body if body is not None else {"text": "hi"}, client_msg_id=cmid, now=now,
        ttl_s=60, deadline=now + timedelta(seconds=deadline_s),
    )


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


def test_ack_delivers_once_and_only_for_the_recipient(store: Store) -> None:
    msg, _ = accept(store)
    now = utcnow()
    store.start_attempt(msg, channel="ws", targets=[Target("gw-a", "c1"), Target("gw-a", "c2")],
                        now=now, deadline=now + timedelta(seconds=1))
    assert not store.record_ack(msg.id, "mallory", "c9", now)
    assert store.record_ack(msg.id, "bob", "c2", now)
    assert not store.record_ack(msg.id, "bob", "c1", now)
    got = store.get(msg.id)
    assert got is not None and got.state == State.DELIVERED and got.delivered_conn == "c2"
    results = {r.conn: r.result for r in store.attempts_of(msg.id)}
    assert results == {"c1": "superseded", "c2": "acked"}
    # A late attempt claim after delivery loses.
    assert store.start_attempt(got, channel="ws", targets=[], now=now, deadline=now) is None


def test_batch_acks(store: Store) -> None:
    a, _ = accept(store)
    b, _ = accept(store)
    now = utcnow()
    assert store.record_acks([(a.id, "bob", "c1"), (b.id, "eve", "c1"), (a.id, "bob", "c1")],
                             now) == [True, False, False]


def test_unacked_replay_is_oldest_first_and_paged(store: Store) -> None:
    ids = [accept(store, recipient="dave")[0].id for _ in range(5)]
    accept(store, recipient="erin")
    store.record_ack(ids[1], "dave", "c", utcnow())
    page1 = store.unacked_for("dave", limit=2)
    page2 = store.unacked_for("dave", after_seq=page1[-1].seq, limit=10)
    assert [m.id for m in page1 + page2] == [ids[0], ids[2], ids[3], ids[4]]


def test_stalled_finds_passed_deadlines_only(store: Store) -> None:
    late, _ = accept(store, deadline_s=-1)
    accept(store, deadline_s=60)
    done, _ = accept(store, deadline_s=-1)
    store.record_ack(done.id, "bob", "c", utcnow())
    assert [m.id for m in store.stalled(utcnow(), limit=10)] == [late.id]


def test_devices_register_disable_reregister(store: Store) -> None:
    now = utcnow()
    store.register_device("bob", "tok-1", "android", now)
    store.register_device("bob", "tok-2", "ios", now)
    assert [d.token for d in store.active_devices("bob")] == ["tok-1", "tok-2"]
    assert store.disable_device("tok-1", "UNREGISTERED", now)
    assert not store.disable_device("tok-1", "UNREGISTERED", now)
    assert [d.token for d in store.active_devices("bob")] == ["tok-2"]
    store.register_device("carol", "tok-1", "android", now)  # token moved to another user
    assert [d.token for d in store.active_devices("carol")] == ["tok-1"]


def test_unknown_message_is_none(store: Store) -> None:
    assert store.get(uuid.uuid4()) is None


def test_duplicate_outcome_audit_counts_double_acks_and_double_pushes(store: Store) -> None:
    msg, _ = accept(store)
    clean, _ = accept(store)
    now = utcnow()
    store.add_attempt(msg.id, 1, channel="push", now=now, result="fcm:ok", conn_id="dev:1")
    store.add_attempt(msg.id, 2, channel="push", now=now, result="fcm:ok", conn_id="dev:1")
    store.add_attempt(msg.id, 2, channel="push", now=now, result="fcm:ok", conn_id="dev:2")
    store.add_attempt(clean.id, 1, channel="ws", now=now, result="acked", conn_id="c1")
    assert store.duplicate_outcomes([msg.id, clean.id]) == {"acked_twice": 0, "pushed_twice": 1}
    store.add_attempt(clean.id, 2, channel="ws", now=now, result="acked", conn_id="c1")
    assert store.duplicate_outcomes([msg.id, clean.id])["acked_twice"] == 1
