"""The routing adapter on the real store (SQLite and PostgreSQL) and real presence replicas on
an in-memory network; interleavings are forced by calling the steps in a chosen order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from delivery.channels import MemoryChannels
from delivery.clock import utcnow
from delivery.routing.policy import (
    Dispatch,
    Expire,
    Nothing,
    PolicyConfig,
    Push,
    Trigger,
    Wait,
)
from delivery.routing.router import Router
from delivery.routing.sweep import sweep_once
from delivery.store import MessageRecord, Store
from delivery.validation import SendRequest, validate_send
from presence.runtime import MemoryNetwork, PresenceConfig, PresenceNode
from tests.support.acks import ack

FAST = PresenceConfig(heartbeat_s=0.02, down_s=0.5, purge_s=2.0, batch_s=0.001)


@dataclass
class Harness:
    store: Store
    net: MemoryNetwork
    gw: PresenceNode
    worker: PresenceNode
    channels: MemoryChannels
    router: Router
    pushes: list[tuple[str, int]] = field(default_factory=list)
    rechecks: list[tuple[str, int, float]] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)

    def accept(self, recipient: str = "bob", ttl_s: float = 60) -> MessageRecord:
        now = utcnow()
        msg, _ = self.store.accept(
            message_id=uuid.uuid4(), sender="alice", recipient=recipient, body={"t": "hi"},
            client_msg_id=None, now=now, ttl_s=ttl_s, deadline=now + timedelta(seconds=2),
        )
        return msg

    def visible(self, user: str, conns: set[str], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if {p.conn for p in self.worker.list(user)} == conns:
                return
            time.sleep(0.005)
        raise AssertionError(f"worker never saw {conns} for {user}")


@pytest.fixture
def h(store: Store) -> Iterator[Harness]:
    net = MemoryNetwork(seed=1)
    gw = PresenceNode("gw-a", net, FAST)
    worker = PresenceNode("worker-b", net, FAST)
    gw.start()
    worker.start()
    assert gw.wait_synced(3) and worker.wait_synced(3)
    channels = MemoryChannels()
    harness = Harness(store, net, gw, worker, channels, None)  # type: ignore[arg-type]
    channels.subscribe("gw-a", harness.frames.append)
    harness.router = Router(
        store, worker, channels,
        PolicyConfig(ack_timeout_s=1.0, max_attempts=2, retry_backoff_s=0.1,
                     offline_grace_s=0.2),
        enqueue_push=lambda m, a: harness.pushes.append((m, a)),
        schedule_recheck=lambda m, a, d, r: harness.rechecks.append((m, a, d)),
    )
    yield harness
    gw.stop()
    worker.stop()


def test_online_recipient_gets_one_frame_per_connection_and_ack_delivers(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.gw.track("bob", "c2", {})
    h.visible("bob", {"c1", "c2"})
    msg = h.accept()
    decision = h.router.route_new(msg)
    assert isinstance(decision, Dispatch)
    assert [f["conns"] for f in h.frames] == [["c1", "c2"]]
    assert h.frames[0]["id"] == str(msg.id) and h.frames[0]["attempt"] == 1
    assert ack(h.store, msg.id, "bob", "c2", utcnow())
    assert h.store.get(msg.id).state == "delivered"  # type: ignore[union-attr]
    # A late duplicate route of the same snapshot changes nothing.
    assert isinstance(h.router.route_new(msg), Nothing)
    assert len(h.frames) == 1


def test_offline_recipient_waits_the_grace_then_pushes(h: Harness) -> None:
    msg = h.accept()
    decision = h.router.route_new(msg)
    assert isinstance(decision, Wait)
    assert h.rechecks == [(str(msg.id), 0, pytest.approx(0.2, abs=0.05))]
    assert h.pushes == []
    decision = h.router.route(msg.id, Trigger.RECHECK, attempt=0)
    assert isinstance(decision, Push)
    assert h.pushes == [(str(msg.id), 1)]
    stored = h.store.get(msg.id)
    assert stored is not None and stored.state == "dispatched" and stored.attempts == 1


def test_join_within_the_grace_is_delivered_without_push(h: Harness) -> None:
    msg = h.accept()
    assert isinstance(h.router.route_new(msg), Wait)
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    assert isinstance(h.router.route(msg.id, Trigger.RECHECK, attempt=0), Dispatch)
    assert h.pushes == [] and h.frames[0]["conns"] == ["c1"]


def test_seed_race_nack_waits_for_fresh_presence_then_reaches_the_new_connection(
    h: Harness,
) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    h.net.partition(["gw-a"], ["worker-b"])  # replication to the worker is held back
    h.gw.untrack("bob", "c1")
    h.gw.track("bob", "c2", {})
    time.sleep(0.05)
    assert {p.conn for p in h.worker.list("bob")} == {"c1"}  # stale view: step 5 of the seed
    msg = h.accept()
    assert isinstance(h.router.route_new(msg), Dispatch)
    assert h.frames[-1]["conns"] == ["c1"]
    # The gateway knows c1 is gone: it nacks (records the attempt row and asks for a re-route).
    h.store.finish_attempts(msg.id, 1, "nacked", now=utcnow(), conn_id="c1")
    decision = h.router.route(msg.id, Trigger.NACK, attempt=1, nacked=["c1"])
    assert isinstance(decision, Wait)  # never re-sent to c1, never pushed yet
    h.net.heal()
    h.visible("bob", {"c2"})
    decision = h.router.route(msg.id, Trigger.RECHECK, attempt=1)
    assert isinstance(decision, Dispatch) and [c.conn for c in decision.targets] == ["c2"]
    assert h.frames[-1]["conns"] == ["c2"] and h.frames[-1]["attempt"] == 2
    assert ack(h.store, msg.id, "bob", "c2", utcnow())
    assert h.pushes == []


def test_stale_nack_for_an_old_attempt_is_ignored(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.accept()
    h.router.route_new(msg)
    stalled = h.store.get(msg.id)
    assert stalled is not None
    h.router.route_stalled(stalled)  # attempt 2
    assert isinstance(h.router.route(msg.id, Trigger.NACK, attempt=1, nacked=["c1"]), Nothing)
    assert h.store.get(msg.id).attempts == 2  # type: ignore[union-attr]


def test_late_ack_of_an_earlier_attempt_wins_once(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.accept()
    h.router.route_new(msg)
    snapshot = h.store.get(msg.id)
    assert snapshot is not None
    h.router.route_stalled(snapshot)  # the sweep re-sends: attempt 2
    assert ack(h.store, msg.id, "bob", "c1", utcnow())  # ack of attempt 1's frame
    assert not ack(h.store, msg.id, "bob", "c1", utcnow())  # attempt 2's frame
    after = h.store.get(msg.id)
    assert after is not None and after.state == "delivered"
    assert isinstance(h.router.route_stalled(after), Nothing)


def test_sweep_and_nack_racing_claim_one_attempt(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.accept()
    h.router.route_new(msg)
    snapshot = h.store.get(msg.id)
    assert snapshot is not None
    # Both read the same snapshot, then act: only the first claim wins.
    first = h.router.route_stalled(snapshot)
    second = h.router.route_stalled(snapshot)
    assert isinstance(first, Dispatch) and isinstance(second, Nothing)
    assert [f["attempt"] for f in h.frames] == [1, 2]


def test_attempts_exhausted_fall_back_to_one_push(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.accept()
    h.router.route_new(msg)
    for _ in range(2):
        snap = h.store.get(msg.id)
        assert snap is not None
        h.router.route_stalled(snap)
    assert h.pushes == [(str(msg.id), 3)]
    results = [(a.attempt, a.channel, a.result) for a in h.store.attempts_of(msg.id)]
    assert results == [(1, "ws", "timeout"), (2, "ws", "timeout"), (3, "push", None)]


def test_unreachable_gateway_is_a_nack_not_a_timeout(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    h.channels = MemoryChannels()  # nobody listens on gw-a any more
    h.router.channels = h.channels
    msg = h.accept()
    decision = h.router.route_new(msg)
    assert isinstance(decision, Wait)
    assert h.store.nacked_conns(msg.id) == {"c1"}


def test_a_message_presence_cannot_place_is_announced_to_every_gateway(h: Harness) -> None:
    """Presence shows nobody (perhaps stale): the message goes to push, and every gateway
    hears that bob is owed one (a gateway that does hold bob replays it)."""
    owed: list[dict[str, Any]] = []
    h.channels.subscribe("*", owed.append)
    msg = h.accept()
    h.router.route_new(msg)  # nobody online: wait the offline grace first
    assert owed == []
    h.router.route(msg.id, Trigger.RECHECK, attempt=0)
    assert owed == [{"type": "owed", "user": "bob"}]


def test_expired_message_is_recorded_expired(h: Harness) -> None:
    msg = h.accept(ttl_s=0.001)
    time.sleep(0.01)
    assert isinstance(h.router.route_new(msg), Expire)
    assert h.store.get(msg.id).state == "expired"  # type: ignore[union-attr]
    assert [m.id for m in h.store.unacked_for("bob")] == [msg.id]  # still replayable


def test_sweep_reroutes_passed_deadlines(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    now = utcnow()
    msg, _ = h.store.accept(
        message_id=uuid.uuid4(), sender="alice", recipient="bob", body={}, client_msg_id=None,
        now=now, ttl_s=60, deadline=now - timedelta(seconds=1),
    )  # stored, but its send task died before routing
    assert sweep_once(h.router, batch=10) == 1
    assert h.frames[-1]["id"] == str(msg.id)
    assert sweep_once(h.router, batch=10) == 0


def test_a_claimed_message_is_not_swept_twice_until_its_lease_runs_out(h: Harness) -> None:
    """Fault: a worker claims stalled messages and stalls (paused, killed) before routing
    them. Must hold: no other sweep takes them during the lease; after it, one does."""
    now = utcnow()
    msg, _ = h.store.accept(
        message_id=uuid.uuid4(), sender="alice", recipient="bob", body={}, client_msg_id=None,
        now=now, ttl_s=60, deadline=now - timedelta(seconds=1),
    )
    claimed = h.store.claim_stalled(10, lease_s=0.5)  # the stalled worker's claim
    assert [m.id for m in claimed] == [msg.id]
    assert sweep_once(h.router, batch=10, lease_s=0.5) == 0  # another worker: not yet
    time.sleep(0.7)
    assert sweep_once(h.router, batch=10, lease_s=0.5) == 1  # the lease ran out: taken


def test_concurrent_claims_take_disjoint_messages(h: Harness) -> None:
    """Two sweeps claiming at once never claim the same message (no lock held between)."""
    import threading

    now = utcnow()
    ids = set()
    for _ in range(40):
        m, _ = h.store.accept(
            message_id=uuid.uuid4(), sender="alice", recipient="bob", body={},
            client_msg_id=None, now=now, ttl_s=60, deadline=now - timedelta(seconds=1))
        ids.add(m.id)
    got: list[list[uuid.UUID]] = [[], []]

    def claim(i: int) -> None:
        for _ in range(10):
            got[i] += [m.id for m in h.store.claim_stalled(3, lease_s=30)]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got[0]) & set(got[1])
    assert set(got[0]) | set(got[1]) == ids


def test_sweep_compares_deadlines_on_the_database_clock(h: Harness) -> None:
    """Fault: the sweeping worker's clock runs 5 s fast. Must hold: a message whose deadline
    has not passed on the database's clock is not re-dispatched."""
    if h.store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs in one process: its clock is the only clock")
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.accept()  # deadline: 2 s from now
    h.router.route_new(msg)
    fast = utcnow() + timedelta(seconds=5)
    assert h.store.claim_stalled(10, lease_s=5, now=fast) == []
    assert [f["attempt"] for f in h.frames] == [1]


def test_aligned_clock_follows_the_database_clock(h: Harness) -> None:
    if h.store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs in one process: its clock is the only clock")
    from delivery.clock import DatabaseAlignedClock
    from delivery.routing.sweep import calibrate

    skewed = DatabaseAlignedClock(base=lambda: time.time() + 5.0)  # a clock 5 s fast
    calibrate(h.router, skewed)
    assert abs(skewed() - h.store.db_time().timestamp()) < 0.5


def _request(recipient: str = "bob", cmid: str | None = "m1") -> SendRequest:
    return validate_send("alice", recipient, {"t": "hi"}, cmid, max_body_bytes=1000,
                         default_ttl_s=60)


def test_accept_and_route_claims_the_first_attempt_in_the_insert(h: Harness) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    msg = h.router.accept_and_route(_request())
    assert msg.state == "dispatched" and msg.attempts == 1
    assert [(a.attempt, a.conn) for a in h.store.attempts_of(msg.id)] == [(1, "c1")]
    assert [f["conns"] for f in h.frames] == [["c1"]]
    again = h.router.accept_and_route(_request())  # duplicate send: stored and sent once
    assert again.id == msg.id and len(h.frames) == 1


def test_accept_and_route_offline_stores_then_waits(h: Harness) -> None:
    msg = h.router.accept_and_route(_request(cmid=None))
    stored = h.store.get(msg.id)
    assert stored is not None and stored.state == "accepted" and stored.attempts == 0
    assert [(m, a) for m, a, _ in h.rechecks] == [(str(msg.id), 0)]


def test_a_durable_send_stored_by_the_caller_is_routed_by_the_task(h: Harness) -> None:
    from delivery.api import send_message

    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})

    class NoBroker:
        sent: list[dict[str, Any]] = []

        def send_task(self, name: str, kwargs: dict[str, Any], **_: Any) -> None:
            self.sent.append(kwargs)

    broker = NoBroker()
    msg_id = send_message("alice", "bob", {"t": "hi"}, client_msg_id="d-1",
                          store=h.store, app=broker)  # type: ignore[arg-type]
    stored = h.store.get(uuid.UUID(msg_id))
    assert stored is not None and stored.state == "accepted"  # durable before the broker
    kwargs = broker.sent[0]
    assert kwargs["stored"] is True
    req = validate_send(kwargs["sender"], kwargs["recipient"], kwargs["body"],
                        kwargs["client_msg_id"], max_body_bytes=1000, default_ttl_s=60)
    h.router.route_stored(req)  # what the delivery.send task does with it
    routed = h.store.get(uuid.UUID(msg_id))
    assert routed is not None and routed.state == "dispatched" and routed.attempts == 1
    assert [f["id"] for f in h.frames] == [msg_id]
    h.router.route_stored(req)  # a redelivered task: no second attempt
    h.router.accept_and_route(req)  # nor an enqueue-only copy of the same send
    assert len(h.frames) == 1


def test_a_stored_send_for_an_offline_user_is_routed_from_the_row(h: Harness) -> None:
    req = _request()
    now = utcnow()
    h.store.accept_request(req, now=now, deadline=now + timedelta(seconds=2))
    msg = h.router.route_stored(req)
    assert msg is not None and msg.id == req.message_id
    assert h.rechecks and h.rechecks[0][0] == str(req.message_id)  # offline grace: re-check
    assert h.router.route_stored(_request(cmid="never-stored")) is None


def test_recheck_after_a_nack_waits_within_the_reconnect_window_then_pushes(
    h: Harness,
) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    h.net.partition(["gw-a"], ["worker-b"])  # the reconnect never reaches the worker
    h.gw.untrack("bob", "c1")
    msg = h.accept()
    assert isinstance(h.router.route_new(msg), Dispatch)
    h.store.finish_attempts(msg.id, 1, "nacked", now=utcnow(), conn_id="c1")
    assert isinstance(h.router.route(msg.id, Trigger.NACK, attempt=1, nacked=["c1"]), Wait)
    # Within the window (1 s after the send): look again instead of pushing.
    assert isinstance(h.router.route(msg.id, Trigger.RECHECK, attempt=1), Wait)
    h.router.clock = lambda: time.time() + 5  # the window has passed
    assert isinstance(h.router.route(msg.id, Trigger.RECHECK, attempt=1), Push)
    assert h.pushes == [(str(msg.id), 2)]


def test_last_gateway_is_asked_before_a_push_and_its_nack_pushes(h: Harness) -> None:
    """Presence lists nobody, but bob was on gw-a a moment ago: the frame goes to that
    connection (the gateway redirects it to bob's live connection there, or nacks); a nack
    from the last node pushes at once, without waiting a grace or a reconnect window."""
    from delivery.routing.recent import RecentConnections

    recent = RecentConnections()
    h.worker.subscribe(recent.on_diff)
    h.router.last_conn = recent.last
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    h.gw.untrack("bob", "c1")
    h.visible("bob", set())
    deadline = time.monotonic() + 3.0
    while recent.last("bob") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    msg = h.accept()
    decision = h.router.route_new(msg)
    assert isinstance(decision, Dispatch) and [c.conn for c in decision.targets] == ["c1"]
    assert h.frames[-1]["conns"] == ["c1"] and h.pushes == []
    h.store.finish_attempts(msg.id, 1, "nacked", now=utcnow(), conn_id="c1")
    decision = h.router.route(msg.id, Trigger.NACK, attempt=1, nacked=["c1"])
    assert isinstance(decision, Push)
    assert h.pushes == [(str(msg.id), 2)]


# -- batches (the delivery.send batch path) ---------------------------------------------------


def _delivered(published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deliver frames in what was published (a node's batch is one deliver_batch)."""
    out: list[dict[str, Any]] = []
    for f in published:
        out += f["frames"] if f.get("type") == "deliver_batch" else [f]
    return out


def test_a_batch_of_stored_sends_is_claimed_once_and_left_over_sends_go_one_by_one(
    h: Harness,
) -> None:
    h.gw.track("bob", "c1", {})
    h.gw.track("carol", "c2", {})
    h.visible("bob", {"c1"})
    h.visible("carol", {"c2"})
    reqs = [_request("bob", "b1"), _request("carol", "c1"), _request("bob", "b2"),
            _request("dave", "d1")]  # dave is offline
    now = utcnow()
    for r in reqs:
        h.store.accept_request(r, now=now, deadline=now + timedelta(seconds=2))
    h.router.route_stored(reqs[2])  # already routed (a duplicate task got there first)
    before = len(h.frames)
    left = h.router.route_stored_many(reqs)
    assert [r.client_msg_id for r in left] == ["d1", "b2"]  # offline; not claimed here
    assert len(h.frames) == before + 1  # one PUBLISH to gw-a for the batch
    assert [f["id"] for f in _delivered(h.frames[before:])] == [str(reqs[0].message_id),
                                                                str(reqs[1].message_id)]
    for r in reqs[:3]:
        msg = h.store.get(r.message_id)
        assert msg is not None and msg.state == "dispatched" and msg.attempts == 1
        assert [a.attempt for a in h.store.attempts_of(r.message_id)] == [1]
    # A redelivered batch claims nothing twice.
    assert len(h.router.route_stored_many(reqs[:2])) == 2
    assert len(h.frames) == before + 1


def test_a_batch_of_enqueue_only_sends_stores_each_once_duplicates_left_alone(
    h: Harness,
) -> None:
    h.gw.track("bob", "c1", {})
    h.visible("bob", {"c1"})
    h.router.accept_and_route(_request("bob", "dup"))  # stored earlier
    reqs = [_request("bob", "n1"), _request("bob", "dup"), _request("bob", "n2")]
    before = len(h.frames)
    left = h.router.accept_and_route_many(reqs)
    assert [r.client_msg_id for r in left] == ["dup"]  # already stored: handled on its own
    assert len(h.frames) == before + 1  # one PUBLISH to gw-a for the batch
    assert [f["id"] for f in _delivered(h.frames[before:])] == [str(reqs[0].message_id),
                                                                str(reqs[2].message_id)]
    for r in (reqs[0], reqs[2]):
        msg = h.store.get(r.message_id)
        assert msg is not None and msg.state == "dispatched" and msg.attempts == 1
        assert [(a.attempt, a.conn) for a in h.store.attempts_of(r.message_id)] == [(1, "c1")]
    h.router.accept_and_route(left[0])  # the per-message path: a duplicate routes nothing
    assert len(h.frames) == before + 1
