"""The gateway's store writes: bulk acks equal the reference oracle (random batches, SQLite and
PostgreSQL), races against other writers, nack and redirect rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from delivery.clock import utcnow
from delivery.models import State
from delivery.store import Store, Target
from delivery.store.acks import nack_attempts, record_acks_bulk, redirect_attempt
from delivery.store.tables import attempts, messages
from tests.delivery.store.helpers import accept
from tests.support import ack_oracle
from tests.support.acks import ack

IDS = [uuid.UUID(int=i + 1) for i in range(5)]
USERS = ["u0", "u1", "u2"]
CONNS = ["c0", "c1", "c2"]

scenario = st.tuples(
    # per message: recipient, state, attempts, conns with an open attempt row
    st.lists(st.tuples(st.sampled_from(USERS),
                       st.sampled_from(["accepted", "dispatched", "pushed", "delivered",
                                        "pending", "expired"]),
                       st.integers(1, 2),
                       st.lists(st.sampled_from(CONNS), max_size=3, unique=True)),
             min_size=len(IDS), max_size=len(IDS)),
    st.lists(st.tuples(st.sampled_from([*IDS, uuid.UUID(int=99)]), st.sampled_from(USERS),
                       st.sampled_from(CONNS)), max_size=12),
)


def load(store: Store, msgs: list[tuple[str, str, int, list[str]]]) -> None:
    now = utcnow()
    with store.engine.begin() as c:
        c.execute(delete(attempts))
        c.execute(delete(messages))
        for mid, (user, state, n_attempts, conns) in zip(IDS, msgs, strict=True):
            c.execute(insert(messages).values(
                id=mid, sender="s", recipient=user, client_msg_id=None, body="b",
                created_at=now, expires_at=now + timedelta(hours=1), state=state,
                attempts=n_attempts, ack_deadline=now))
            for a in range(1, n_attempts + 1):
                for conn in conns:
                    c.execute(insert(attempts).values(message_id=mid, attempt=a, channel="ws",
                                                      node="n", conn=conn, started_at=now))


def snapshot(store: Store) -> tuple[object, ...]:
    msgs = [(m.state, m.delivered_conn, m.delivered_at is not None)
            for m in sorted(store.get_many(IDS), key=lambda m: m.id)]
    atts = [[(a.attempt, a.conn, a.result, a.finished_at is not None)
             for a in store.attempts_of(mid)] for mid in IDS]
    return tuple(msgs), tuple(map(tuple, atts))



def test_ack_delivers_once_and_only_for_the_recipient(store: Store) -> None:
    msg, _ = accept(store)
    now = utcnow()
    store.start_attempt(msg, channel="ws", targets=[Target("gw-a", "c1"), Target("gw-a", "c2")],
                        now=now, deadline=now + timedelta(seconds=1))
    assert not ack(store, msg.id, "mallory", "c9", now)
    assert ack(store, msg.id, "bob", "c2", now)
    assert not ack(store, msg.id, "bob", "c1", now)
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
    assert record_acks_bulk(store, [(a.id, "bob", "c1"), (b.id, "eve", "c1"),
                                    (a.id, "bob", "c1")], now) == [True, False, False]


def test_an_ack_from_another_user_on_the_same_connection_id_does_not_win(store: Store) -> None:
    """Two candidates for one message with the same connection id: only the recipient's wins
    (the batch's winners are told apart by recipient, time and connection)."""
    a, _ = accept(store)
    now = utcnow()
    assert record_acks_bulk(store, [(a.id, "eve", "c1"), (a.id, "bob", "c1")], now) == [
        False, True]
    got = store.get(a.id)
    assert got is not None and got.state == State.DELIVERED and got.delivered_conn == "c1"


def test_a_batch_larger_than_one_statement_chunk(store: Store) -> None:
    """A batch of 1,200 acks (the old path split at 500) records every message once; a second
    batch of the same acks wins nothing."""
    msgs = [accept(store, recipient=f"u{i % 7}")[0] for i in range(1200)]
    now = utcnow()
    batch = [(m.id, m.recipient, f"c{i % 3}") for i, m in enumerate(msgs)]
    assert record_acks_bulk(store, batch, now) == [True] * len(batch)
    assert record_acks_bulk(store, batch, utcnow()) == [False] * len(batch)
    assert {m.state for m in store.get_many([m.id for m in msgs])} == {State.DELIVERED}


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scenario)
def test_bulk_acks_equal_the_oracle(store: Store, case: tuple) -> None:  # type: ignore[type-arg]
    msgs, acks = case
    now = utcnow()
    load(store, msgs)
    expected = ack_oracle.record_acks(store, acks, now)
    want = snapshot(store)
    load(store, msgs)
    got = record_acks_bulk(store, acks, now)
    assert got == expected
    assert snapshot(store) == want


def test_nack_and_redirect_rows(sqlite_store: Store) -> None:
    store = sqlite_store
    now = utcnow()
    load(store, [("u0", "dispatched", 1, ["c0", "c1"])] + [("u1", "accepted", 1, [])] * 4)
    nack_attempts(store, IDS[0], 1, ["c0"], now=now, detail="connection gone")
    redirect_attempt(store, IDS[0], 1, from_conns=["c1"], to_conns=["c2"], node="n", now=now)
    rows = [(a.conn, a.result, a.detail, a.finished_at is not None)
            for a in store.attempts_of(IDS[0])]
    assert rows == [("c0", "nacked", "connection gone", True),
                    ("c1", "nacked", "redirected to c2", True),
                    ("c2", None, "redirected from c1", False)]
    assert record_acks_bulk(store, [(IDS[0], "u0", "c2")], now) == [True]
    assert store.attempts_of(IDS[0])[2].result == "acked"


def test_bulk_acks_lost_race_is_detected(sqlite_store: Store) -> None:
    """Another process delivers a message between the batch's SELECT and its UPDATE: the batch
    reports that ack as lost and leaves the other outcome alone."""
    from sqlalchemy import event

    store = sqlite_store
    load(store, [("u0", "dispatched", 1, ["c0"]), ("u1", "dispatched", 1, ["c1"])]
         + [("u2", "accepted", 1, [])] * 3)
    raced = False

    def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        nonlocal raced
        if not raced and statement.startswith("UPDATE messages SET state = 'delivered'"):
            raced = True
            cursor.execute("UPDATE messages SET state = 'delivered', delivered_conn = 'other' "
                           "WHERE id = ?", (IDS[0].hex,))

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        got = record_acks_bulk(store, [(IDS[0], "u0", "c0"), (IDS[1], "u1", "c1")], utcnow())
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    assert raced and got == [False, True]
    first, second = store.get(IDS[0]), store.get(IDS[1])
    assert first is not None and first.delivered_conn == "other"
    assert second is not None and second.delivered_conn == "c1"
    assert [a.result for a in store.attempts_of(IDS[0])] == [None]
    assert [a.result for a in store.attempts_of(IDS[1])] == ["acked"]


def test_bulk_acks_lost_race_is_detected_postgresql(pg_store: Store) -> None:
    """PostgreSQL (one statement per batch): another transaction delivers a message and holds
    its row while the batch runs; the batch waits for it, then reports that ack as lost."""
    import threading
    import time

    store = pg_store
    load(store, [("u0", "dispatched", 1, ["c0"]), ("u1", "dispatched", 1, ["c1"])]
         + [("u2", "accepted", 1, [])] * 3)
    got: list[bool] = []
    with store.engine.connect() as other:
        other.exec_driver_sql("UPDATE messages SET state = 'delivered', delivered_conn = 'other' "
                              "WHERE id = %s", (IDS[0],))
        worker = threading.Thread(target=lambda: got.extend(record_acks_bulk(
            store, [(IDS[0], "u0", "c0"), (IDS[1], "u1", "c1")], utcnow())))
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive()  # waiting for the row lock
        other.commit()
    worker.join(10)
    assert got == [False, True]
    first, second = store.get(IDS[0]), store.get(IDS[1])
    assert first is not None and first.delivered_conn == "other"
    assert second is not None and second.delivered_conn == "c1"
    assert [a.result for a in store.attempts_of(IDS[0])] == [None]
    assert [a.result for a in store.attempts_of(IDS[1])] == ["acked"]
