"""The router of a worker that serves some shards: it routes its shards' messages on their
replicas and hands every other message to its recipient's shard queue without routing it
(real store, real sharded presence on in-memory networks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from delivery.channels import MemoryChannels
from delivery.clock import utcnow
from delivery.routing.policy import Dispatch, Nothing, PolicyConfig, Trigger
from delivery.routing.router import Router
from delivery.routing.sweep import sweep_once
from delivery.store import MessageRecord, Store
from delivery.validation import validate_send
from presence.runtime import MemoryNetwork, PresenceConfig
from presence.sharded import ShardedPresence
from presence.shards import shard_of

FAST = PresenceConfig(heartbeat_s=0.02, down_s=0.5, purge_s=2.0, batch_s=0.001)
S = 4


def user_in(shard: int) -> str:
    return next(u for u in (f"u{i}" for i in range(1000)) if shard_of(u, S) == shard)


@dataclass
class Harness:
    store: Store
    gw: ShardedPresence
    worker: ShardedPresence
    router: Router
    forwarded: list[tuple[str, str, Trigger, int | None, list[str]]] = field(
        default_factory=list)

    def accept(self, recipient: str, deadline_s: float = 2.0) -> MessageRecord:
        now = utcnow()
        msg, _ = self.store.accept(
            message_id=uuid.uuid4(), sender="alice", recipient=recipient, body={"t": "hi"},
            client_msg_id=None, now=now, ttl_s=60, deadline=now + timedelta(seconds=deadline_s))
        return msg


@pytest.fixture
def h(store: Store) -> Iterator[Harness]:
    nets = {s: MemoryNetwork(seed=s) for s in range(S)}
    gw = ShardedPresence.build("gw-a", lambda s, n: nets[s].transport(n, listen=False),
                               shards=S, config=FAST, writer=True)
    worker = ShardedPresence.build("worker-b", lambda s, n: nets[s].transport(n), shards=S,
                                   served=(0, 2), config=FAST)
    gw.start()
    worker.start()
    assert gw.wait_synced(3) and worker.wait_synced(3)
    harness = Harness(store, gw, worker, None)  # type: ignore[arg-type]

    def forward(mid: str, recipient: str, trigger: Trigger, attempt: int | None,
                nacked: Sequence[str]) -> None:
        harness.forwarded.append((mid, recipient, trigger, attempt, list(nacked)))

    channels = MemoryChannels()
    channels.subscribe("gw-a", lambda frame: None)  # the gateway's node channel is live
    harness.router = Router(
        store, worker, channels, PolicyConfig(ack_timeout_s=1.0, offline_grace_s=0.2),
        enqueue_push=lambda m, a: None, schedule_recheck=lambda m, a, d, r: None,
        forward=forward)
    yield harness
    gw.stop()
    worker.stop()


def test_a_served_shards_message_is_routed_here(h: Harness) -> None:
    bob = user_in(2)
    h.gw.track(bob, "c1", {})
    end = time.monotonic() + 3
    while not h.worker.list(bob) and time.monotonic() < end:
        time.sleep(0.005)
    msg = h.accept(bob)
    assert isinstance(h.router.route_new(msg), Dispatch)
    assert h.forwarded == []


def test_another_shards_new_message_is_handed_on_unrouted(h: Harness) -> None:
    carol = user_in(1)
    req = validate_send("alice", carol, {"t": "hi"}, "m-1", None, max_body_bytes=1000,
                        default_ttl_s=60, max_body_depth=8)
    msg = h.router.accept_and_route(req)
    assert msg.state == "accepted" and msg.attempts == 0  # stored, not routed
    assert h.forwarded == [(str(msg.id), carol, Trigger.NEW, None, [])]
    # the stored-first path too
    assert h.router.route_stored(req) is not None
    assert len(h.forwarded) == 2
    # a route task that lands here (an old producer) is handed on with its attempt and nacks
    assert isinstance(h.router.route(msg.id, Trigger.NACK, attempt=0, nacked=["c9"]), Nothing)
    assert h.forwarded[-1] == (str(msg.id), carol, Trigger.NACK, 0, ["c9"])
    assert h.store.get(msg.id).attempts == 0  # type: ignore[union-attr]


def test_the_global_sweep_hands_another_shards_stalled_message_to_its_queue(
        h: Harness) -> None:
    dave = user_in(3)
    msg = h.accept(dave, deadline_s=-1.0)  # already past its deadline
    assert sweep_once(h.router, 10, lease_s=5.0) == 1
    assert h.forwarded == [(str(msg.id), dave, Trigger.DEADLINE, 0, [])]
    stored = h.store.get(msg.id)
    assert stored is not None and stored.attempts == 0
    # the claim's lease holds it meanwhile: a second sweep does not take it again
    assert sweep_once(h.router, 10, lease_s=5.0) == 0


def test_a_group_message_routes_this_workers_shards_and_hands_on_the_others(
        h: Harness) -> None:
    from delivery.conversations.requests import validate_group_send

    here, there = user_in(0), user_in(3)
    h.gw.track(here, "c-here", {})
    end = time.monotonic() + 3
    while not h.worker.list(here) and time.monotonic() < end:
        time.sleep(0.005)
    h.store.create_conversation("team", ["alice", here, there], now=utcnow(), limit=10)
    req = validate_group_send("alice", "team", {"t": "hi"}, "g-1", max_body_bytes=1000,
                              default_ttl_s=60)
    rows = {m.recipient: m for m in h.router.accept_and_route_group(req)}
    assert rows[here].state == "dispatched"  # routed here, on this worker's replica
    assert rows[there].state == "accepted" and rows[there].attempts == 0
    assert [(f[1], f[2]) for f in h.forwarded] == [(there, Trigger.NEW)]
    # a duplicate (the stored-first path) routes nothing twice and hands the other on again
    h.router.route_group_stored(req.message_id)
    assert [(f[1], f[2]) for f in h.forwarded] == [(there, Trigger.NEW)] * 2
