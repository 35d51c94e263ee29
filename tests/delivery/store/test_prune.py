"""Attempt rows are pruned after the outcome: first and last rows, open rows, the ack and push
successes stay, the middle becomes one summary row; in-flight messages are never touched."""

from __future__ import annotations

import uuid
from datetime import timedelta

from delivery.clock import utcnow
from delivery.store import Store, Target
from delivery.store.prune import PRUNED, SUMMARY_CHANNEL, Row, plan_prune, prune_attempts
from tests.support.acks import ack


def rows(*results: str | None) -> list[Row]:
    return [Row(i + 1, 1, r, r is not None) for i, r in enumerate(results)]


def test_plan_leaves_short_histories_alone() -> None:
    assert plan_prune(rows(*["nacked"] * 11), keep=5) is None


def test_plan_deletes_the_middle_and_summarises_it() -> None:
    plan = plan_prune(rows(*["nacked"] * 30, "acked"), keep=5)
    assert plan is not None
    assert plan.delete_ids == tuple(range(6, 27))
    assert plan.summary == "21 rows pruned: nacked 21"


def test_plan_keeps_open_acked_and_push_success_rows() -> None:
    middle: list[str | None] = ["nacked", None, "acked", "fcm:ok", "superseded", "nacked"]
    plan = plan_prune(rows(*["timeout"] * 2, *middle, *["timeout"] * 2), keep=2)
    assert plan is not None
    assert plan.delete_ids == (3, 7, 8)  # nacked, superseded, nacked
    assert plan.summary == "3 rows pruned: nacked 2, superseded 1"


def _message_with_rows(store: Store, n: int, state: str) -> uuid.UUID:
    now = utcnow()
    msg, _ = store.accept(message_id=uuid.uuid4(), sender="alice", recipient="mallory",
                          body={"text": "x"}, client_msg_id=None, now=now, ttl_s=60,
                          deadline=now + timedelta(seconds=60))
    attempt = store.start_attempt(msg, channel="ws",
                                  targets=[Target("gw", f"c{i}") for i in range(n)],
                                  now=now, deadline=now + timedelta(seconds=60))
    assert attempt is not None
    for i in range(n - 1):
        store.finish_attempts(msg.id, attempt, "nacked", now=now, conn_id=f"c{i}")
    if state == "delivered":
        assert ack(store, msg.id, "mallory", f"c{n - 1}", now)
    return msg.id


def test_prune_settled_messages_only(store: Store) -> None:
    done = _message_with_rows(store, 40, "delivered")
    flying = _message_with_rows(store, 40, "dispatched")
    deleted = prune_attempts(store, keep=5)
    assert deleted == 30
    kept = store.attempts_of(done)
    assert len(kept) == 10 + 1
    assert [r.result for r in kept].count("acked") == 1
    (summary,) = [r for r in kept if r.channel == SUMMARY_CHANNEL]
    assert summary.result == PRUNED and summary.detail == "30 rows pruned: nacked 30"
    assert len(store.attempts_of(flying)) == 40  # routing still owns it
    assert prune_attempts(store, keep=5) == 0  # idempotent
