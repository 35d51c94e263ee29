"""PresenceNode (threads, real time) over the in-memory network and over Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from presence import MemoryNetwork, PresenceConfig, PresenceNode, redis_transport
from presence.transport.memory import LinkPolicy
from tests.presence.presence_helpers import REDIS_URL, prefix
from workers.devkit.procs import wait_until

pytestmark = pytest.mark.timeout(60)

CFG = PresenceConfig(heartbeat_s=0.05, down_s=0.3, purge_s=1.0, batch_s=0.005)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    return wait_until(cond, timeout, interval=0.002)


@pytest.fixture
def nodes() -> Iterator[list[PresenceNode]]:
    made: list[PresenceNode] = []
    yield made
    for n in made:
        n.stop(graceful=False)


def test_embedded_nodes_replicate_and_list(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork()
    a, b = PresenceNode("a", net, CFG), PresenceNode("b", net, CFG)
    nodes += [a, b]
    a.start()
    b.start()
    assert a.wait_synced(2) and b.wait_synced(2)
    a.track("alice", "c1", {"device": "ios"})
    assert wait_for(lambda: len(b.list("alice")) == 1)
    p = b.list("alice")[0]
    assert (p.key, p.conn, p.node, dict(p.meta)) == ("alice", "c1", "a", {"device": "ios"})
    a.untrack_conn("c1")
    assert wait_for(lambda: b.list("alice") == [])
    s = b.stats()
    assert s["synced"] and s["entries"] == 0 and s["replicas_up"]


def test_track_is_broadcast_within_the_batch_window(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork()
    a, b = PresenceNode("a", net, CFG), PresenceNode("b", net, CFG)
    nodes += [a, b]
    a.start()
    b.start()
    a.wait_synced(2)
    lat = []
    for i in range(20):
        t = time.perf_counter()
        a.track(f"u{i}", "c")
        assert wait_for(lambda i=i: bool(b.list(f"u{i}")), 1.0)
        lat.append(time.perf_counter() - t)
    assert sorted(lat)[10] < 0.05


def test_graceful_stop_purges_at_once(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork()
    a, b = PresenceNode("a", net, CFG), PresenceNode("b", net, CFG)
    nodes.append(b)
    a.start()
    b.start()
    a.track("alice", "c1")
    assert wait_for(lambda: bool(b.list("alice")))
    a.stop(graceful=True)
    assert wait_for(lambda: b.list("alice") == [], 0.1)


def test_crash_hides_after_down_and_purges_after_purge(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork()
    a, b = PresenceNode("a", net, CFG), PresenceNode("b", net, CFG)
    nodes.append(b)
    a.start()
    b.start()
    a.track("alice", "c1")
    assert wait_for(lambda: bool(b.list("alice")))
    a.stop(graceful=False)
    t = time.monotonic()
    assert wait_for(lambda: b.list("alice") == [], 2)
    assert time.monotonic() - t >= CFG.down_s * 0.8
    assert wait_for(lambda: b.stats()["entries"] == 0, 3)


def test_list_is_thread_safe_under_concurrent_writes(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork(default=LinkPolicy(jitter=0.002))
    a, b = PresenceNode("a", net, CFG), PresenceNode("b", net, CFG)
    nodes += [a, b]
    a.start()
    b.start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in b.list("hot"):
                    assert p.key == "hot"
                b.list_all()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(300):
        a.track("hot", f"c{i % 7}", {"i": i})
        if i % 3 == 0:
            a.untrack("hot", f"c{(i + 1) % 7}")
    stop.set()
    for t in readers:
        t.join(5)
    assert not errors
    assert wait_for(
        lambda: sorted(p.conn for p in b.list("hot")) == sorted(p.conn for p in a.list("hot"))
    )


def test_subscriber_exceptions_are_counted_not_fatal(nodes: list[PresenceNode]) -> None:
    net = MemoryNetwork()
    a = PresenceNode("a", net, CFG)
    nodes.append(a)

    def boom(j: object, lv: object) -> None:
        raise RuntimeError("boom")

    a.subscribe(boom)
    a.start()
    a.track("k", "c")
    assert wait_for(lambda: a.stats()["callback_errors"] >= 1)
    assert a.list("k")


def test_transport_argument_may_be_a_factory_or_a_transport() -> None:
    net = MemoryNetwork()
    n1 = PresenceNode("x", net.transport("x"), CFG)
    n2 = PresenceNode("y", net, CFG)
    assert n1.transport.name == "x" and n2.transport.name == "y"
    with pytest.raises(TypeError):
        PresenceNode("z", 42, CFG)  # type: ignore[arg-type]


def test_redis_nodes_in_process(nodes: list[PresenceNode]) -> None:
    p = prefix()
    made = [PresenceNode(f"r{i}", redis_transport(REDIS_URL, p, f"r{i}"), CFG) for i in range(3)]
    nodes += made
    for n in made:
        n.start()
    assert all(n.wait_synced(3) for n in made)
    made[0].track("bob", "c9")
    assert all(wait_for(lambda n=n: bool(n.list("bob")), 2) for n in made)
    # a foreign publisher on the channel is dropped and counted, nothing breaks
    r = redis.Redis.from_url(REDIS_URL)
    r.publish(f"{p}:presence", b"not a presence frame")
    r.close()
    assert wait_for(lambda: all(n.stats()["dropped_total"] >= 1 for n in made), 2)
    made[0].untrack("bob", "c9")
    assert all(wait_for(lambda n=n: not n.list("bob"), 2) for n in made)


def test_virtual_network_set_now_stamps_sends_between_deliveries() -> None:
    """A driver that sends between deliveries moves the virtual clock first."""
    net = MemoryNetwork(virtual=True, default=LinkPolicy(delay=0.010))
    got: list[tuple[float, bytes]] = []
    a, b = net.transport("a"), net.transport("b")
    a.start(lambda f: None)
    b.start(lambda f: got.append((net.now(), f)))
    net.deliver_due(1.0)
    net.set_now(1.5)  # a timer fired at 1.5: no delivery in between
    a.broadcast(b"x")
    assert net.next_due() == pytest.approx(1.51)  # not 1.01 (due in the past)
    assert net.deliver_due(1.505) == 0
    assert net.deliver_due(1.51) == 1 and got == [(1.51, b"x")]
    net.set_now(1.2)  # the clock never goes back
    assert net.now() == 1.51
    # zero-delay links are due at the current virtual time, not earlier
    net.set_link("a", "b", LinkPolicy())
    net.set_now(2.0)
    a.send("b", b"y")
    assert net.next_due() == 2.0
    # the old way (assigning the attribute) still works
    net.vnow = 3.0
    a.send("b", b"z")
    assert net.pending() == 2 and net.deliver_due(3.0) == 2


def test_set_now_is_refused_in_real_time_mode() -> None:
    with pytest.raises(ValueError, match="virtual"):
        MemoryNetwork().set_now(1.0)
