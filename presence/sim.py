"""Deterministic, single-threaded simulation of a presence cluster (virtual time).

    sim = SimCluster(["a", "b", "c"], seed=1)
    sim.replicas["a"].track("alice", "c1")
    sim.run(1.0)                      # advance virtual time by one second
    assert sim.converged()

No thread, no real clock: every frame goes through a virtual
:class:`~presence.transport.memory.MemoryNetwork` whose links can delay, lose,
duplicate, reorder and partition frames, driven by one seeded RNG.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from .config import PresenceConfig
from .replica import Out, Replica
from .state import Presence
from .transport.memory import LinkPolicy, MemoryNetwork, MemoryTransport

__all__ = ["SimCluster"]


class SimCluster:
    def __init__(
        self,
        names: Iterable[str] = (),
        *,
        seed: int = 0,
        config: PresenceConfig | None = None,
        policy: LinkPolicy | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or PresenceConfig()
        self.net = MemoryNetwork(rng=self.rng, virtual=True, default=policy)
        self.now = 0.0
        self.replicas: dict[str, Replica] = {}
        self.transports: dict[str, MemoryTransport] = {}
        self._incarnation = 0
        for name in names:
            self.add(name)

    # -------------------------------------------------------- membership

    def add(self, name: str, *, config: PresenceConfig | None = None) -> Replica:
        self._incarnation += 1
        rep = Replica(
            name,
            self._incarnation,
            config or self.config,
            now=self.now,
            rng=random.Random(self.rng.random()),
        )
        t = self.net.transport(name)

        def on_frame(frame: bytes, r: Replica = rep) -> None:
            self._send(r, r.receive(frame, self.now))

        t.start(on_frame)
        self.replicas[name] = rep
        self.transports[name] = t
        self._send(rep, rep.tick(self.now))
        return rep

    def kill(self, name: str) -> None:
        """Crash: the replica vanishes without a word."""
        self.replicas.pop(name)
        self.transports.pop(name).close()

    def stop(self, name: str) -> None:
        """Graceful shutdown: flush and broadcast a leave."""
        rep = self.replicas.pop(name)
        self._send(rep, rep.leave(), transport=self.transports[name])
        self.transports.pop(name).close()

    def restart(self, name: str) -> Replica:
        if name in self.replicas:
            self.kill(name)
        return self.add(name)

    # ----------------------------------------------------------- driving

    def _send(
        self, rep: Replica, outs: list[Out], transport: MemoryTransport | None = None
    ) -> None:
        t = transport or self.transports.get(rep.name)
        if t is None or (self.replicas.get(rep.name) is not rep and transport is None):
            return
        for o in outs:
            if o.to is None:
                t.broadcast(o.frame)
            else:
                t.send(o.to, o.frame)

    def step(self) -> bool:
        """Advance to the next event (delivery or timer); False if nothing is scheduled."""
        due = self.net.next_due()
        for rep in self.replicas.values():
            d = rep.next_deadline()
            due = d if due is None else min(due, d)
        if due is None:
            return False
        self.now = max(self.now, due)
        self.net.deliver_due(self.now)
        for rep in list(self.replicas.values()):
            if rep.next_deadline() <= self.now and self.replicas.get(rep.name) is rep:
                self._send(rep, rep.tick(self.now))
        return True

    def run(self, duration: float) -> None:
        """Advance virtual time by ``duration`` seconds."""
        self.run_until(self.now + duration)

    def run_until(self, t: float) -> None:
        while True:
            due = self.net.next_due()
            for rep in self.replicas.values():
                d = rep.next_deadline()
                due = d if due is None else min(due, d)
            if due is None or due > t:
                break
            self.step()
        self.now = max(self.now, t)
        self.net.set_now(self.now)

    def tick_all(self) -> None:
        for rep in list(self.replicas.values()):
            self._send(rep, rep.tick(self.now))

    # --------------------------------------------------------- observing

    def view(self, name: str) -> list[tuple[str, str, str]]:
        return sorted((p.key, p.conn, p.node) for p in self.replicas[name].state.list_all())

    def converged(self, names: Iterable[str] | None = None) -> bool:
        names = list(names or self.replicas)
        views = [self.view(n) for n in names]
        return all(v == views[0] for v in views)

    def list(self, name: str, key: str) -> list[Presence]:
        return self.replicas[name].list(key)
