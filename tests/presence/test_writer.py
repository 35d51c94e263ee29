"""The writer replica (a gateway's, sharded): workers learn its entries, it learns nobody's, and
it keeps answering transfer requests however long it has not heard a requester. Sans-IO,
driven in virtual time by a tiny bus (broadcasts reach only listening replicas)."""

from __future__ import annotations

import pytest

from presence import wire
from presence.config import PresenceConfig
from presence.replica import Out, Replica
from presence.writer import WriterReplica

CFG = PresenceConfig(heartbeat_s=0.1, down_s=0.5, purge_s=2.0, batch_s=0.005)


class Bus:
    """Delivers Out frames at once: a broadcast to every *listening* replica but the sender,
    a direct frame to the replica of that name (listening or not)."""

    def __init__(self) -> None:
        self.replicas: dict[str, tuple[Replica, bool]] = {}
        self.now = 0.0
        self.cut: set[str] = set()  # names whose inbound frames are lost

    def add(self, r: Replica, *, listen: bool = True) -> Replica:
        self.replicas[r.name] = (r, listen)
        return r

    def send(self, sender: str, outs: list[Out]) -> None:
        queue = [(sender, o) for o in outs]
        while queue:
            src, o = queue.pop(0)
            if o.to is None:
                targets = [n for n, (_, listen) in self.replicas.items() if listen and n != src]
            else:
                targets = [o.to] if o.to in self.replicas else []
            for name in targets:
                if name in self.cut:
                    continue
                r, _ = self.replicas[name]
                queue += [(name, x) for x in r.receive(o.frame, self.now)]

    def run(self, seconds: float, step: float = 0.01) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            for name, (r, _) in list(self.replicas.items()):
                self.send(name, r.tick(self.now))


def test_workers_learn_a_writers_entries_and_the_writer_learns_nobodys() -> None:
    bus = Bus()
    gw = bus.add(WriterReplica("gw", 1, CFG), listen=False)
    gw2 = bus.add(WriterReplica("gw2", 1, CFG), listen=False)
    w1 = bus.add(Replica("w1", 1, CFG))
    w2 = bus.add(Replica("w2", 1, CFG))
    gw.track("alice", "c1")
    gw2.track("bob", "c2")
    bus.run(0.5)
    for w in (w1, w2):
        assert w.synced
        assert [p.conn for p in w.list("alice")] == ["c1"]
        assert [p.conn for p in w.list("bob")] == ["c2"]
    # a writer holds its own entries only, and keeps no peer
    assert gw.list("bob") == [] and len(gw.state) == 1
    assert gw.peers == {} and gw.synced
    gw.untrack("alice", "c1")
    bus.run(0.2)
    assert w1.list("alice") == [] and w2.list("alice") == []


def test_a_worker_joining_late_gets_the_writers_slice_by_transfer() -> None:
    bus = Bus()
    gw = bus.add(WriterReplica("gw", 1, CFG), listen=False)
    for i in range(50):
        gw.track(f"u{i}", f"c{i}")
    bus.run(0.3)
    late = bus.add(Replica("late", 1, CFG))
    bus.run(0.5)
    assert late.synced
    assert len(late.state) == 50
    assert gw.counters["transfers_served"] >= 1


def test_a_writer_answers_a_requester_it_has_not_heard_for_longer_than_purge() -> None:
    bus = Bus()
    gw = bus.add(WriterReplica("gw", 1, CFG), listen=False)
    w = bus.add(Replica("w", 1, CFG))
    gw.track("alice", "c1")
    bus.run(0.5)
    assert [p.conn for p in w.list("alice")] == ["c1"]
    # the worker misses the writer's deltas for a while (a held subscription) ...
    bus.cut.add("w")
    gw.track("bob", "c2")
    bus.run(CFG.purge_s + 1.0)  # much longer than purge_s: a plain replica would purge w
    bus.cut.discard("w")
    bus.run(2.0)
    # ... and repairs the gap from the writer's answer (it was not refused as a purged sender)
    assert [p.conn for p in w.list("bob")] == ["c2"]
    assert gw.dropped.get("purged_sender", 0) == 0


def test_a_writer_drops_everything_but_requests_addressed_to_it() -> None:
    gw = WriterReplica("gw", 1, CFG)
    other = Replica("w", 1, CFG)
    other.track("x", "c")
    hb = [o.frame for o in other.tick(0.2)]
    assert hb
    for f in hb:
        assert gw.receive(f, 0.2) == []
    assert gw.dropped["writer_ignores"] >= 1
    assert gw.receive(b"\x00garbage", 0.2) == []
    req = wire.encode_request(("w", 1), ("someone-else", 1), 1, {})
    assert gw.receive(req, 0.2) == []
    assert gw.dropped["misdirected"] == 1
    assert len(gw.state) == 0


@pytest.mark.parametrize("n", [1, 3])
def test_writer_entries_reach_every_worker_of_the_shard(n: int) -> None:
    bus = Bus()
    gws = [bus.add(WriterReplica(f"gw{i}", 1, CFG), listen=False) for i in range(n)]
    ws = [bus.add(Replica(f"w{i}", 1, CFG)) for i in range(3)]
    for i, g in enumerate(gws):
        g.track(f"user{i}", f"conn{i}")
    bus.run(0.6)
    for w in ws:
        assert sorted(p.key for p in w.state.list_all()) == [f"user{i}" for i in range(n)]
